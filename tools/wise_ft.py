"""WiSE-FT, post hoc: interpolate a fine-tuned checkpoint with the pre-trained weights, pick the
mixing coefficient on the ID validation set, test the chosen model on ID + OOD.

    python tools/wise_ft.py CONFIG FT_CKPT [--pretrained CKPT] [--alphas 0,0.25,0.5,0.75,1.0]
                            [--work-dir DIR] [--select-on val] [--metric KEY] [--rule greater]
                            [--skip REGEX ...] [--test-all] [--no-test] [--save-all]
                            [--cfg-options KEY=VALUE ...]

Convention (docs/algorithm.md, section "WiSE-FT"): ``alpha`` is the weight of the PRE-TRAINED model,

    theta(alpha) = alpha * theta0 + (1 - alpha) * theta_ft

so alpha = 0 is the fine-tuned model and alpha = 1 the pre-trained one (the WiSE-FT paper's
alpha is our 1 - alpha).

theta0 is
* by default, the config's own pre-trained initialisation: the model is built and
  ``init_weights()`` loads every ``init_cfg=dict(type='Pretrained')`` (for the embedded
  configs: the DINOv2 backbone). Only the keys under such modules have a pre-trained value;
  the others -- the new linear head -- keep their FINE-TUNED value at every alpha;
* with ``--pretrained CKPT``, that checkpoint, loaded into the model (``pos_embed`` is resized
  as usual). Its keys are interpolated, the model's other keys keep their fine-tuned value. Give
  the LP checkpoint of an LP-FT run to interpolate the head towards the linear probe too.
``--skip REGEX`` keeps more keys at their fine-tuned value. LoRA adapters
(``FullStateLoRAModel``; a plain ``--pretrained`` checkpoint such as the LP loads into it) are
interpolated as the merged weights W0 + s B A are: theta0 has B = 0 and A = A_ft
(``mmdigrap.engine.wise_ft.lora_theta0``).

Evaluation uses mmengine's Runner built from the config (``--cfg-options`` as for training; use
the same ones): ``runner.val()`` on the config's val_dataloader/val_evaluator for every alpha
(the held-out ID split; choose alpha there, never on test/OOD data), then ``runner.test()`` on
the config's test set (ID + OOD with ``IDOODAccuracy``) for the chosen alpha (``--test-all``:
every alpha). Writes to ``--work-dir`` (default: ``<FT_CKPT folder>/wise_ft``):

* ``wise_ft.json`` / ``wise_ft.md``: alpha -> val metric, the choice, the test results;
* ``results.json`` / ``results.md``: IDOODAccuracy's files for the chosen alpha (the same
  files a ``tools/test.py`` run writes), ``results_alpha<a>.*`` for the others (--test-all);
* ``wise_ft_alpha<a>.pth``: the interpolated weights of the chosen alpha (``--save-all``: all).

The config's ``custom_hooks`` are dropped (training-time hooks; an EMA hook would swap the
weights under evaluation) and ``load_from`` / ``resume`` are ignored.
"""
import argparse
import json
import os
import os.path as osp
import re
import time

from mmengine.config import Config, DictAction
from mmengine.runner.checkpoint import (
    _load_checkpoint,
    load_checkpoint,
    save_checkpoint,
    weights_to_cpu,
)

import mmdigrap  # noqa: F401  (registers modules + trusted checkpoint loading)
from mmdigrap.engine.launch import build_runner as _build_runner
from mmdigrap.engine.launch import fix_persistent_workers
from mmdigrap.engine.wise_ft import (
    interpolate_state_dicts,
    lora_theta0,
    parse_alphas,
    pretrained_prefixes,
    select_alpha,
    wise_ft_markdown,
)
from mmdigrap.utils import markdown_table, unwrap_model


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='WiSE-FT: interpolate a fine-tuned checkpoint with '
                                'the pre-trained weights; alpha (weight of the pre-trained '
                                'model) chosen on the val set.')
    p.add_argument('config')
    p.add_argument('checkpoint', help='the fine-tuned checkpoint (theta_ft)')
    p.add_argument('--pretrained', help='theta0 checkpoint (default: the config\'s '
                   'pre-trained init_cfg); e.g. the LP checkpoint of an LP-FT run')
    p.add_argument('--alphas', default='0,0.25,0.5,0.75,1.0',
                   help='weights of the PRE-TRAINED model, comma-separated, in [0, 1]')
    p.add_argument('--work-dir', help='default: <checkpoint folder>/wise_ft')
    p.add_argument('--select-on', default='val', choices=['val'],
                   help='data used to pick alpha (only the held-out val set)')
    p.add_argument('--metric', help='val metric key (default: the first one, e.g. idood/id)')
    p.add_argument('--rule', default='greater', choices=['greater', 'less'])
    p.add_argument('--skip', nargs='*', default=[],
                   help='regexes of keys that keep their fine-tuned value (in addition to '
                   'the keys without a pre-trained value)')
    p.add_argument('--test-all', action='store_true', help='test every alpha, not only the '
                   'chosen one')
    p.add_argument('--no-test', action='store_true', help='only the val search')
    p.add_argument('--save-all', action='store_true', help='save every interpolated model')
    p.add_argument('--tag', default='WiSE-FT', help='name in the results files')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='config overrides, as for tools/train.py (use the training ones)')
    return p.parse_args(argv)


