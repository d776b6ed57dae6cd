"""Optimizer-step benchmark: DiGraP (eager and fused) vs torch's AdamW vs the per-tensor loop.

Parameter lists with the real shapes of a ViT-S/16 (21.7M parameters, 150 tensors) and a
ViT-B/16 (85.8M), float32, fixed random gradients, no forward. Configurations:

* ``adamw``         torch.optim.AdamW(foreach=True);   ``adamw-fused``  AdamW(fused=True);
* ``digrap`` / ``digrap-lean``  mmdigrap.DiGraP(AdamW foreach, fused=False), the eager path;
* ``fused`` / ``fused-lean``    mmdigrap.DiGraP(AdamW(fused=True), fused=True), compiled;
* ``loop``          mmdigrap.core.reference.ReferenceDiGraP (authors' style) + AdamW foreach.

Timing: the configurations are interleaved step by step (background load hits all alike);
CPU: process CPU time (all threads), CUDA: wall time between synchronisations; min and median
of ``--repeats``. ``--timer`` uses torch.utils.benchmark.Timer (blocked_autorange, CPU time)
instead. Roofline: bytes each configuration must move per step / the copy bandwidth measured
here (``_foreach_copy_`` of a P-sized list). Results go to JSON; markdown is rendered from it
(``--render FILE.json`` re-renders without measuring).

Examples: ``step_bench.py --threads 1,2 --whole-iteration``; ``--device cuda --repeats 50``;
``--render docs/results/step_bench.json``.
"""
import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from mmdigrap import DiGraP
from mmdigrap.core.reference import ReferenceDiGraP

ARCHS = {'vit-s': (384, 12, 1536), 'vit-b': (768, 12, 3072)}  # (dim, depth, mlp), /16, 224 px
CONFIGS = ('adamw', 'adamw-fused', 'digrap', 'digrap-lean', 'fused', 'fused-lean', 'loop')
#: parameter-sized passes per step: AdamW reads p, g, m, v, writes p, m, v; the fused transform
#: reads g, theta, theta0 (+ P) for the reductions, then g, theta, theta0, writes g (+ P_t).
PASSES = {'adamw': 7, 'adamw-fused': 7, 'fused': 7 + 9, 'fused-lean': 7 + 7, 'fused (folded into '
          'AdamW, lower bound)': 13, 'fused-lean (folded into AdamW, lower bound)': 11}


def vit_shapes(arch):
    """Shapes of every trainable tensor of a timm-style ViT/16 at 224 px without a head."""
    dim, depth, mlp = ARCHS[arch]
    blk = [(dim,), (dim,), (3 * dim, dim), (3 * dim,), (dim, dim), (dim,), (dim,), (dim,),
           (mlp, dim), (mlp,), (dim, mlp), (dim,)]
    return [(dim, 3, 16, 16), (dim,), (1, 1, dim), (1, 197, dim)] + blk * depth + [(dim,)] * 2


