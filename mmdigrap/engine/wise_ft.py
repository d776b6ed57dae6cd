"""WiSE-FT (Wortsman et al., CVPR 2022): weight-space ensembles of the pre-trained and the
fine-tuned model (``docs/algorithm.md``, section "WiSE-FT").

**Convention (the DiGraP authors' code):** ``alpha`` is the weight of the
**pre-trained** model::

    theta(alpha) = alpha * theta0 + (1 - alpha) * theta_ft

so ``alpha = 0`` is the fine-tuned model, ``alpha = 1`` the pre-trained one. (The WiSE-FT
paper writes the same mixture with the weight on the fine-tuned model; its ``alpha`` is our
``1 - alpha``.) The mixing coefficient is chosen on held-out ID validation data, never on the
test or OOD sets.

Tensors with no pre-trained value -- typically a newly initialised classification head -- are
*skipped*: they keep their fine-tuned value (interpolating towards a random initialisation
would only shrink the head). With an LP-FT run, the linear-probed head *is* a meaningful
theta0 for the head (as CLIP's zero-shot head is in the paper); then do not skip it.

Three pieces:

* :func:`interpolate_state_dicts` -- the interpolation itself (pure PyTorch);
* :func:`lora_theta0` -- the pre-trained value of LoRA adapters (B = 0, A = A_ft: WiSE-FT of
  the merged weights);
* :func:`pretrained_prefixes` -- which state-dict keys a model's ``init_cfg=dict(type=
  'Pretrained')`` covers (used by ``tools/wise_ft.py`` to know what has a pre-trained value);
* :class:`WiSEFTHook` (``HOOKS``) -- does WiSE-FT at the end of a training run: snapshots
  theta0 in ``before_train``, evaluates every ``alpha`` with the run's ``val_loop`` in
  ``after_train``, keeps the best one and saves ``wise_ft_best.pth``.

Post hoc, on a finished run: ``python tools/wise_ft.py CONFIG FT_CKPT --alphas 0,0.25,0.5,0.75,1``.
"""
import json
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
from torch import Tensor

from ..utils import markdown_table, unwrap_model

__all__ = ['interpolate_state_dicts', 'lora_theta0', 'pretrained_prefixes', 'select_alpha',
           'parse_alphas', 'wise_ft_markdown', 'WiSEFTHook']

SkipSpec = Union[None, str, Iterable[str], Callable[[str], bool]]


def _skip_fn(skip: SkipSpec) -> Callable[[str], bool]:
    """A predicate ``key -> bool`` from regexes (``re.search``) or a callable."""
    if skip is None:
        return lambda key: False
    if callable(skip):
        return skip
    if isinstance(skip, str):
        skip = [skip]
    patterns = [re.compile(p) for p in skip]
    return lambda key: any(p.search(key) for p in patterns)