def _clone(state):
    return {k: v.detach().clone() for k, v in state.items()}


def build_runner(args):
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir
    cfg.load_from = None
    cfg.resume = False
    cfg.custom_hooks = []
    cfg.launcher = 'none'
    fix_persistent_workers(cfg, ('val_dataloader', 'test_dataloader'))
    if cfg.get('val_dataloader') is None or cfg.get('val_evaluator') is None:
        raise SystemExit('wise_ft: the config has no val_dataloader/val_evaluator to choose '
                         'alpha on (a held-out ID split; never the test set)')
    return _build_runner(cfg)


def pretrained_state(runner, args):
    """(theta0 restricted to the keys that have a pre-trained value, description)."""
    model = unwrap_model(runner.model)
    if args.pretrained:
        ckpt = _load_checkpoint(args.pretrained, map_location='cpu')
        sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
        sd = {re.sub(r'^module\.', '', k): v for k, v in sd.items()}
        if hasattr(model, 'wrapped_key'):  # FullStateLoRAModel: a plain or its own checkpoint
            sd = {model.wrapped_key(k): v for k, v in sd.items()}
        own = model.state_dict()
        keys = [k for k in sd if k in own]
        if not keys:
            raise SystemExit(f'wise_ft: no key of {args.pretrained} matches the model '
                             f'(e.g. {list(sd)[:3]} vs {list(own)[:3]})')
        # --skip applies before loading: a skipped key of another shape (a head for another
        # number of classes) has no pre-trained value here and keeps its fine-tuned one
        user_skip = [re.compile(p) for p in args.skip]
        keys = [k for k in keys if tuple(sd[k].shape) == tuple(own[k].shape)
                or not any(p.search(k) for p in user_skip)]
        try:
            model.load_state_dict({k: sd[k] for k in keys}, strict=False)  # resizes pos_embed
        except RuntimeError as err:
            if 'size mismatch' not in str(err):
                raise
            state = model.state_dict()  # pos_embed & co. are resized by the model's hooks
            bad = [f'{k!r}: theta0 {tuple(sd[k].shape)} vs fine-tuned {tuple(state[k].shape)}'
                   for k in keys if f'size mismatch for {k}:' in str(err)]
            raise SystemExit(
                f'wise_ft: shape mismatch between --pretrained {args.pretrained} and the model '
                f"for {'; '.join(bad) or err}. Keys with no pre-trained counterpart (e.g. a "
                "head for another number of classes) keep their fine-tuned value with --skip "
                "REGEX, e.g. --skip '^head\\.'; otherwise check that both checkpoints are "
                'of the same architecture') from None
        state = model.state_dict()
        return {k: state[k].detach().clone() for k in keys}, f'--pretrained {args.pretrained}'
    prefixes = pretrained_prefixes(model)
    if not prefixes:
        raise SystemExit('wise_ft: the model has no init_cfg=dict(type="Pretrained") to take '
                         'theta0 from; pass --pretrained CKPT')
    model.init_weights()
    state = model.state_dict()
    keys = [k for k in state if any(k.startswith(p) for p in prefixes)]
    return ({k: state[k].detach().clone() for k in keys},
            f"init_cfg Pretrained of {', '.join(p.rstrip('.') or '<model>' for p in prefixes)}")


def _num_metrics(metrics):
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _set_test_files(runner, prefix, tag):
    for m in runner.test_loop.evaluator.metrics:
        if hasattr(m, 'file_prefix'):
            m.file_prefix = prefix
        if hasattr(m, 'tag'):
            m.tag = tag
        if hasattr(m, 'out_dir'):
            m.out_dir = runner.work_dir


def _summary(runner):
    for m in runner.test_loop.evaluator.metrics:
        if getattr(m, 'last_summary', None) is not None:
            return m.last_summary
    return None


