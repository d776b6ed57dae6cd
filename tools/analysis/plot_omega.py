"""Plot per-layer DiGraP projection strengths omega over iterations from a run's logs.

    python tools/analysis/plot_omega.py WORK_DIR [--out omega.png] [--match REGEX]

Reads the per-layer scalars that ``DiGraPHook`` writes through the mmengine visualizer
(``WORK_DIR/<timestamp>/vis_data/scalars.json``, keys ``omega/<param name>``; every timestamp
folder of the work dir is read, so a resumed run continues the same curves) and draws one
line per parameter tensor, coloured by depth (order of first appearance), with the mean in
black. Writes ``WORK_DIR/omega.png`` unless ``--out`` is given.
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
    """Draw ``curves`` ({name: [(step, value)]}) to the PNG ``out``."""
    names = list(curves)
    cmap = plt.get_cmap('viridis')
    fig, ax = plt.subplots(figsize=(9, 5))
    steps_all = sorted({s for c in curves.values() for s, _ in c})
    for i, name in enumerate(names):
        s, v = zip(*curves[name])
        ax.plot(s, v, color=cmap(i / max(len(names) - 1, 1)), lw=0.8, alpha=0.6)
    mean = [sum(dict(c).get(t, 0.0) for c in curves.values()) / len(curves) for t in steps_all]
    ax.plot(steps_all, mean, color='k', lw=2.2, label=f'mean over {len(names)} tensors')
    ax.set_xlabel('iteration')
    ax.set_ylabel('projection strength omega')
    ax.set_ylim(-0.02, max(1.02, max(v for c in curves.values() for _, v in c) + 0.02))
    ax.set_title(title or 'DiGraP per-layer omega (colour: depth, first -> last)')
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, len(names) - 1))
    fig.colorbar(sm, ax=ax, label='tensor index (input -> output)')
    ax.legend(loc='upper left')
    fig.tight_layout()
    fig.savefig(out, dpi=120)
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