def interpolate_state_dicts(theta0: Mapping[str, Tensor], theta_ft: Mapping[str, Tensor],
                            alpha: float, skip: SkipSpec = None) -> 'OrderedDict[str, Tensor]':
    """WiSE-FT interpolation ``alpha * theta0 + (1 - alpha) * theta_ft``.

    Source: ``docs/algorithm.md``, section "WiSE-FT" (the weight is on the pre-trained model).

    ``alpha`` weighs the **pre-trained** weights: 0 returns the fine-tuned model, 1 the
    pre-trained one (for the keys that are not skipped). Exact at both ends (``torch.lerp``).

    Args:
        theta0: pre-trained state dict (``{name: tensor}``). May lack the skipped keys.
        theta_ft: fine-tuned state dict. It defines the keys, order, dtype and device of the
            result.
        alpha: weight of ``theta0``, in [0, 1].
        skip: keys that keep their fine-tuned value, e.g. a new head with no pre-trained
            value: regexes matched with ``re.search`` (a string or a list), or a callable
            ``key -> bool``. None skips nothing.

    Non-floating tensors (integer buffers such as BatchNorm's ``num_batches_tracked``) cannot
    be interpolated: they keep the fine-tuned value. Floating tensors are mixed in at least
    float32 and cast back to ``theta_ft``'s dtype; ``theta0``'s tensor is moved to
    ``theta_ft``'s device. The inputs are not modified.

    Returns:
        A new ``OrderedDict`` with ``theta_ft``'s keys.

    Raises:
        ValueError: ``alpha`` outside [0, 1] (or not a number), or a tensor whose shape differs
            between the two state dicts.
        KeyError: a key of ``theta_ft`` that is not skipped is missing from ``theta0``, or
            ``theta0`` has keys that ``theta_ft`` lacks (the message lists them).
    """
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f'WiSE-FT: alpha must be a number in [0, 1], got {alpha!r}') from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'WiSE-FT: alpha must lie in [0, 1] (the weight of the pre-trained '
                         f'model; 0 = fine-tuned, 1 = pre-trained), got {alpha}')
    is_skipped = _skip_fn(skip)
    skipped = {k for k in theta_ft if is_skipped(k)}
    missing = [k for k in theta_ft if k not in theta0 and k not in skipped]
    unexpected = [k for k in theta0 if k not in theta_ft]
    if missing or unexpected:
        def _short(keys):
            return ', '.join(keys[:8]) + (f' ... ({len(keys)} keys)' if len(keys) > 8 else '')
        msg = ['WiSE-FT: the pre-trained and fine-tuned state dicts do not match.']
        if missing:
            msg.append(f'Missing from theta0 (and not skipped): {_short(missing)}. If these '
                       'have no pre-trained value (a new head), skip them, e.g. '
                       "skip=[r'^head\\.'].")
        if unexpected:
            msg.append(f'In theta0 but not in the fine-tuned model: {_short(unexpected)}. Are '
                       'both from the same architecture (and the same key prefix)?')
        raise KeyError(' '.join(msg))
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    for key, ft in theta_ft.items():
        if key in skipped or not torch.is_floating_point(ft):
            out[key] = ft.detach().clone()
            continue
        t0 = theta0[key]
        if tuple(t0.shape) != tuple(ft.shape):
            raise ValueError(f'WiSE-FT: shape mismatch for {key!r}: theta0 {tuple(t0.shape)} vs '
                             f'fine-tuned {tuple(ft.shape)}')
        wide = torch.float64 if ft.dtype == torch.float64 else torch.float32
        mixed = torch.lerp(ft.detach().to(wide), t0.detach().to(device=ft.device, dtype=wide),
                           alpha)
        out[key] = mixed.to(ft.dtype)
    return out