def main(argv=None):
    args = parse_args(argv)
    alphas = parse_alphas(args.alphas)
    if args.work_dir is None:
        args.work_dir = osp.join(osp.dirname(osp.abspath(args.checkpoint)), 'wise_ft')
    os.makedirs(args.work_dir, exist_ok=True)
    t_start = time.time()
    runner = build_runner(args)
    model = unwrap_model(runner.model)
    theta0, source = pretrained_state(runner, args)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True,
                    revise_keys=[(r'^module\.', '')])
    theta_ft = _clone(model.state_dict())
    theta0 = lora_theta0(theta0, theta_ft)  # LoRA adapters: B = 0, A = A_ft (a no-op else)
    no_pre = [k for k in theta_ft if k not in theta0]
    user_skip = [re.compile(p) for p in args.skip]

    def skip(key):
        return key not in theta0 or any(p.search(key) for p in user_skip)

    kept = [k for k in theta_ft if skip(k)]
    runner.logger.info(f'wise_ft: theta0 from {source} ({len(theta0)} tensors); kept at the '
                       f'fine-tuned value: {len(kept)} tensors ({", ".join(kept[:6])}'
                       f'{" ..." if len(kept) > 6 else ""})')

    def weights(alpha):
        return interpolate_state_dicts(theta0, theta_ft, alpha, skip=skip)

    rows = []
    for alpha in alphas:
        model.load_state_dict(weights(alpha))
        rows.append(dict(alpha=alpha, metrics=_num_metrics(runner.val())))
        runner.logger.info(f'wise_ft: alpha={alpha:g} val {rows[-1]["metrics"]}')
    selected = select_alpha(rows, args.metric, args.rule)
    best = selected['alpha']

    tests = {}
    if not args.no_test:
        order = [a for a in alphas if a != best] if args.test_all else []
        for alpha in order + [best]:  # the chosen one last: its files are results.json/md
            model.load_state_dict(weights(alpha))
            chosen = alpha == best
            _set_test_files(runner, 'results' if chosen else f'results_alpha{alpha:g}',
                            f'{args.tag} (alpha={alpha:g}{", val-selected" if chosen else ""})')
            metrics = _num_metrics(runner.test())
            tests[f'{alpha:g}'] = dict(alpha=alpha, metrics=metrics, summary=_summary(runner))

    ckpts = {}
    for alpha in (alphas if args.save_all else [best]):
        path = osp.join(args.work_dir, f'wise_ft_alpha{alpha:g}.pth')
        save_checkpoint(dict(meta=dict(wise_ft=dict(alpha=alpha, theta0=source,
                                                     theta_ft=args.checkpoint,
                                                     selected=alpha == best)),
                             state_dict=weights_to_cpu(weights(alpha))), path)
        ckpts[f'{alpha:g}'] = path

    out = dict(config=args.config, checkpoint=args.checkpoint, theta0=source,
               convention='theta = alpha * theta0 + (1 - alpha) * theta_ft (alpha = weight of '
               'the pre-trained model; 0 = fine-tuned, 1 = pre-trained)',
               kept_finetuned=kept, no_pretrained_value=no_pre, select_on=args.select_on,
               rule=args.rule, cfg_options=args.cfg_options or {}, selected=selected,
               rows=rows, test=tests, checkpoints=ckpts, wall_time_s=time.time() - t_start)
    with open(osp.join(args.work_dir, 'wise_ft.json'), 'w') as f:
        json.dump(out, f, indent=2, default=str)
    md = [f'# WiSE-FT of `{args.checkpoint}`', '',
          f'Config `{args.config}`; theta0 from {source}; {len(kept)} tensors without a '
          'pre-trained value kept fine-tuned.', '',
          wise_ft_markdown(rows, selected, title='alpha chosen on the val set')]
    if tests:
        rows_md = []
        for key in sorted(tests, key=float):
            m = tests[key]['summary'] or {}
            rows_md.append([key + (' (selected)' if float(key) == best else '')] + [
                '-' if m.get(k) is None else f'{m[k]:.2f}'
                for k in ('id', 'ood_mean', 'ood_worst')])
        md += ['**Test (ID + OOD), top-1 %**', '',
               markdown_table(['alpha', 'ID', 'mean OOD', 'worst OOD'], rows_md,
                              align=['r'] * 4)]
    with open(osp.join(args.work_dir, 'wise_ft.md'), 'w') as f:
        f.write('\n'.join(md) + '\n')
    print('\n'.join(md))
    print(f'[wise_ft] alpha={best:g} selected; wrote {args.work_dir}/wise_ft.json, wise_ft.md')
    return out


if __name__ == '__main__':
    main()
