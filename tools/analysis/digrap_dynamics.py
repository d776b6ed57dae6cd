"""DiGraP's dynamics per layer over training: omega, conflict, h_t, distance, radial update.

    # train probes through tools/train.py (one run per variant and seed), then analyse them
    python tools/analysis/digrap_dynamics.py probe CONFIG --work-dir work_dirs/dynamics \
        --variant ft:omega_max=0 --variant digrap: \
        --variant update_w1:project=update,omega_init=1,trainable=False --seeds 0 1 --jobs 2
    # analyse finished runs (any run trained with RobustFTHook(log_interval=1) and
    # digrap=dict(track_update=True)); LABEL=WORK_DIR, seeds as LABEL@SEED=WORK_DIR
    python tools/analysis/digrap_dynamics.py analyse ft=WD1 digrap=WD2 --out docs/analysis
    # the regime table on the paired-difference scale and the decision rule of issue 10
    python tools/analysis/digrap_dynamics.py decide RESULTS.json [--task digits] [--md OUT.md]
    # training-iteration time of each variant vs FT, interleaved (robust to background load)
    python tools/analysis/digrap_dynamics.py steptime CONFIG --variant ft:omega_max=0 ...

What it reads: the per-layer scalars that ``RobustFTHook`` writes to the visualizer
(``WORK_DIR/<timestamp>/vis_data/scalars.json``): ``omega/<name>``, ``dist/<name>`` (before the
step), ``dot/<name>`` = <g_t, theta - theta0>, ``hgrad/<name>`` = h_t and, with
``track_update=True``, ``grad_cos``, ``proj_grad_cos``, ``base_update_cos``, ``update_cos``,
``radial_update`` (``docs/algorithm.md`` section 14.3). The probe runs every variant as
``DiGraPOptimWrapper`` on CONFIG (a DiGraP config; ``ft`` = ``omega_max=0``, which is the base
optimizer exactly, so FT gets the same statistics) with ``track_update=True`` and a log every
step.

What it writes (``--out``): ``digrap_dynamics.json`` (per run: per-layer summaries and the test
of the sign rule of section 14.4: sign(h_t) = sign(s_{t-1} s_t)), and the plots
``digrap_dynamics_omega.png`` (omega per layer), ``digrap_dynamics_signs.png`` (conflict rate,
share of h_t > 0 and of conflict flips, rolling), ``digrap_dynamics_dist.png``
(||theta - theta0|| per layer and in total) and ``digrap_dynamics_radial.png`` (how far the
update still grows the distance: cos(-g, d), cos(-g~, d), cos(update, d)).
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
KEYS = ('omega', 'dist', 'dot', 'hgrad', 'grad_cos', 'proj_grad_cos', 'base_update_cos',
        'update_cos', 'radial_update')


# ----------------------------------------------------------------------------- reading
def load_run(work_dir):
    """{key: {layer: np.array over steps 1..T (NaN where absent)}} and the step axis.

    Raises:
        FileNotFoundError: no per-layer scalars under ``work_dir``.
    """
    rows = defaultdict(dict)
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                for k, v in row.items():
                    key, _, layer = k.partition('/')
                    if layer and key in KEYS:
                        rows[(key, layer)][row['step']] = v
    if not rows:
        raise FileNotFoundError(
            f'no per-layer DiGraP scalars under {work_dir}/*/vis_data/scalars.json: train with '
            "custom_hooks=[dict(type='RobustFTHook', log_interval=1)] and a LocalVisBackend")
    steps = np.array(sorted({s for v in rows.values() for s in v}))
    out = defaultdict(dict)
    for (key, layer), vals in rows.items():
        out[key][layer] = np.array([vals.get(s, np.nan) for s in steps], dtype=float)
    return dict(out), steps


def rolling(x, w=21):
    """Centred moving average ignoring NaN (window ``w`` steps)."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    k = np.ones(w)
    num = np.convolve(np.where(ok, x, 0.0), k, 'same')
    den = np.convolve(ok.astype(float), k, 'same')
    with np.errstate(invalid='ignore', divide='ignore'):
        return num / den


