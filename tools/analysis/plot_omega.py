"""Plot per-layer DiGraP projection strengths omega over iterations from a run's logs.

    python tools/analysis/plot_omega.py WORK_DIR [--out omega.png] [--match REGEX]

Reads the per-layer scalars that ``DiGraPHook`` writes through the mmengine visualizer
(``WORK_DIR/<timestamp>/vis_data/scalars.json``, keys ``omega/<param name>``; every timestamp
folder of the work dir is read, so a resumed run continues the same curves) and draws one
heat map (one row per parameter tensor, input to output) above the mean omega, its
inter-quartile band and the fraction of tensors above 0.5. Writes ``WORK_DIR/omega.png``
unless ``--out`` is given.
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


def load_omegas(work_dir, key_prefix='omega/'):
    """{param name: [(step, omega), ...]} sorted by step, from every vis_data/scalars.json.

    Raises:
        FileNotFoundError: no scalars.json with omega entries under ``work_dir``.
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    curves = defaultdict(dict)
    for path in files:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                step = row.get('step')
                for k, v in row.items():
                    if k.startswith(key_prefix):
                        curves[k[len(key_prefix):]][step] = v
    if not curves:
        raise FileNotFoundError(
            f'no {key_prefix}* scalars under {work_dir}/*/vis_data/scalars.json: was the run '
            "trained with DiGraPHook (custom_hooks=[dict(type='DiGraPHook')]) and a "
            "LocalVisBackend visualizer?")
    return {k: sorted(v.items()) for k, v in curves.items()}


def plot(curves, out, title=''):
    """Draw ``curves`` ({name: [(step, value)]}) to the PNG ``out``.

    Top: a heat map, one row per tensor (input -> output), one column per logged step.
    Bottom: the mean over tensors with its 25-75 % band, and the fraction of tensors at
    omega > 0.5.
    """
    import numpy as np
    names = list(curves)
    steps = sorted({s for c in curves.values() for s, _ in c})
    col = {s: j for j, s in enumerate(steps)}
    grid = np.full((len(names), len(steps)), np.nan)
    for i, name in enumerate(names):
        for s, v in curves[name]:
            grid[i, col[s]] = v
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, layout='constrained',
                                   gridspec_kw=dict(height_ratios=[3, 2]))
    x = np.asarray(steps, dtype=float)
    half = np.diff(x).min() / 2 if len(x) > 1 else 0.5
    edges = np.concatenate([x - half, [x[-1] + half]])
    im = ax1.pcolormesh(edges, np.arange(len(names) + 1) - 0.5, grid, cmap='viridis', vmin=0,
                        vmax=max(1.0, float(np.nanmax(grid))), shading='flat')
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
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('work_dir')
    ap.add_argument('--out', default=None, help='PNG path (default WORK_DIR/omega.png)')
    ap.add_argument('--match', default=None, help='only tensors whose name matches this regex')
    args = ap.parse_args(argv)
    curves = load_omegas(args.work_dir)
    if args.match:
        curves = {k: v for k, v in curves.items() if re.search(args.match, k)}
        if not curves:
            sys.exit(f'--match {args.match!r} selects no tensor')
    out = plot(curves, args.out or osp.join(args.work_dir, 'omega.png'),
               title=f'DiGraP omega per layer: {osp.basename(osp.normpath(args.work_dir))}')
    print(f'wrote {out} ({len(curves)} tensors)')


if __name__ == '__main__':
    main()
