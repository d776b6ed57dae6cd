"""Plot per-layer DiGraP projection strengths omega over iterations from a run's logs.

    python tools/analysis/plot_omega.py WORK_DIR [--out omega.png] [--match REGEX]

Reads the per-layer scalars that ``RobustFTHook`` writes through the mmengine visualizer
(``WORK_DIR/<timestamp>/vis_data/scalars.json``, keys ``omega/<param name>``; every timestamp
folder of the work dir is read, so a resumed run continues the same curves) and draws one
heat map (one row per parameter tensor, input to output) above the mean omega, its
inter-quartile band and the fraction of tensors above 0.5. Heat-map rows are labelled with
the tensor names, shortened (:func:`short_names`). Writes ``WORK_DIR/omega.png`` unless
``--out`` is given.

When nothing was logged, the error says why, from the run's own files: no scalars file (no
``LocalVisBackend``), no ``RobustFTHook`` in the run's config, or a run shorter than the hook's
``log_interval`` (and which ``custom_hooks.<i>.log_interval`` to lower).
"""
import argparse
import glob
import json
import os.path as osp
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def _digrap_hook(work_dir):
    """(index in custom_hooks, log_interval) of the RobustFTHook (old name: DiGraPHook) in
    the run's dumped config
    (``WORK_DIR/<timestamp>/vis_data/config.py``, the newest), ``(None, None)`` without one,
    or None when no dumped config exists."""
    configs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'config.py')))
    if not configs:
        return None
    from mmengine.config import Config
    cfg = Config.fromfile(configs[-1], import_custom_modules=False)
    for i, hook in enumerate(cfg.get('custom_hooks', None) or []):
        if str(hook.get('type', '')).rsplit('.', 1)[-1] in ('RobustFTHook', 'DiGraPHook'):
            return i, int(hook.get('log_interval', 50))  # the hook's default
    return None, None


def _why_no_omega(work_dir, files, rows, key_prefix):
    """The message for a work dir without ``key_prefix`` scalars: what is missing, what to do."""
    where = f'{work_dir}/*/vis_data/scalars.json'
    if not files:
        return (f'no {where}: {work_dir} is not a run\'s work dir, or the run had no '
                "LocalVisBackend (visualizer=dict(vis_backends=[dict(type='LocalVisBackend')]))")
    hook = _digrap_hook(work_dir)
    if hook is not None and hook[0] is None:
        return (f'no {key_prefix}* scalars in {where}: the run had no RobustFTHook; add '
                "custom_hooks=[dict(type='RobustFTHook', log_interval=10)] to the config")
    iters = max((int(r.get('iter', r.get('step', 0)) or 0) for r in rows), default=0)
    if hook is not None:
        i, interval = hook
        if iters < interval:
            return (f'no omega was logged yet (run had {iters} iterations < '
                    f'log_interval={interval}); lower `custom_hooks[{i}].log_interval`, e.g. '
                    f'--cfg-options custom_hooks.{i}.log_interval={max(1, iters)}')
    others = sorted({k.split('/', 1)[0] + '/' for r in rows for k in r if '/' in k})
    return (f'no {key_prefix}* scalars in {where} after {iters} iterations'
            + (f' (there are {", ".join(others)}*: a method without omega, e.g. L2-SP/FTP/SPD/'
               'TPGM, logs only dist/*)' if others else '')
            + ': check RobustFTHook(log_per_layer=True) and that the optim_wrapper is DiGraP')