def lora_theta0(theta0: Mapping[str, Tensor],
                theta_ft: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """theta0 with the pre-trained value of every LoRA adapter pair of ``theta_ft``.

    A LoRA layer computes ``W0 + s * B A`` (``lora_up`` = B, ``lora_down`` = A; mmpretrain's
    ``LoRALinear``); the pre-trained model is B = 0. Interpolating A and B separately is not
    WiSE-FT (B A is bilinear: at alpha = 0.5 it gives a quarter of the update, not half, when
    A moved from a random init). With theta0's ``lora_up`` = 0 and ``lora_down`` = A_ft,
    ``theta(alpha)`` has B = (1 - alpha) B_ft, A = A_ft, i.e. the merged weight
    ``W0 + (1 - alpha) s B_ft A_ft = alpha W0 + (1 - alpha) (W0 + s B_ft A_ft)``: exactly the
    interpolation of the merged weights. Keys without ``.lora_up.`` / ``.lora_down.`` are
    unchanged; a state dict without adapters gives a copy of ``theta0``.

    Args:
        theta0: the pre-trained state dict (``{name: tensor}``), as for
            :func:`interpolate_state_dicts`.
        theta_ft: the fine-tuned one (its adapter tensors define the result's).

    Returns:
        A new ``OrderedDict``.
    """
    out = OrderedDict(theta0)
    for key, ft in theta_ft.items():
        if '.lora_up.' in key:
            out[key] = torch.zeros_like(ft)
        elif '.lora_down.' in key:
            out[key] = ft.detach().clone()
    return out


def pretrained_prefixes(model: torch.nn.Module) -> List[str]:
    """State-dict key prefixes covered by an ``init_cfg=dict(type='Pretrained', ...)``.

    ``''`` when the model itself has one (every key), else e.g. ``['backbone.']`` for an
    mmpretrain classifier whose backbone is initialised from a checkpoint. The weights under
    these prefixes have a pre-trained value after ``init_weights()``; the others (a new head)
    do not.
    """
    prefixes = []
    for name, module in model.named_modules():
        cfgs = getattr(module, 'init_cfg', None)
        if isinstance(cfgs, dict):
            cfgs = [cfgs]
        if not isinstance(cfgs, (list, tuple)):
            continue
        for c in cfgs:
            if isinstance(c, dict) and (c.get('type') == 'Pretrained'
                                        or getattr(c.get('type'), '__name__', '') ==
                                        'PretrainedInit') and c.get('checkpoint'):
                prefixes.append(f'{name}.' if name else '')
                break
    # drop prefixes nested in another one
    return sorted(p for p in prefixes
                  if not any(q != p and p.startswith(q) for q in prefixes))


def parse_alphas(alphas: Union[str, Sequence[float]]) -> List[float]:
    """``'0,0.25,0.5'`` or a sequence -> a list of floats in [0, 1] (duplicates refused)."""
    if isinstance(alphas, str):
        alphas = [a for a in alphas.replace(' ', '').split(',') if a]
    try:
        out = [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise ValueError(f'WiSE-FT: alphas must be numbers, got {alphas!r}') from None
    if not out:
        raise ValueError('WiSE-FT: give at least one alpha')
    bad = [a for a in out if not 0.0 <= a <= 1.0]
    if bad:
        raise ValueError(f'WiSE-FT: alphas must lie in [0, 1] (weight of the pre-trained '
                         f'model), got {bad}')
    if len(set(out)) != len(out):
        raise ValueError(f'WiSE-FT: duplicate alphas in {out}')
    return out


def select_alpha(rows: Sequence[Mapping], metric: Optional[str] = None,
                 rule: str = 'greater') -> dict:
    """The row of ``rows`` (``dict(alpha=..., metrics={...})``) with the best ``metric``.

    ``metric`` None takes the first key of the first row's metrics. ``rule`` is ``'greater'``
    (accuracy) or ``'less'`` (a loss / error). Ties go to the earlier row.

    Returns:
        ``dict(alpha, metric, value, index)``.

    Raises:
        ValueError: no rows, a bad rule, or a row without the metric.
    """
    if rule not in ('greater', 'less'):
        raise ValueError(f"WiSE-FT: rule must be 'greater' or 'less', got {rule!r}")
    if not rows:
        raise ValueError('WiSE-FT: nothing to select from')
    if metric is None:
        if not rows[0]['metrics']:
            raise ValueError('WiSE-FT: the validation returned no metrics')
        metric = next(iter(rows[0]['metrics']))
    best = None
    for i, row in enumerate(rows):
        if metric not in row['metrics']:
            raise ValueError(f"WiSE-FT: metric {metric!r} not in the validation results "
                             f"{sorted(row['metrics'])}")
        v = float(row['metrics'][metric])
        if best is None or (v > best[1] if rule == 'greater' else v < best[1]):
            best = (i, v)
    return dict(alpha=float(rows[best[0]]['alpha']), metric=metric, value=best[1],
                index=best[0])


def wise_ft_markdown(rows: Sequence[Mapping], selected: Mapping,
                     title: Optional[str] = None) -> str:
    """A markdown table ``alpha -> validation metric``, the selected row marked in bold.

    Args:
        rows: ``dict(alpha, metrics={...})`` per alpha, as :func:`select_alpha` takes them.
        selected: the result of :func:`select_alpha` (``metric`` and ``index`` are used).
        title: optional bold line above the table.
    """
    metric = selected['metric']
    cells = [[f"{float(row['alpha']):g}",
              f"{float(row['metrics'][metric]):.4g}"
              + (' **(selected)**' if i == selected['index'] else '')]
             for i, row in enumerate(rows)]
    lines = [f'**{title}**', ''] if title else []
    lines += [markdown_table(['alpha (weight of theta0)', f'val {metric}'], cells,
                             align=['r', 'r']), '',
              'theta(alpha) = alpha * theta0 + (1 - alpha) * theta_ft: alpha = 0 is the '
              'fine-tuned model, 1 the pre-trained one.']
    return '\n'.join(lines) + '\n'


def _cpu_clone(state: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    return OrderedDict((k, v.detach().to('cpu', copy=True)) for k, v in state.items())


@HOOKS.register_module()
class WiSEFTHook(Hook):
    """WiSE-FT at the end of training, alpha chosen on the validation set.

    * ``before_train`` (after ``load_from`` / ``init_cfg`` weights are loaded): snapshots
      theta0 = the model's state dict (on the CPU). A *resumed* run cannot snapshot theta0 any
      more, so a fresh run also writes it to ``<work_dir>/wise_ft_theta0.pth`` (``save_theta0``)
      and records the path in every checkpoint's ``meta``; ``resume`` reads it back.
    * ``after_train``: for every ``alpha`` loads ``alpha * theta0 + (1 - alpha) * theta_ft``
      (keys matching ``skip`` keep the fine-tuned value) and runs the run's ``val_loop``
      (``val_dataloader`` + ``val_evaluator``; the usual ``after_val_epoch`` logging happens),
      picks the best ``metric``, logs the table, writes ``wise_ft.json`` and (``save_best``)
      ``wise_ft_best.pth`` (weights + the table in ``meta``) in ``work_dir``, and leaves the
      best weights in the model (``apply_best``; else the fine-tuned ones), so a following
      ``runner.test()`` in the same process tests the WiSE-FT model. The epoch/iter
      checkpoints saved during training keep the fine-tuned weights.

    Args:
        alphas: weights of the pre-trained model to try (0 = fine-tuned, 1 = pre-trained).
        select_on: the data used to pick alpha; only ``'val'`` (the run's val_loop) --
            selecting on test/OOD data would leak.
        metric: the validation metric key (e.g. ``'idood/id'``, ``'accuracy/top1'``); None =
            the first key the evaluator returns.
        rule: ``'greater'`` or ``'less'`` is better.
        skip: regexes (``re.search``) of state-dict keys with no pre-trained value, kept
            fine-tuned. Default: ``'^head\\.'`` (mmpretrain's new classification head); use
            ``()`` after LP (LP-FT), where the LP head is theta0's head.
        apply_best: leave the selected weights in the model after training.
        save_best: save ``wise_ft_best.pth``.
        save_theta0: write theta0 to the work dir so that ``resume`` keeps working.

    Raises:
        ValueError: bad ``alphas`` / ``select_on`` / ``rule``.
        RuntimeError: at ``after_train`` when the run has no val loop; at ``before_train`` of a
            resumed run whose theta0 file is missing.
    """

    priority = 'LOW'  # after_train: after the NORMAL hooks (e.g. EMA) are done

    def __init__(self,
                 alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                 select_on: str = 'val',
                 metric: Optional[str] = None,
                 rule: str = 'greater',
                 skip: SkipSpec = (r'^head\.', ),
                 apply_best: bool = True,
                 save_best: bool = True,
                 save_theta0: bool = True,
                 filename: str = 'wise_ft_best.pth'):
        self.alphas = parse_alphas(alphas)
        if select_on != 'val':
            raise ValueError(f"WiSEFTHook: select_on must be 'val' (the run's held-out "
                             f"val_dataloader), got {select_on!r}; choosing alpha on test or "
                             'OOD data would leak them into the model selection')
        if rule not in ('greater', 'less'):
            raise ValueError(f"WiSEFTHook: rule must be 'greater' or 'less', got {rule!r}")
        self.select_on = select_on
        self.metric = metric
        self.rule = rule
        self.skip = skip
        self.apply_best = apply_best
        self.save_best = save_best
        self.save_theta0 = save_theta0
        self.filename = filename
        self.theta0: Optional[Dict[str, Tensor]] = None
        self.theta0_file: Optional[str] = None
        self._resumed_theta0: Optional[str] = None
        self.results: Optional[dict] = None

    # ------------------------------------------------------------------ theta0 bookkeeping
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False):  # not for load_from (weights only)
            self._resumed_theta0 = checkpoint.get('meta', {}).get('wise_ft_theta0')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.theta0_file:
            checkpoint.setdefault('meta', {})['wise_ft_theta0'] = self.theta0_file

    def before_train(self, runner) -> None:
        if self._resumed_theta0 is not None or (getattr(runner, '_resume', False)
                                                and runner.iter > 0):
            path = self._resumed_theta0
            if not path or not osp.isfile(path):
                raise RuntimeError(
                    f'WiSEFTHook: this run was resumed, so theta0 (the pre-trained weights) '
                    f'cannot be snapshotted now, and its saved copy {path!r} is missing. Start '
                    'the run from scratch, or drop WiSEFTHook and run tools/wise_ft.py on the '
                    'final checkpoint.')
            self.theta0 = torch.load(path, map_location='cpu', weights_only=True)
            self.theta0_file = path
            runner.logger.info(f'WiSEFTHook: theta0 restored from {path}')
            return
        self.theta0 = _cpu_clone(unwrap_model(runner.model).state_dict())
        if self.save_theta0:
            self.theta0_file = osp.join(runner.work_dir, 'wise_ft_theta0.pth')
            if is_main_process():
                torch.save(self.theta0, self.theta0_file)
        runner.logger.info(f'WiSEFTHook: theta0 snapshotted ({len(self.theta0)} tensors); '
                           f'alphas {self.alphas} will be evaluated on the val set after '
                           'training')

    # ------------------------------------------------------------------------- the search
    def after_train(self, runner) -> None:
        if self.theta0 is None:
            raise RuntimeError('WiSEFTHook: no theta0 (before_train did not run)')
        val_loop = runner.val_loop
        if val_loop is None:
            raise RuntimeError(
                'WiSEFTHook selects alpha on the validation set, but the run has no val loop: '
                'give it `val_dataloader`, `val_evaluator` and `val_cfg` (a held-out split, '
                'not the test set).')
        model = unwrap_model(runner.model)
        theta_ft = _cpu_clone(model.state_dict())
        self.theta0 = lora_theta0(self.theta0, theta_ft)  # LoRA: B = 0, A = A_ft (a no-op else)
        rows = []
        for alpha in self.alphas:
            model.load_state_dict(
                interpolate_state_dicts(self.theta0, theta_ft, alpha, skip=self.skip))
            metrics = val_loop.run()
            rows.append(dict(alpha=alpha, metrics={k: float(v) for k, v in metrics.items()
                                                  if isinstance(v, (int, float))}))
            runner.logger.info(f'WiSEFTHook: alpha={alpha:g}: {rows[-1]["metrics"]}')
        selected = select_alpha(rows, self.metric, self.rule)
        best = interpolate_state_dicts(self.theta0, theta_ft, selected['alpha'], skip=self.skip)
        model.load_state_dict(best if self.apply_best else theta_ft)
        table = wise_ft_markdown(rows, selected, title='WiSE-FT: alpha on the val set')
        runner.logger.info('\n' + table)
        runner.message_hub.update_info('wise_ft_alpha', selected['alpha'])
        self.results = dict(convention='theta = alpha * theta0 + (1 - alpha) * theta_ft',
                            select_on=self.select_on, rule=self.rule, selected=selected,
                            rows=rows, applied=self.apply_best)
        if is_main_process():
            os.makedirs(runner.work_dir, exist_ok=True)
            if self.save_best:
                path = osp.join(runner.work_dir, self.filename)
                save_checkpoint(dict(meta=dict(wise_ft=self.results, epoch=runner.epoch,
                                               iter=runner.iter),
                                     state_dict=weights_to_cpu(best)), path)
                self.results['checkpoint'] = path
                runner.logger.info(f"WiSEFTHook: alpha={selected['alpha']:g} selected "
                                   f"(val {selected['metric']}={selected['value']:.4g}); "
                                   f'weights saved to {path}')
            with open(osp.join(runner.work_dir, 'wise_ft.json'), 'w') as f:
                json.dump(self.results, f, indent=2)