# ---------------------------------------------------------------------------- analysis
def sign_rule(run):
    """Test of section 14.4 per layer: sign(h_t) vs sign(s_{t-1} s_t), and how omega moves
    after a flip (s_{t-1} s_t < 0) vs after a persisting conflict (s_{t-1}, s_t < 0)."""
    out = {}
    for layer, h in run.get('hgrad', {}).items():
        s = run['dot'][layer]
        w = run['omega'].get(layer)
        pred = np.sign(s[:-1] * s[1:])  # for step t = 2..T
        hs = np.sign(h[1:])
        ok = np.isfinite(hs) & (pred != 0) & (hs != 0)
        flip = (s[:-1] * s[1:] < 0)
        persist = (s[:-1] < 0) & (s[1:] < 0)
        rec = dict(agree=float(np.mean(hs[ok] == pred[ok])) if ok.any() else None,
                   n=int(ok.sum()), flip_rate=float(np.mean(flip)),
                   conflict_rate=float(np.mean(s < 0)),
                   h_pos_rate=float(np.mean(h[np.isfinite(h)] > 0)) if np.isfinite(h).any()
                   else None)
        if w is not None:
            dw = w[1:] - w[:-1]  # omega of step t minus step t-1: the hyper-step of step t
            rec['domega_after_flip'] = float(np.nanmean(dw[flip])) if flip.any() else None
            rec['domega_after_persist'] = (float(np.nanmean(dw[persist])) if persist.any()
                                           else None)
            rec['omega_mean'] = float(np.nanmean(w))
            rec['omega_last'] = float(w[-1])
        out[layer] = rec
    return out


def summarise(run):
    """Per-layer and overall summary numbers of one run."""
    out = dict(layers={})
    for layer, dist in run['dist'].items():
        rec = dict(dist_last=float(dist[-1]))
        for key in ('grad_cos', 'proj_grad_cos', 'update_cos', 'radial_update'):
            vals = run.get(key, {}).get(layer)
            if vals is not None:
                s = run['dot'][layer]
                conflict = s < 0
                rec[f'{key}_mean'] = float(np.nanmean(vals))
                rec[f'{key}_conflict_mean'] = (float(np.nanmean(vals[conflict]))
                                               if conflict.any() else None)
        out['layers'][layer] = rec
    total = np.sqrt(np.nansum([d ** 2 for d in run['dist'].values()], 0))
    out['dist_total_last'] = float(total[-1])
    if 'update_cos' in run:
        out['update_cos_mean'] = float(np.nanmean([np.nanmean(v)
                                                  for v in run['update_cos'].values()]))
        out['radial_update_sum'] = float(np.nansum([np.nansum(v)
                                                   for v in run['radial_update'].values()]))
    out['sign_rule'] = sign_rule(run)
    agrees = [r['agree'] for r in out['sign_rule'].values() if r['agree'] is not None]
    if agrees:
        out['sign_rule_agree_mean'] = float(np.mean(agrees))
    return out