def make_params(arch, device, seed=0):
    """Random float32 parameters with random gradients (set once, reused every step)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in vit_shapes(arch):
        p = torch.nn.Parameter((0.02 * torch.randn(shape, generator=gen)).to(device))
        p.grad = (1e-3 * torch.randn(shape, generator=gen)).to(device)
        out.append(p)
    return out


def build(name, params):
    kw = dict(lr=1e-4, weight_decay=0.0)
    if name in ('adamw-fused', 'fused', 'fused-lean'):
        base = torch.optim.AdamW(params, fused=True, **kw)
    else:
        base = torch.optim.AdamW(params, foreach=True, **kw)
    lean = dict(store_projection=not name.endswith('lean'))
    if name in ('digrap', 'digrap-lean'):
        return DiGraP(base, mu=0.5, omega_init=0.1, fused=False, **lean)
    if name in ('fused', 'fused-lean'):
        return DiGraP(base, mu=0.5, omega_init=0.1, fused=True, **lean)
    return ReferenceDiGraP(base, mu=0.5) if name == 'loop' else base


def sync(device):
    return torch.cuda.synchronize() if device == 'cuda' else None


def state_bytes(opt):
    """Bytes of every tensor in the optimizer state (base + wrapper)."""
    def nbytes(obj):
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            obj = list(obj.values())
        return sum(nbytes(v) for v in obj) if isinstance(obj, (list, tuple)) else 0
    if isinstance(opt, ReferenceDiGraP):
        return nbytes(list(opt.base.state.values())) + nbytes(opt.state_tensors())
    base = getattr(opt, 'base_optimizer', None)
    return nbytes(list(opt.state.values())) + (nbytes(list(base.state.values())) if base else 0)


def transform_syncs(opt, device):
    """Host syncs in DiGraP's gradient transform ('-' for plain AdamW; for the loop: the whole
    step). CUDA: set_sync_debug_mode('error'); CPU: calls that read a tensor's value."""
    if isinstance(opt, DiGraP):
        args = opt._params_with_grad()
        fn = lambda: opt._pre_step(*args)  # noqa: E731
    elif isinstance(opt, ReferenceDiGraP):
        fn = opt.step
    else:
        return '-'
    if device == 'cuda':
        sync(device)
        torch.cuda.set_sync_debug_mode('error')
        try:
            fn()
            return '0'
        except RuntimeError as err:
            return f'>=1 ({str(err).splitlines()[0][:50]})'
        finally:
            torch.cuda.set_sync_debug_mode(0)
    n, names = [0], ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy')
    saved = {k: getattr(torch.Tensor, k) for k in names}
    for k, orig in saved.items():
        setattr(torch.Tensor, k, lambda self, *a, _o=orig, **kw: (n.__setitem__(0, n[0] + 1),
                                                                  _o(self, *a, **kw))[1])
    try:
        fn()
    finally:
        for k, orig in saved.items():
            setattr(torch.Tensor, k, orig)
    return str(n[0])


def _status(key):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ':'))


def step_peak(opt, device):
    """Peak bytes one step allocates on top (CPU: VmHWM reset by /proc/self/clear_refs)."""
    gc.collect()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        opt.step()
        return torch.cuda.max_memory_allocated() - base
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    base = _status('VmRSS')
    opt.step()
    return _status('VmHWM') - base


def bandwidth(params, device, repeats=5):
    """(copy, in-place) bytes/s over a P-sized list: ``_foreach_copy_`` and, reading and
    writing the same lines as AdamW does, ``_foreach_mul_(x, 1.0)``."""
    src = [p.detach().clone() for p in params]
    dst = [torch.empty_like(p) for p in params]
    nbytes = 2 * sum(p.numel() * p.element_size() for p in params)
    clock = time.perf_counter if device == 'cuda' else time.process_time
    out = []
    for fn in (lambda: torch._foreach_copy_(dst, src), lambda: torch._foreach_mul_(src, 1.0)):
        best = float('inf')
        for _ in range(repeats + 1):
            sync(device)
            t0 = clock()
            fn()
            sync(device)
            best = min(best, clock() - t0)
        out.append(nbytes / best)
    return tuple(out)