def load_omegas(work_dir, key_prefix='omega/'):
    """{param name: [(step, omega), ...]} sorted by step, from every vis_data/scalars.json.

    Raises:
        FileNotFoundError: no ``key_prefix`` scalars under ``work_dir``; the message says why
            (:func:`_why_no_omega`), e.g. ``no omega was logged yet (run had 4 iterations <
            log_interval=10); lower `custom_hooks[0].log_interval` ...``.
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    curves = defaultdict(dict)
    rows = []
    for path in files:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                rows.append(row)
                step = row.get('step')
                for k, v in row.items():
                    if k.startswith(key_prefix):
                        curves[k[len(key_prefix):]][step] = v
    if not curves:
        raise FileNotFoundError(_why_no_omega(work_dir, files, rows, key_prefix))
    return {k: sorted(v.items()) for k, v in curves.items()}


_SHORTEN = ((re.compile(r'(^|\.)(?:layers|blocks|layer|stages)\.(\d+)\.'), r'\1L\2.', 1),
            (re.compile(r'\.weight$'), '.w', 1), (re.compile(r'\.bias$'), '.b', 1),
            (re.compile(r'projection'), 'proj', 0), (re.compile(r'patch_embed'), 'patch', 0))


def short_names(names):
    """Shortened tensor names for the heat-map rows, in the same order.

    Drops the first component when all (two or more) names share it (``backbone.``, DDP's
    ``module.``), writes the first ``layers.<i>.`` / ``blocks.<i>.`` as ``L<i>.``, ``.weight``
    / ``.bias`` as ``.w`` / ``.b``, and ``projection`` / ``patch_embed`` as ``proj`` / ``patch``:
    ``backbone.layers.3.attn.qkv.weight`` -> ``L3.attn.qkv.w``.
    """
    names = list(names)
    heads = {n.split('.', 1)[0] for n in names}
    drop = len(names) > 1 and len(heads) == 1 and all('.' in n for n in names)
    out = []
    for n in names:
        s = n.split('.', 1)[1] if drop else n
        for pat, rep, count in _SHORTEN:
            s = pat.sub(rep, s, count=count)
        out.append(s)
    return out


def draw(curves, title=''):
    """The figure of ``curves`` ({name: [(step, value)]}).

    Top: a heat map, one row per tensor (input -> output) labelled with :func:`short_names`,
    one column per logged step. Bottom: the mean over tensors with its 25-75 % band, and the
    fraction of tensors at omega > 0.5. The figure grows with the number of tensors so that
    every row keeps a readable label.
    """
    import numpy as np
    names = list(curves)
    steps = sorted({s for c in curves.values() for s, _ in c})
    col = {s: j for j, s in enumerate(steps)}
    grid = np.full((len(names), len(steps)), np.nan)
    for i, name in enumerate(names):
        for s, v in curves[name]:
            grid[i, col[s]] = v
    rows_in = max(4.2, 0.11 * len(names))  # heat-map height: ~0.11 inch per labelled row
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, rows_in + 2.8), sharex=True,
                                   layout='constrained',
                                   gridspec_kw=dict(height_ratios=[rows_in, 2.8]))
    x = np.asarray(steps, dtype=float)
    half = np.diff(x).min() / 2 if len(x) > 1 else 0.5
    edges = np.concatenate([x - half, [x[-1] + half]])
    im = ax1.pcolormesh(edges, np.arange(len(names) + 1) - 0.5, grid, cmap='viridis', vmin=0,
                        vmax=max(1.0, float(np.nanmax(grid))), shading='flat')
    ax1.set_yticks(np.arange(len(names)))
    ax1.set_yticklabels(short_names(names), fontsize=6 if len(names) > 30 else 8)
    ax1.invert_yaxis()
    ax1.set_ylabel(f'tensor ({len(names)}, input -> output)')
    ax1.set_title(title or 'DiGraP projection strength omega per layer')
    fig.colorbar(im, ax=[ax1, ax2], label='omega', shrink=0.6)
    mean = np.nanmean(grid, 0)
    q25, q75 = np.nanpercentile(grid, 25, 0), np.nanpercentile(grid, 75, 0)
    ax2.fill_between(x, q25, q75, color='tab:blue', alpha=0.25, label='25-75 % of tensors')
    ax2.plot(x, mean, color='k', lw=2, label='mean omega')
    ax2.plot(x, np.nanmean(grid > 0.5, 0), color='tab:orange', lw=1.2,
             label='fraction with omega > 0.5')
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel('iteration')
    ax2.set_ylabel('omega')
    ax2.legend(loc='upper left', fontsize=8)
    return fig


def plot(curves, out, title=''):
    """Draw ``curves`` ({name: [(step, value)]}, see :func:`draw`) to the PNG ``out``."""
    fig = draw(curves, title)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('work_dir')
    ap.add_argument('--out', default=None, help='PNG path (default WORK_DIR/omega.png)')
    ap.add_argument('--match', default=None, help='only tensors whose name matches this regex')
    args = ap.parse_args(argv)
    try:
        curves = load_omegas(args.work_dir)
    except FileNotFoundError as e:
        sys.exit(f'plot_omega: {e}')
    if args.match:
        curves = {k: v for k, v in curves.items() if re.search(args.match, k)}
        if not curves:
            sys.exit(f'--match {args.match!r} selects no tensor')
    out = plot(curves, args.out or osp.join(args.work_dir, 'omega.png'),
               title=f'DiGraP omega per layer: {osp.basename(osp.normpath(args.work_dir))}')
    print(f'wrote {out} ({len(curves)} tensors)')


if __name__ == '__main__':
    main()