# ------------------------------------------------------------------------------- plots
def _grid(n, height=3.2, rows_per=1, sharey=True):
    """Figure with ``n`` panels (at most 4 per row) of ``rows_per`` stacked axes each; returns
    (fig, [[axes of panel i]])."""
    ncol = min(4, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow * rows_per, ncol, figsize=(4.0 * ncol, height * nrow * rows_per),
                             sharex=True, sharey=sharey, layout='constrained', squeeze=False)
    panels = [[axes[(i // ncol) * rows_per + r][i % ncol] for r in range(rows_per)]
              for i in range(n)]
    for i in range(n, nrow * ncol):
        for r in range(rows_per):
            axes[(i // ncol) * rows_per + r][i % ncol].set_visible(False)
    return fig, panels


def _layer_colors(layers):
    cmap = plt.get_cmap('viridis')
    return {n: cmap(i / max(1, len(layers) - 1)) for i, n in enumerate(layers)}


def plot_per_layer(runs, key, out, ylabel, title, smooth=1, ylim=None):
    """One panel per run, one line per layer of ``key``."""
    labels = [k for k in runs if key in runs[k][0]]
    if not labels:
        return None
    fig, panels = _grid(len(labels))
    for (ax,), label in zip(panels, labels):
        run, steps = runs[label]
        layers = list(run[key])
        col = _layer_colors(layers)
        for layer in layers:
            y = run[key][layer]
            ax.plot(steps, rolling(y, smooth) if smooth > 1 else y, color=col[layer], lw=1.1,
                    label=layer)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel('optimizer step')
        if ylim:
            ax.set_ylim(*ylim)
    panels[0][0].set_ylabel(ylabel)
    panels[-1][0].legend(fontsize=6, loc='best')
    fig.suptitle(title, fontsize=10)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_signs(runs, out, w=21):
    """Per run: rolling conflict rate, share of h_t > 0 and conflict-flip rate, per layer."""
    labels = [k for k in runs if 'hgrad' in runs[k][0]]
    fig, panels = _grid(len(labels), height=2.4, rows_per=3)
    for axes, label in zip(panels, labels):
        run, steps = runs[label]
        col = _layer_colors(list(run['dot']))
        for layer, s in run['dot'].items():
            axes[0].plot(steps, rolling(s < 0, w), color=col[layer], lw=1, label=layer)
            h = run['hgrad'].get(layer)
            if h is not None:
                axes[1].plot(steps, rolling(np.where(np.isfinite(h), h > 0, np.nan), w),
                             color=col[layer], lw=1)
            flip = np.concatenate([[np.nan], (s[:-1] * s[1:] < 0).astype(float)])
            axes[2].plot(steps, rolling(flip, w), color=col[layer], lw=1)
        axes[0].set_title(label, fontsize=9)
        axes[2].set_xlabel('optimizer step')
        for ax in axes:
            ax.axhline(0.5, color='k', lw=0.4, ls=':')
    panels[0][0].set_ylabel('conflict rate\nP(<g,d> < 0)')
    panels[0][1].set_ylabel('P(h_t > 0)\n(omega pushed down)')
    panels[0][2].set_ylabel('flip rate\nP(s_{t-1} s_t < 0)')
    panels[-1][0].legend(fontsize=6)
    fig.suptitle(f'conflict, hyper-gradient sign and flips per layer ({w}-step means)',
                 fontsize=10)
    fig.savefig(out, dpi=72)  # 3 x n panels of 10 lines: keep the PNG small
    plt.close(fig)
    return out


def plot_dist(runs, out):
    """||theta - theta0|| in total (left) and per layer (right), every run on one axis."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), layout='constrained')
    cmap = plt.get_cmap('tab10')
    layers = sorted({n for run, _ in runs.values() for n in run['dist']})
    for i, (label, (run, steps)) in enumerate(runs.items()):
        total = np.sqrt(np.nansum([d ** 2 for d in run['dist'].values()], 0))
        a1.plot(steps, total, color=cmap(i % 10), label=label)
        a2.plot(range(len(layers)), [run['dist'].get(n, [np.nan])[-1] for n in layers], 'o-',
                color=cmap(i % 10), label=label, ms=3)
    a1.set_xlabel('optimizer step')
    a1.set_ylabel('||theta - theta0|| (all tensors)')
    a1.legend(fontsize=7)
    a2.set_xticks(range(len(layers)), layers, rotation=60, fontsize=6, ha='right')
    a2.set_ylabel('final ||theta - theta0|| per tensor')
    a2.set_yscale('log')
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_radial(runs, out, w=21):
    """Mean over layers (conflict steps only) of cos(-g, d), cos(-g~, d) and cos(update, d)."""
    labels = [k for k in runs if 'update_cos' in runs[k][0]]
    fig, panels = _grid(len(labels))
    for (ax,), label in zip(panels, labels):
        run, steps = runs[label]
        for key, color, name in (('grad_cos', 'tab:gray', 'cos(-g, d): raw gradient'),
                                 ('proj_grad_cos', 'tab:blue', 'cos(-g~, d): after projection'),
                                 ('base_update_cos', 'tab:orange',
                                  'cos(base update, d): before an update projection'),
                                 ('update_cos', 'tab:red', 'cos(applied update, d)')):
            if key == 'base_update_cos' and all(np.allclose(run[key][n], run['update_cos'][n],
                                                            equal_nan=True) for n in run[key]):
                continue  # gradient mode: the same as the applied update
            vals = np.array([np.where(run['dot'][n] < 0, run[key][n], np.nan)
                             for n in run[key]])
            with warnings.catch_warnings():  # steps without any conflict: an empty mean
                warnings.simplefilter('ignore', RuntimeWarning)
                ax.plot(steps, rolling(np.nanmean(vals, 0), w), color=color, lw=1.3,
                        label=name)
        ax.axhline(0, color='k', lw=0.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel('optimizer step')
    panels[0][0].set_ylabel('mean over tensors, conflict steps')
    panels[-1][0].legend(fontsize=6)
    fig.suptitle('does the step still grow ||theta - theta0||? (> 0: yes)', fontsize=10)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def analyse(run_dirs, out_dir):
    """Load every run, write the JSON summary and the four plots; returns the summary."""
    os.makedirs(out_dir, exist_ok=True)
    runs = {label: load_run(wd) for label, wd in run_dirs.items()}
    summary = {label: dict(work_dir=run_dirs[label], **summarise(run))
               for label, (run, _) in runs.items()}
    with open(osp.join(out_dir, 'digrap_dynamics.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    first = {}  # plots show the first seed of every label
    for label in runs:
        first.setdefault(label.split('@')[0], runs[label])
    plot_per_layer(first, 'omega', osp.join(out_dir, 'digrap_dynamics_omega.png'), 'omega',
                   'projection strength omega per layer')
    plot_signs(first, osp.join(out_dir, 'digrap_dynamics_signs.png'))
    plot_dist(first, osp.join(out_dir, 'digrap_dynamics_dist.png'))
    plot_radial(first, osp.join(out_dir, 'digrap_dynamics_radial.png'))
    return summary


# ------------------------------------------------------------------------- decision rule
def _bench():
    """tools/benchmark/robust_ft_bench.py as a module: it owns the decision rule (``decide``,
    ``decision_markdown``, ``recommended``), so the study and the benchmark report apply the
    same one."""
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location('robust_ft_bench', osp.join(
        osp.dirname(osp.dirname(osp.abspath(__file__))), 'benchmark', 'robust_ft_bench.py'))
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------- step time
def step_times(config, variants, repeats=60, warmup=10, batch=16, seed=0):
    """Median wall time (ms) of one training iteration (forward, backward, optimizer step; for
    ``hypergrad_source='val'`` also the validation forward/backward and
    ``set_val_gradients``) of CONFIG's model, per variant, the variants interleaved iteration
    by iteration so background load hits them alike. ``ft`` (``omega_max=0``) is the base
    optimizer's cost plus DiGraP's no-op overhead; ``adam`` (label 'adam', no options) is the
    plain base optimizer. Random inputs of the config's input shape (1x28x28 for digits).

    Returns:
        {label: median ms}.
    """
    import copy

    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmdigrap  # noqa: F401  (registers the modules)
    from mmdigrap import DiGraP
    cfg = Config.fromfile(config)
    init_default_scope('mmpretrain')
    torch.manual_seed(seed)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('init_cfg', None)
    base_model = MODELS.build(model_cfg)
    x = torch.randint(0, 255, (batch, 1, 28, 28)).float()
    y = torch.randint(0, 10, (batch,))
    lr = cfg.optim_wrapper.optimizer.get('lr', 1e-3)
    setups = []
    for label, opts in variants:
        model = copy.deepcopy(base_model)
        base = torch.optim.Adam(model.parameters(), lr=lr)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            opt = base if label == 'adam' else DiGraP(base, **opts)
        setups.append((label, model, opt, opts.get('hypergrad_source') == 'val'))

    def loss_of(model):
        feats = model.extract_feat((x - 33.3285) / 78.5655)
        return torch.nn.functional.cross_entropy(model.head(feats), y)

    times = defaultdict(list)
    for it in range(warmup + repeats):
        for label, model, opt, val in setups:
            t0 = time.perf_counter()
            opt.zero_grad()
            loss_of(model).backward()
            opt.step()
            if val:
                params = [p for p in model.parameters() if p.requires_grad]
                model.eval()
                grads = torch.autograd.grad(loss_of(model), params)
                model.train()
                opt.set_val_gradients(zip(params, grads))
            if it >= warmup:
                times[label].append(time.perf_counter() - t0)
    return {label: float(np.median(v) * 1e3) for label, v in times.items()}


# ------------------------------------------------------------------------------- probe
def parse_variant(text):
    """'label:key=val,key=val' -> (label, {key: python value})."""
    label, _, opts = text.partition(':')
    kw = {}
    for item in filter(None, opts.split(',')):
        k, _, v = item.partition('=')
        try:
            kw[k] = json.loads(v.replace("'", '"')) if v not in ('True', 'False') else v == 'True'
        except json.JSONDecodeError:
            kw[k] = v
    return label, kw


def probe_config(config, opts, seed):
    """The text of a config that _base_'s ``config`` and turns on the diagnostics."""
    hooks = ["dict(type='RobustFTHook', log_interval=1)"]
    if opts.get('hypergrad_source') == 'val':
        hooks.append("dict(type='DiGraPValHook', interval=1)")
    kw = ''.join(f', {k}={v!r}' for k, v in opts.items())
    return (f"_base_ = [{osp.abspath(config)!r}]\n"
            "optim_wrapper = dict(type='DiGraPOptimWrapper', "
            f"digrap=dict(track_update=True{kw}))\n"
            f"custom_hooks = [{', '.join(hooks)}]\n"
            f"randomness = dict(seed={int(seed)})\n")


def run_probe(config, label, opts, seed, work_root, threads=1, cfg_options=()):
    wd = osp.join(work_root, f'{label}_seed{seed}')
    os.makedirs(wd, exist_ok=True)
    if glob.glob(osp.join(wd, '*', 'vis_data', 'scalars.json')) and osp.exists(
            osp.join(wd, 'done')):
        return wd, 0.0
    cfg_path = osp.join(wd, 'probe_cfg.py')
    with open(cfg_path, 'w') as f:
        f.write(probe_config(config, opts, seed))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    extra = ['--cfg-options', *cfg_options] if cfg_options else []
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg_path,
                           '--work-dir', wd, *extra], cwd=REPO, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f'probe {label} seed {seed} failed:\n{proc.stderr[-3000:]}')
    open(osp.join(wd, 'done'), 'w').close()
    return wd, time.time() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('probe', help='train probe runs through tools/train.py, then analyse')
    p.add_argument('config', help='a DiGraP config of the task')
    p.add_argument('--variant', action='append', required=True,
                   help="LABEL:key=val,... options of DiGraP (e.g. 'ft:omega_max=0')")
    p.add_argument('--seeds', type=int, nargs='+', default=[0])
    p.add_argument('--work-dir', default='work_dirs/digrap_dynamics')
    p.add_argument('--jobs', type=int, default=1)
    p.add_argument('--out', default='docs/analysis')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='passed to tools/train.py (e.g. load_from=LP.pth); {seed} is replaced '
                        "by the run's seed")
    a = sub.add_parser('analyse', help='analyse finished runs LABEL=WORK_DIR')
    a.add_argument('runs', nargs='+')
    a.add_argument('--out', default='docs/analysis')
    d = sub.add_parser('decide', help='regime table and decision rule from a results JSON')
    d.add_argument('results')
    d.add_argument('--task', default='digits')
    d.add_argument('--md', default=None, help='also write the table to this file')
    t = sub.add_parser('steptime', help='interleaved training-iteration time per variant')
    t.add_argument('config')
    t.add_argument('--variant', action='append', required=True)
    t.add_argument('--repeats', type=int, default=60)
    args = ap.parse_args(argv)
    if args.cmd == 'steptime':
        res = step_times(args.config, [parse_variant(v) for v in args.variant], args.repeats)
        name = 'adam' if 'adam' in res else next(iter(res))  # FT = the plain base optimizer
        for label, ms in res.items():
            print(f'{label:24s} {ms:7.2f} ms/iteration  {ms / res[name]:.2f}x {name}')
        return
    if args.cmd == 'decide':
        bench = _bench()
        with open(args.results) as f:
            data = json.load(f)
        table = bench.decision_markdown(data, args.task)
        rec = sorted(bench.recommended(data))
        print(f'{args.task}:\n{table}\nrecommended on every task: {rec or "none"}')
        if args.md:
            with open(args.md, 'w') as f:
                f.write(table + '\n')
        return
    if args.cmd == 'probe':
        variants = [parse_variant(v) for v in args.variant]
        jobs = [(label, kw, s) for s in args.seeds for label, kw in variants]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futs = {(label, s): pool.submit(
                run_probe, args.config, label, kw, s, args.work_dir,
                cfg_options=[o.replace('{seed}', str(s)) for o in args.cfg_options])
                for label, kw, s in jobs}
            run_dirs = {}
            for (label, s), fut in futs.items():
                wd, secs = fut.result()
                run_dirs[f'{label}@{s}'] = wd
                print(f'{label} seed {s}: {wd} ({secs:.0f} s)', flush=True)
    else:
        run_dirs = dict(r.split('=', 1) for r in args.runs)
    summary = analyse(run_dirs, args.out)
    for label, rec in summary.items():
        print(f"{label:28s} dist {rec['dist_total_last']:.3f}  sign rule agrees "
              f"{rec.get('sign_rule_agree_mean', float('nan')):.2f}  update cos "
              f"{rec.get('update_cos_mean', float('nan')):+.3f}")


if __name__ == '__main__':
    main()