def bench_model(arch, device, repeats, configs, use_timer=False):
    params = make_params(arch, device)
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    rows, opts = {}, {}
    for c in configs:
        opt = build(c, params)
        t0 = time.perf_counter()
        opt.step()  # creates the state (and compiles the fused configurations)
        sync(device)
        first_s = time.perf_counter() - t0
        rows[c] = dict(config=c, first_step_s=first_s, syncs=transform_syncs(opt, device),
                       state=state_bytes(opt), peak_growth=step_peak(opt, device),
                       compile_s=sum(getattr(opt, 'compile_seconds', {}).values()))
        opts[c] = opt
    times = {c: [] for c in configs}
    clock = time.perf_counter if device == 'cuda' else time.process_time
    if use_timer:
        from torch.utils.benchmark import Timer
        for c, opt in opts.items():
            m = Timer('opt.step()', globals=dict(opt=opt), timer=clock,
                      num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=2)
            times[c] = list(m.times)
    else:
        for _ in range(repeats):
            for c, opt in opts.items():
                sync(device)
                t0 = clock()
                opt.step()
                sync(device)
                times[c].append(clock() - t0)
    copy_bw, inplace_bw = bandwidth(params, device)  # then min, median, IQR per config
    for c in configs:
        ts = sorted(times[c])
        rows[c].update(ms_min=1e3 * ts[0], ms_med=1e3 * statistics.median(ts), ms_iqr=1e3 * (
            ts[3 * len(ts) // 4] - ts[len(ts) // 4]))
    del opts
    return dict(arch=arch, n_params=sum(p.numel() for p in params), n_tensors=len(params),
                p_bytes=p_bytes, copy_bw=copy_bw, inplace_bw=inplace_bw, rows=rows)


def whole_iteration(device, repeats, batch=32, img=112):
    """fwd + bwd + step of mmpretrain's dinov2-small at 112 px (the embedded job's shape)."""
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(dict(
        backbone=VisionTransformer(arch='dinov2-small', patch_size=14, img_size=img),
        head=torch.nn.Linear(384, 10))).to(device)
    params = list(model.parameters())
    x, y = torch.randn(batch, 3, img, img, device=device), torch.arange(batch, device=device) % 10
    opts = {'adamw-fused': torch.optim.AdamW(params, lr=1e-5, fused=True),
            'fused': DiGraP(torch.optim.AdamW(params, lr=1e-5, fused=True), fused=True,
                            exclude=[r'^head\.'], named_parameters=model.named_parameters())}
    clock = time.perf_counter if device == 'cuda' else time.process_time
    res = {c: dict(iter=[], step=[]) for c in opts}
    for rep in range(repeats + 1):
        for c, opt in opts.items():
            opt.zero_grad()
            t0 = clock()
            F.cross_entropy(model['head'](model['backbone'](x)[-1]), y).backward()
            sync(device)
            t1 = clock()
            opt.step()
            sync(device)
            if rep:  # the first round creates the state and compiles
                res[c]['iter'].append(1e3 * (clock() - t0))
                res[c]['step'].append(1e3 * (clock() - t1))
    return {c: {k: statistics.median(v) for k, v in r.items()} for c, r in res.items()}


def machine(device):
    cpu = platform.processor() or 'unknown'
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    return dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__,
                python=platform.python_version(), load=list(os.getloadavg()),
                gpu=torch.cuda.get_device_name() if device == 'cuda' else None)


def targets(data):
    """[(target, measured, met)] from the JSON results."""
    out, dev = [], data['device']
    for run in data['runs']:
        for res in run['models']:
            r, tag = res['rows'], f"{res['arch']}, {run['threads']} thread(s)"
            fast = min(r[c]['ms_med'] for c in ('adamw', 'adamw-fused') if c in r)
            limit = 1.5 if dev == 'cpu' else 1.3
            for c in [c for c in ('fused', 'fused-lean') if c in r]:
                x = r[c]['ms_med'] / fast
                xf = r[c]['ms_med'] / r['adamw']['ms_med'] if 'adamw' in r else float('nan')
                out.append((f'{tag}: {c} step <= {limit}x fastest AdamW', f'{x:.2f}x '
                            f'({xf:.2f}x foreach AdamW)', x <= limit))
            if 'loop' in r and 'fused' in r:
                x = r['loop']['ms_med'] / r['fused']['ms_med']
                out.append((f'{tag}: fused >= 5x faster than the loop'
                            + (' (CUDA target; informative here)' if dev == 'cpu' else ''),
                            f'{x:.1f}x', None if dev == 'cpu' else x >= 5))
            base = r['adamw' if 'adamw' in r else 'adamw-fused']['state']
            for c, extra in (('fused', 2), ('fused-lean', 1), ('digrap', 2), ('digrap-lean', 1)):
                if c in r and run is data['runs'][0]:
                    ex = (r[c]['state'] - base) / res['p_bytes']
                    out.append((f"{res['arch']}: {c} state <= AdamW + {extra}P",
                                f'+{ex:.2f}P', ex <= extra + 1e-3))
                    out.append((f"{res['arch']}: {c} 0 host syncs in the transform",
                                r[c]['syncs'], r[c]['syncs'] == '0'))
    it = data.get('iteration')
    if it:
        ov = it['fused']['iter'] / it['adamw-fused']['iter'] - 1
        ov_step = (it['fused']['step'] - it['adamw-fused']['step']) / it['adamw-fused']['iter']
        out.append(('whole iteration (dinov2-small, b32, 112 px) <= 2% over AdamW',
                    f'{100 * ov:+.1f}% (from the step times alone: {100 * ov_step:+.1f}%)',
                    ov <= 0.02))
    else:
        out.append(('whole iteration <= 2% over AdamW', 'not measured', None))
    if dev == 'cpu':
        out.append(('CUDA: <= 1.3x fused AdamW, >= 5x the loop, 0 syncs, fp16 GradScaler test',
                    'not measured (no GPU here; run tools/benchmark/gpu_check.sh)', None))
    return out


def render(data):
    m, dev = data['machine'], data['device']
    unit = 'CPU ms' if dev == 'cpu' else 'ms'
    lines = ['# DiGraP optimizer-step benchmark', '', f"Command: `{data['command']}`",
             f"Date: {data['date']}", '',
             f"Machine: {m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if m['gpu'] else '')
             + f"; torch {m['torch']}, Python {m['python']}. Load average (1/5/15 min) at start "
             f"{' / '.join(f'{x:.1f}' for x in m['load'])}, at end "
             f"{' / '.join(f'{x:.1f}' for x in data['load_end'])} (the machine is shared; "
             'CPU times are much less affected than wall times).', '',
             f"Device **{dev}**; {data['timing']}. Times are "
             + ('process CPU time of the step (all threads).' if dev == 'cpu' else
                'wall time between synchronisations.')
             + ' Roofline = parameter-sized passes x P / the higher of the measured copy and '
             'in-place bandwidths (a lower bound of the step time; passes: AdamW 7, fused '
             'transform 9 full / 7 lean on top). State = bytes of all optimizer-state '
             'tensors; host syncs = calls reading a tensor value on the host during the '
             'transform (CUDA: '
             "set_sync_debug_mode('error')); peak = memory a steady step allocates on top (its "
             'temporaries; CPU: peak RSS growth).', '']
    for run in data['runs']:
        for res in run['models']:
            r, pb = res['rows'], res['p_bytes']
            bw = max(res['copy_bw'], res['inplace_bw'])
            fast = min(r[c]['ms_med'] for c in ('adamw', 'adamw-fused') if c in r)
            lines += [f"## {res['arch']}, {run['threads']} thread(s): "
                      f"{res['n_params'] / 1e6:.1f}M parameters in {res['n_tensors']} tensors, "
                      f"P = {pb / 2 ** 20:.0f} MiB; bandwidth: copy {res['copy_bw'] / 1e9:.1f} "
                      f"GB/s, in place {res['inplace_bw'] / 1e9:.1f} GB/s", '',
                      f'| config | {unit} min | median | IQR | x fastest AdamW | roofline ms '
                      '| x roofline | first step s (compile) | state / P | peak MiB '
                      '| syncs (transform) |', '|' + '---|' * 11]
            for c, row in r.items():
                roof = PASSES[c] * pb / bw * 1e3 if c in PASSES else None
                lines.append(
                    f"| {c} | {row['ms_min']:.1f} | {row['ms_med']:.1f} | {row['ms_iqr']:.1f} "
                    f"| {row['ms_med'] / fast:.2f} | "
                    + (f"{roof:.1f} | {row['ms_med'] / roof:.2f}" if roof else '- | -')
                    + f" | {row['first_step_s']:.1f}"
                    + (f" ({row['compile_s']:.0f})" if row['compile_s'] else '')
                    + f" | {row['state'] / pb:.2f} | "
                    + (f"{row['peak_growth'] / 2 ** 20:.0f}" if row['peak_growth'] else '-')
                    + f" | {row['syncs']} |")
            for c in ('fused (folded into AdamW, lower bound)',
                      'fused-lean (folded into AdamW, lower bound)'):
                roof = PASSES[c] * pb / bw * 1e3
                lines.append(f'| {c} | - | - | - | >= {PASSES[c] / 7:.2f} by bytes | '
                             f'{roof:.1f} | - | - | - | - | - |')
            lines.append('')
    it = data.get('iteration')
    if it:
        lines += ['## Whole training iteration (the embedded job\'s shape)', '',
                  "mmpretrain VisionTransformer(arch='dinov2-small', patch_size=14, img_size=112)"
                  ' + Linear(384, 10) head, batch 32, fwd + bwd + step, medians; DiGraP '
                  'excludes the head.', '', f'| optimizer | {unit} / iteration | of which step |',
                  '|---|---:|---:|']
        lines += [f"| {c} | {v['iter']:.0f} | {v['step']:.1f} |" for c, v in it.items()]
        lines.append('')
    lines += (['## Notes', ''] + data['notes'] + [''] if data.get('notes') else []) + [
        '## Targets', '', '| target | measured | met |', '|---|---|---|']
    for name, val, ok in targets(data):
        lines.append(f"| {name} | {val} | {'-' if ok is None else ('yes' if ok else '**no**')} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    ap.add_argument('--models', default='vit-s,vit-b')
    ap.add_argument('--configs', default=','.join(CONFIGS))
    ap.add_argument('--threads', default='1,2', help='CPU: comma list of torch thread counts')
    ap.add_argument('--repeats', type=int, default=None, help='default: 10 CPU, 50 CUDA')
    ap.add_argument('--timer', action='store_true', help='torch.utils.benchmark.Timer')
    ap.add_argument('--whole-iteration', action='store_true')
    ap.add_argument('--json', default='docs/results/step_bench.json')
    ap.add_argument('--out', default='docs/results/step_bench.md', help="'' = print only")
    ap.add_argument('--render', metavar='JSON', help='only render this JSON to markdown')
    args = ap.parse_args(argv)
    if args.render:
        data = json.load(open(args.render))
    else:
        if args.device == 'cuda' and not torch.cuda.is_available():
            ap.error('--device cuda: CUDA is not available')
        repeats = args.repeats or (10 if args.device == 'cpu' else 50)
        data = dict(command='python ' + ' '.join([sys.argv[0]] + list(argv or sys.argv[1:])),
                    date=time.strftime('%Y-%m-%d %H:%M %Z'), device=args.device,
                    machine=machine(args.device), runs=[],
                    timing=('torch.utils.benchmark.Timer.blocked_autorange' if args.timer else
                            f'{repeats} timed steps per configuration, interleaved step by step,'
                            ' after 2 warm-up steps'))
        for t in [int(t) for t in args.threads.split(',')] if args.device == 'cpu' else [0]:
            torch.set_num_threads(t) if t else None
            run = dict(threads=torch.get_num_threads(), models=[])
            for m in filter(None, args.models.split(',')):
                t0 = time.time()
                run['models'].append(bench_model(m, args.device, repeats,
                                                 args.configs.split(','), args.timer))
                print(f'[{m}, {t} threads] {time.time() - t0:.0f} s', file=sys.stderr)
            data['runs'].append(run)
        if args.whole_iteration:  # with the first thread count
            torch.set_num_threads(int(args.threads.split(',')[0])) if args.device == 'cpu' else 0
            data['iteration'] = whole_iteration(args.device, 4)
        data['load_end'] = list(os.getloadavg())
        if args.json:
            json.dump(data, open(args.json, 'w'), indent=1)
    text = render(data)
    print(text)
    if args.out:
        open(args.out, 'w').write(text)


if __name__ == '__main__':
    main()
