"""Optimizer-step benchmark: DiGraP vs the AdamW it wraps vs a per-tensor Python loop.

Measured side by side, in one run, on parameter lists with the real shapes of a ViT-S/16
(~22M parameters) and a ViT-B/16 (~86M) (float32 random tensors, fixed random gradients, no
model forward):

* ``adamw``        torch.optim.AdamW alone (foreach default);
* ``digrap``       mmdigrap.DiGraP(AdamW) keeping P_{t-1} (``store_projection=True``);
* ``digrap-lean``  mmdigrap.DiGraP(AdamW, store_projection=False);
* ``loop``         a straightforward per-tensor DiGraP in the authors' style (Python ``if`` on
                   each tensor's dot product, ``.item()``), then the same AdamW step.

Per configuration: ms/step (wall and process CPU time, median of ``--repeats`` after
``--warmup``; the configurations are interleaved step by step, so background load hits all of
them alike; one thread by default on the CPU), ratio to AdamW, peak
memory of the first steps above the parameters+gradients (CPU: peak RSS via
``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``; CUDA:
``torch.cuda.max_memory_allocated``), optimizer state bytes (base + wrapper state; also in units
of P = parameter bytes) and host syncs during DiGraP's own gradient transform (CPU: calls of
``Tensor.item/tolist/__bool__/__float__/__int__/__index__/numpy`` counted by monkeypatching;
CUDA: ``torch.cuda.set_sync_debug_mode('error')``).

``--profile`` also adds ``proto`` / ``proto-lean``: :class:`ProtoDiGraP`, a reordered
transform suggested for ``mmdigrap/core`` (same results; see its docstring), and times the
pieces of the step with one thread (CPU time).

``--whole-iteration`` adds a real fwd+bwd+step iteration of mmpretrain's
``VisionTransformer(arch='dinov2-small', patch_size=14, img_size=112)`` + linear head, batch 32
at 112 px (AdamW vs DiGraP), the embedded job's shape.

Examples::

    python tools/benchmark/step_bench.py                      # CPU, vit-s + vit-b
    python tools/benchmark/step_bench.py --device cuda --repeats 50
    python tools/benchmark/step_bench.py --models none --whole-iteration --append

Targets (checked and printed): DiGraP step <= 1.5x AdamW on CPU, <= 1.3x on CUDA; >= 5x
faster than the loop on CUDA; 0 host syncs; state <= AdamW + 2P (lean: + 1P).
"""
import argparse
import contextlib
import gc
import os
import os.path as osp
import platform
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmdigrap import DiGraP  # noqa: E402
# the authors'-style per-tensor loop: the one reference of the tests
from mmdigrap.core.reference import ReferenceDiGraP as LoopDiGraP  # noqa: E402

# --------------------------------------------------------------------------------------------
# parameter lists with real ViT shapes
# --------------------------------------------------------------------------------------------
ARCHS = {  # (embed dim, depth, mlp dim, patch, image)
    'vit-s': (384, 12, 1536, 16, 224),
    'vit-b': (768, 12, 3072, 16, 224),
}


def vit_shapes(arch: str) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, shape) of every trainable tensor of a timm-style ViT/16 without a head."""
    dim, depth, mlp, patch, img = ARCHS[arch]
    tokens = (img // patch) ** 2 + 1
    shapes = [('patch_embed.proj.weight', (dim, 3, patch, patch)),
              ('patch_embed.proj.bias', (dim,)),
              ('cls_token', (1, 1, dim)), ('pos_embed', (1, tokens, dim))]
    for i in range(depth):
        b = f'blocks.{i}.'
        shapes += [(b + 'norm1.weight', (dim,)), (b + 'norm1.bias', (dim,)),
                   (b + 'attn.qkv.weight', (3 * dim, dim)), (b + 'attn.qkv.bias', (3 * dim,)),
                   (b + 'attn.proj.weight', (dim, dim)), (b + 'attn.proj.bias', (dim,)),
                   (b + 'norm2.weight', (dim,)), (b + 'norm2.bias', (dim,)),
                   (b + 'mlp.fc1.weight', (mlp, dim)), (b + 'mlp.fc1.bias', (mlp,)),
                   (b + 'mlp.fc2.weight', (dim, mlp)), (b + 'mlp.fc2.bias', (dim,))]
    shapes += [('norm.weight', (dim,)), ('norm.bias', (dim,))]
    return shapes


def make_params(arch: str, device: str, seed: int = 0) -> List[torch.nn.Parameter]:
    """Random float32 parameters with random gradients (set once, reused every step)."""
    gen = torch.Generator(device='cpu').manual_seed(seed)
    params = []
    for _, shape in vit_shapes(arch):
        p = torch.nn.Parameter((0.02 * torch.randn(shape, generator=gen)).to(device))
        p.grad = (1e-3 * torch.randn(shape, generator=gen)).to(device)
        params.append(p)
    return params


# --------------------------------------------------------------------------------------------
# prototype of a faster DiGraP transform (suggested to mmdigrap/core; used by --profile only)
# --------------------------------------------------------------------------------------------
def fast_row_cosine_sum(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Same value as ``mmdigrap.core.digrap._row_cosine_sum``, faster for conv kernels.

    ``Tensor.norm(dim=1)`` on a 4-D [o, i, kh, kw] tensor is a strided reduction that torch's
    CPU kernel runs ~80x slower than ``(x * x).sum(1).sqrt()`` (8.7 ms vs 0.1 ms for a ViT-S
    patch embedding on one core); for 2-D tensors ``norm(dim=1)`` is the faster one.
    """
    from mmdigrap.core.digrap import NORM_EPS, _tensor_cosine
    if g.dim() < 2:
        return _tensor_cosine(g, p)
    num = (g * p).sum(1)
    if g.dim() == 2:
        den = g.norm(dim=1).clamp_min(NORM_EPS) * p.norm(dim=1).clamp_min(NORM_EPS)
    else:
        den = ((g * g).sum(1).sqrt_().clamp_min_(NORM_EPS)
               * (p * p).sum(1).sqrt_().clamp_min_(NORM_EPS))
    return (num / den).sum()


class ProtoDiGraP(DiGraP):
    """DiGraP with the reordered transform suggested to the lead (float32 params, anchor
    'pretrained'; full mode; falls back to DiGraP otherwise). Same results, less work:

    1. the hyper-gradient ``Norm(g_t, P_{t-1})`` is computed FIRST (it needs no offset);
    2. the ``prev_proj`` buffers are then free: ``d = theta - theta0`` is written INTO them
       (``_foreach_copy_`` + ``_foreach_sub_``), so no parameter-sized tensor is allocated
       per step (on the CPU a fresh 1P allocation costs page faults: ViT-B shapes, one
       thread, 166 ms for ``_foreach_sub`` vs 40 ms into an existing buffer) and the transient
       peak drops by 1P;
    3. ``s = <g, d>``, ``q = ||d||^2``; ``P_t = coef * d`` in place (``_foreach_mul_``);
    4. ``g += (-omega if s < 0 else 0) * P_t`` with ``_foreach_addcmul_`` and 0-d tensor
       factors (no temporary);
    5. row-wise hyper-gradient via :func:`fast_row_cosine_sum`.
    """

    def _pre_step(self, params, grads):
        from mmdigrap.core.digrap import PROJ_EPS, batched_dot, omega_adam_update
        if (not self.anchor_policy.stored or self.hypergrad_norm != 'row'
                or any(p.dtype != torch.float32 or g.dtype != torch.float32
                       for p, g in zip(params, grads))):
            return super()._pre_step(params, grads)
        if not self.store_projection:
            return self._pre_step_lean(params, grads)
        keys = ('omega', 'omega_exp_avg', 'omega_exp_avg_sq')
        states = [self._init_state(p) for p in params]
        anchors = [a if a.dtype == torch.float32 else a.float() for a in self._anchors(params)]
        prev = [st['prev_proj'] for st in states]
        omega, m, v = (torch.stack([st[k] for st in states]) for k in keys)
        step = self.hyper_step + 1
        if self.trainable and self.mu > 0 and step > 1:
            fn = fast_row_cosine_sum if self.hypergrad_norm == 'row' else None
            if fn is None:
                from mmdigrap.core.digrap import hypergradient
                h = hypergradient(grads, prev, self.hypergrad_norm)
            else:
                h = torch.stack([fn(g, q) for g, q in zip(grads, prev)])
            omega, m, v = omega_adam_update(
                omega, m, v, h, step=step, mu=self.mu, beta1=self.betas[0],
                beta2=self.betas[1], eps=self.eps, omega_max=self.omega_max)
        torch._foreach_copy_(prev, [p.detach() for p in params])
        torch._foreach_sub_(prev, anchors)  # prev now holds d = theta - theta0
        dot = batched_dot(grads, prev)
        sq_dist = batched_dot(prev, prev)
        coef = dot / (sq_dist + PROJ_EPS)
        coef = torch.where(torch.isfinite(coef), coef, torch.zeros_like(coef))
        torch._foreach_mul_(prev, coef.unbind())  # P_t
        conflict = dot < 0
        lam = torch.where(conflict, -omega, torch.zeros_like(omega))
        torch._foreach_addcmul_(grads, prev, list(lam.unbind()))
        for key, vec in zip(keys, (omega, m, v)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        self.last_stats = dict(params=params, omega=omega, dot=dot, sq_dist=sq_dist,
                               conflict=conflict)


    def _pre_step_lean(self, params, grads):
        """Lean mode: the row-wise hyper-gradient Norm(g_t, d_t) and the projection share
        their reductions: s = sum of the row dots <g_r, d_r>, q = sum of the row ||d_r||^2."""
        from mmdigrap.core.digrap import NORM_EPS, PROJ_EPS, omega_adam_update
        keys = ('omega', 'omega_exp_avg', 'omega_exp_avg_sq', 'prev_coef')
        states = [self._init_state(p) for p in params]
        anchors = [a if a.dtype == torch.float32 else a.float() for a in self._anchors(params)]
        d = torch._foreach_sub([p.detach() for p in params], anchors)
        hs, dots, sqs = [], [], []
        for g, di in zip(grads, d):
            if g.dim() < 2:
                s_i, q_i = torch.dot(g, di), torch.dot(di, di)
                hs.append(s_i / (g.norm().clamp_min(NORM_EPS) * q_i.sqrt().clamp_min(NORM_EPS)))
            else:
                rows = (g * di).sum(1)
                rq = (di * di).sum(1)
                rg = g.norm(dim=1) if g.dim() == 2 else (g * g).sum(1).sqrt_()
                hs.append((rows / (rg.clamp_min(NORM_EPS) * rq.sqrt().clamp_min(NORM_EPS))).sum())
                s_i, q_i = rows.sum(), rq.sum()
            dots.append(s_i)
            sqs.append(q_i)
        dot, sq_dist = torch.stack(dots), torch.stack(sqs)
        omega, m, v, prev_coef = (torch.stack([st[k] for st in states]) for k in keys)
        step = self.hyper_step + 1
        if self.trainable and self.mu > 0 and step > 1:
            h = torch.sign(prev_coef) * torch.stack(hs)
            omega, m, v = omega_adam_update(
                omega, m, v, h, step=step, mu=self.mu, beta1=self.betas[0],
                beta2=self.betas[1], eps=self.eps, omega_max=self.omega_max)
        coef = dot / (sq_dist + PROJ_EPS)
        coef = torch.where(torch.isfinite(coef), coef, torch.zeros_like(coef))
        conflict = dot < 0
        lam = torch.where(conflict, -omega * coef, torch.zeros_like(coef))
        torch._foreach_addcmul_(grads, d, list(lam.unbind()))
        for key, vec in zip(keys, (omega, m, v, coef)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        self.last_stats = dict(params=params, omega=omega, dot=dot, sq_dist=sq_dist,
                               conflict=conflict)


def check_proto_equivalence(arch: str = 'vit-s', steps: int = 4) -> Dict[str, float]:
    """Max |difference| of parameters and omegas (and P in full mode) between DiGraP and
    ProtoDiGraP after ``steps`` steps, for the full and the lean mode."""
    out = {}
    for mode, kw in (('full', {}), ('lean', dict(store_projection=False))):
        pa = make_params(arch, 'cpu', seed=1)
        pb = make_params(arch, 'cpu', seed=1)
        gen = torch.Generator().manual_seed(2)
        oa = DiGraP(torch.optim.AdamW(pa, lr=1e-3), mu=0.5, omega_init=0.3, **kw)
        ob = ProtoDiGraP(torch.optim.AdamW(pb, lr=1e-3), mu=0.5, omega_init=0.3, **kw)
        for _ in range(steps):
            for x, y in zip(pa, pb):
                g = 1e-3 * torch.randn(x.shape, generator=gen) - 0.5 * (x.detach() - y.detach())
                x.grad, y.grad = g.clone(), g.clone()
            oa.step()
            ob.step()
        diff = max((x - y).abs().max().item() for x, y in zip(pa, pb))
        for x, y in zip(pa, pb):
            for k in ('omega', 'prev_proj'):
                if k in oa.state[x]:
                    diff = max(diff, (oa.state[x][k] - ob.state[y][k]).abs().max().item())
        out[mode] = diff
    return out


# --------------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def state_bytes(opt) -> int:
    """Bytes of every tensor in the optimizer state (base + wrapper)."""
    if isinstance(opt, LoopDiGraP):
        return tensor_bytes(list(opt.base.state.values())) + tensor_bytes(opt.state_tensors())
    total = tensor_bytes(list(opt.state.values()))
    if hasattr(opt, 'base_optimizer'):
        total += tensor_bytes(list(opt.base_optimizer.state.values()))
    return total


def _read_status(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the next RSS peak is not hidden by
    memory that an earlier configuration freed but the allocator kept."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory above the level at ``start()``.

    CPU: resident set size (VmRSS) and its high-water mark (VmHWM), reset by writing '5' to
    /proc/self/clear_refs (Linux); tracemalloc cannot see torch's allocations. CUDA:
    torch.cuda.max_memory_allocated after reset_peak_memory_stats.
    """

    def __init__(self, device: str):
        self.device = device
        self.ok = True
        self.base = 0

    def start(self):
        gc.collect()
        if self.device == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        _malloc_trim()
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            self.base = _read_status('VmRSS')
        except OSError:
            self.ok = False

    def peak(self) -> Optional[int]:
        if self.device == 'cuda':
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        if not self.ok:
            return None
        return _read_status('VmHWM') - self.base


_SYNC_METHODS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy')


@contextlib.contextmanager
def count_host_reads(counter: Dict[str, int]):
    """Count Python-level calls that read a tensor value on the host (CPU sync proxies)."""
    saved = {}
    for name in _SYNC_METHODS:
        orig = getattr(torch.Tensor, name)
        saved[name] = orig

        def wrapper(self, *a, _orig=orig, _name=name, **kw):
            counter[_name] = counter.get(_name, 0) + 1
            return _orig(self, *a, **kw)

        setattr(torch.Tensor, name, wrapper)
    try:
        yield counter
    finally:
        for name, orig in saved.items():
            setattr(torch.Tensor, name, orig)


def host_syncs(opt, device: str) -> Tuple[str, str]:
    """(syncs in the gradient transform, syncs in the whole step) for one step of ``opt``."""
    if device == 'cuda':
        def run(fn):
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode('error')
            try:
                fn()
                out = '0'
            except RuntimeError as err:
                out = f'>=1 ({str(err).splitlines()[0][:60]})'
            finally:
                torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize()
            return out
        if isinstance(opt, DiGraP):
            params, grads = opt._params_with_grad()
            own = run(lambda: opt._pre_step(params, grads))
        elif isinstance(opt, LoopDiGraP):
            own = run(opt.step)  # the transform cannot be separated from the loop: whole step
        else:
            own = '-'
        return own, run(opt.step)
    whole: Dict[str, int] = {}
    own: Dict[str, int] = {}
    if isinstance(opt, DiGraP):
        orig_pre = opt._pre_step

        def counted_pre(params, grads):
            with count_host_reads(own):
                return orig_pre(params, grads)

        opt._pre_step = counted_pre
        try:
            with count_host_reads(whole):
                opt.step()
        finally:
            del opt._pre_step
        return str(sum(own.values())), str(sum(whole.values()))
    if isinstance(opt, LoopDiGraP):
        base_reads: Dict[str, int] = {}
        with count_host_reads(whole):
            opt.step()
        with count_host_reads(base_reads):
            opt.base.step()
        return str(sum(whole.values()) - sum(base_reads.values())), str(sum(whole.values()))
    with count_host_reads(whole):
        opt.step()
    return '-', str(sum(whole.values()))


# --------------------------------------------------------------------------------------------
# the step benchmark
# --------------------------------------------------------------------------------------------
CONFIGS = ('adamw', 'digrap', 'digrap-lean', 'loop')


def build(name: str, params, lr=1e-4):
    base = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if name == 'adamw':
        return base
    if name == 'digrap':
        return DiGraP(base, mu=0.5, omega_init=0.1)
    if name == 'digrap-lean':
        return DiGraP(base, mu=0.5, omega_init=0.1, store_projection=False)
    if name == 'loop':
        return LoopDiGraP(base, mu=0.5)
    if name == 'proto':
        return ProtoDiGraP(base, mu=0.5, omega_init=0.1)
    if name == 'proto-lean':
        return ProtoDiGraP(base, mu=0.5, omega_init=0.1, store_projection=False)
    raise ValueError(name)


def bench_model(arch: str, device: str, repeats: int, warmup: int, configs=CONFIGS):
    params = make_params(arch, device)
    n_params = sum(p.numel() for p in params)
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    rows = {c: dict(config=c) for c in configs}
    opts = {}
    for c in configs:
        # 1. memory: peak above the current level during the first two steps (the first
        #    creates the state); 2. host syncs, counted during the second step
        mem = PeakMemory(device)
        mem.start()
        opt = build(c, params)
        opt.step()
        sync(device)
        rows[c]['sync_own'], rows[c]['sync_all'] = host_syncs(opt, device)
        rows[c]['peak'] = mem.peak()
        rows[c]['state'] = state_bytes(opt)
        for _ in range(max(warmup - 2, 0)):
            opt.step()
        opts[c] = opt
    # 3. time, interleaved: every repeat runs one step of every configuration
    times = {c: [] for c in configs}
    cpu_times = {c: [] for c in configs}
    for _ in range(repeats):
        for c, opt in opts.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            opt.step()
            sync(device)
            times[c].append(time.perf_counter() - t0)
            cpu_times[c].append(time.process_time() - c0)
    del opts, opt
    gc.collect()
    for c in configs:
        ts = sorted(times[c])
        rows[c]['ms'] = 1e3 * statistics.median(ts)
        rows[c]['ms_min'] = 1e3 * ts[0]
        q = len(ts) // 4
        rows[c]['ms_lo'], rows[c]['ms_hi'] = 1e3 * ts[q], 1e3 * ts[-1 - q]
        rows[c]['cpu_ms'] = 1e3 * statistics.median(cpu_times[c])
    base_ms = rows['adamw']['ms'] if 'adamw' in rows else None
    base_state = rows['adamw']['state'] if 'adamw' in rows else None
    base_min = rows['adamw']['ms_min'] if 'adamw' in rows else None
    for c in configs:
        rows[c]['ratio'] = rows[c]['ms'] / base_ms if base_ms else float('nan')
        rows[c]['ratio_min'] = rows[c]['ms_min'] / base_min if base_min else float('nan')
        rows[c]['ratio_cpu'] = (rows[c]['cpu_ms'] / rows['adamw']['cpu_ms']
                                if 'adamw' in rows else float('nan'))
        rows[c]['state_P'] = rows[c]['state'] / p_bytes
        rows[c]['extra_P'] = ((rows[c]['state'] - base_state) / p_bytes
                              if base_state is not None else float('nan'))
    del params
    gc.collect()
    return dict(arch=arch, n_params=n_params, n_tensors=len(vit_shapes(arch)),
                p_bytes=p_bytes, rows=[rows[c] for c in configs])


# --------------------------------------------------------------------------------------------
# profile of DiGraP's pieces + prototypes of alternatives
# --------------------------------------------------------------------------------------------
def _median_ms(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median time of ``fn`` after one warm-up call. CPU: process CPU time (all threads; the
    profile runs with one thread), much less sensitive to other jobs than wall time. CUDA:
    wall time between synchronisations."""
    clock = time.perf_counter if device == 'cuda' else time.process_time
    fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        sync(device)
        t0 = clock()
        fn()
        sync(device)
        ts.append(clock() - t0)
    return 1e3 * statistics.median(ts)


def _fused_reduce(g, P, p, a):
    """Pass 1 of a fused transform (one tensor; rows along dim 1; 1-D tensors viewed as one
    row): row-wise hyper-gradient with P_{t-1}, s = <g, d>, q = ||d||^2 (d = p - a)."""
    d = p - a
    num = (g * P).sum(1)
    ng = (g * g).sum(1).sqrt().clamp_min(1e-12)
    n_p = (P * P).sum(1).sqrt().clamp_min(1e-12)
    return torch.stack([(num / (ng * n_p)).sum(), (g * d).sum(), (d * d).sum()])


def _fused_write(g, P, p, a, coef, lam):
    """Pass 2: P_t = coef * d into the prev_proj buffer, g += lam * P_t (lam = -omega on
    conflict, else 0)."""
    d = p - a
    P.copy_(coef * d)
    g.add_(lam * coef * d)


def fused_transform_prototype(params, grads, anchors, prev, device, repeats):
    """Time the DiGraP transform as two torch.compile'd kernels per tensor (dynamic shapes):
    ~4 reads + 2 writes per element instead of ~20 passes. Returns a profile row or None
    when Inductor is unusable here (no C++ compiler, ...)."""
    try:
        reduce_c = torch.compile(_fused_reduce, dynamic=True)
        write_c = torch.compile(_fused_write, dynamic=True)
        rows = [(g.view(1, -1) if g.dim() < 2 else g, q.view(1, -1) if q.dim() < 2 else q,
                 p.detach().view(1, -1) if p.dim() < 2 else p.detach(),
                 a.view(1, -1) if a.dim() < 2 else a)
                for g, q, p, a in zip(grads, prev, params, anchors)]
        n = len(rows)
        coef = list(torch.full((n,), 1e-3, device=device).unbind())
        lam = list(torch.full((n,), -0.1, device=device).unbind())

        def run():
            red = torch.stack([reduce_c(*r) for r in rows])
            for r, c, l in zip(rows, coef, lam):
                write_c(*r, c, l)
            return red

        t0 = time.perf_counter()
        run()
        compile_s = time.perf_counter() - t0
        # same values as mmdigrap.core (checked on copies)
        from mmdigrap.core import digrap as core
        red = torch.stack([_fused_reduce(*r) for r in rows])
        ref_h = core.hypergradient(grads, prev, 'row')
        d = torch._foreach_sub([p.detach() for p in params], anchors)
        err = max((red[:, 0] - ref_h).abs().max().item(),
                  ((red[:, 1] - core.batched_dot(grads, d)).abs()
                   / core.batched_dot(grads, d).abs().clamp_min(1e-12)).max().item())
        ms = _median_ms(run, device, repeats)
    except Exception as err:  # noqa: BLE001  (a prototype: report, do not fail the benchmark)
        return ('ALT fused transform (torch.compile) FAILED', float('nan'),
                f'{type(err).__name__}: {str(err)[:80]}')
    return ('ALT whole transform as 2 torch.compile(dynamic=True) kernels per tensor', ms,
            f'first call (compile) {compile_s:.0f} s; max deviation of h (abs) / s (rel) '
            f'from mmdigrap.core: {err:.1e}; omega update not included (0.04 ms)')


def profile_pieces(arch: str, device: str, repeats: int) -> List[Tuple[str, float, str]]:
    """Time the pieces of ``mmdigrap.core.digrap.digrap_project_`` (as DiGraP calls it) and
    alternative formulations. Returns (piece, ms, note)."""
    from mmdigrap.core import digrap as core
    params = make_params(arch, device)
    grads = [p.grad for p in params]
    anchors = [p.detach().clone().add_(1e-3) for p in params]
    prev = [torch.randn_like(p) for p in params]
    offsets = torch._foreach_sub([p.detach() for p in params], anchors)
    n = len(params)
    omega = torch.full((n,), 0.1, device=device)
    m = torch.zeros(n, device=device)
    v = torch.zeros(n, device=device)
    coef = torch.full((n,), -1e-3, device=device)
    base = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    base.step()
    out = []

    def add(name, fn, note=''):
        out.append((name, _median_ms(fn, device, repeats), note))

    add('AdamW.step (reference)', base.step, 'foreach')
    for name, cls, kw in (('DiGraP.step (full)', DiGraP, {}),
                          ('DiGraP.step (lean)', DiGraP, dict(store_projection=False)),
                          ('ProtoDiGraP.step (prototype, full)', ProtoDiGraP, {}),
                          ('ProtoDiGraP.step (prototype, lean)', ProtoDiGraP,
                           dict(store_projection=False))):
        opt = cls(torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0), mu=0.5,
                  omega_init=0.1, **kw)
        opt.step()
        add(name, opt.step, 'incl. AdamW')
        pg = opt._params_with_grad()
        add(name.replace('.step', '._pre_step'), lambda: opt._pre_step(*pg),
            'the transform alone')
        del opt, pg
    add('offsets: _foreach_sub(p, anchor)', lambda: torch._foreach_sub(
        [p.detach() for p in params], anchors), 'allocates 1P')
    add('batched_dot(g, d): torch.dot per tensor + stack',
        lambda: core.batched_dot(grads, offsets))
    add('batched_dot(d, d)', lambda: core.batched_dot(offsets, offsets))
    add('hypergradient row (current: (g*P).sum(1) + 2 row norms)',
        lambda: core.hypergradient(grads, prev, 'row'))
    add('hypergradient tensor (dot + 2 norms)', lambda: core.hypergradient(grads, prev, 'tensor'))
    add('omega_adam_update (N scalars)', lambda: core.omega_adam_update(
        omega, m, v, coef, step=3, mu=0.5, beta1=0.9, beta2=0.999, eps=1e-8, omega_max=1.0))
    coefs = coef.unbind()
    add('P_t: _foreach_copy_ + _foreach_mul_', lambda: (
        torch._foreach_copy_(prev, offsets), torch._foreach_mul_(prev, coefs)))
    lam = (-omega * coef).unbind()
    scratch = [o.clone() for o in offsets]
    add('g += lam*d: _foreach_mul_ + _foreach_add_ (scratch offsets)', lambda: (
        torch._foreach_mul_(scratch, lam), torch._foreach_add_(grads, scratch)))
    add('full digrap_project_ (step 3, d written into the P buffers)', lambda: core.digrap_project_(
        grads, [torch.sub(p.detach(), a, out=b) for p, a, b in zip(params, anchors, prev)],
        omega, m, v, coef, step=3, mu=0.5, proj_out=prev))
    add('full digrap_project_ (step 3, lean)', lambda: core.digrap_project_(
        grads, torch._foreach_sub([p.detach() for p in params], anchors), omega, m, v, coef,
        step=3, mu=0.5))

    # ---- alternatives
    def row_bmm(gs, ps):
        res = []
        for g, p in zip(gs, ps):
            if g.dim() < 2:
                res.append(core._tensor_cosine(g, p))
                continue
            g2 = g.movedim(1, -1).reshape(-1, g.shape[1])
            p2 = p.movedim(1, -1).reshape(-1, p.shape[1])
            num = torch.bmm(g2.unsqueeze(1), p2.unsqueeze(2)).reshape(-1)
            den = (torch.linalg.vector_norm(g2, dim=1).clamp_min(core.NORM_EPS)
                   * torch.linalg.vector_norm(p2, dim=1).clamp_min(core.NORM_EPS))
            res.append((num / den).sum())
        return torch.stack(res)

    add('ALT hypergradient row: bmm row dots (no g*P temp) + vector_norm',
        lambda: row_bmm(grads, prev), 'same values')
    add('ALT hypergradient row: fast_row_cosine_sum ((x*x).sum(1).sqrt() for >2-D)',
        lambda: torch.stack([fast_row_cosine_sum(g, q) for g, q in zip(grads, prev)]),
        'same values')
    conv = [(g, q) for g, q in zip(grads, prev) if g.dim() > 2]
    if conv:
        g4, p4 = conv[0]
        add(f'  patch embedding {tuple(g4.shape)}: g.norm(dim=1)', lambda: g4.norm(dim=1),
            'strided reduction')
        add(f'  patch embedding {tuple(g4.shape)}: (g*g).sum(1).sqrt()',
            lambda: (g4 * g4).sum(1).sqrt(), 'same values')
    buf = [torch.empty_like(p) for p in params]
    add('ALT offsets into an existing buffer: _foreach_copy_ + _foreach_sub_', lambda: (
        torch._foreach_copy_(buf, [p.detach() for p in params]), torch._foreach_sub_(buf, anchors)),
        'no allocation (ProtoDiGraP uses prev_proj)')
    fused = fused_transform_prototype(params, grads, anchors, prev, device, repeats)
    if fused is not None:
        out.append(fused)
    add('ALT g += lam*P: _foreach_addcmul_(g, P, [0-d lam])',
        lambda: torch._foreach_addcmul_(grads, prev, list(torch.zeros(n, device=device).unbind())),
        'no temporary')

    def row_stacked(gs, ps):
        # one fused pass for the 1-D tensors: concatenate them (small) -> cosines per segment
        two = [(g, p) for g, p in zip(gs, ps) if g.dim() >= 2]
        one = [(g, p) for g, p in zip(gs, ps) if g.dim() < 2]
        res = [(g * p).sum(1).div_(g.norm(dim=1).clamp_min(core.NORM_EPS)
                                    * p.norm(dim=1).clamp_min(core.NORM_EPS)).sum()
               for g, p in two]
        if one:
            dots = torch.stack([torch.dot(g.reshape(-1), p.reshape(-1)) for g, p in one])
            ng = torch.stack(torch._foreach_norm([g for g, _ in one]))
            npp = torch.stack(torch._foreach_norm([p for _, p in one]))
            res.append((dots / (ng.clamp_min(core.NORM_EPS) * npp.clamp_min(core.NORM_EPS))))
        return res

    add('ALT hypergradient row: _foreach_norm for the 1-D tensors',
        lambda: row_stacked(grads, prev), 'values identical up to rounding')
    add('ALT norms: torch._foreach_norm(d) (q = ||d||^2)', lambda: torch._foreach_norm(offsets),
        'one kernel launch per dtype/device group')

    def fused_proj(gs, ds, Ps, c, lm):
        for g, d, P, ci, li in zip(gs, ds, Ps, c, lm):
            torch.mul(d, ci, out=P)
            g.add_(d * li)
    add('ALT P_t = d*c via torch.mul(out=) per tensor + g.add_(d*lam)',
        lambda: fused_proj(grads, offsets, prev, coefs, lam))

    add('ALT g += lam*d: _foreach_add_(g, _foreach_mul(d, lam)) (no scratch reuse)',
        lambda: torch._foreach_add_(grads, torch._foreach_mul(offsets, lam)))
    return out


# --------------------------------------------------------------------------------------------
# whole iteration on the embedded job's shape
# --------------------------------------------------------------------------------------------
def whole_iteration(device: str, repeats: int, warmup: int, batch: int = 32, img: int = 112):
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(0)
    backbone = VisionTransformer(arch='dinov2-small', patch_size=14, img_size=img)
    head = torch.nn.Linear(384, 10)
    model = torch.nn.ModuleDict(dict(backbone=backbone, head=head)).to(device)
    params = list(model.parameters())
    x = torch.randn(batch, 3, img, img, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    opts = {'adamw': torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)}
    opts['digrap'] = DiGraP(torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0), mu=0.5,
                            omega_init=0.1, exclude=[r'^head\.'],
                            named_parameters=model.named_parameters())
    times = {c: [] for c in opts}
    cpu = {c: [] for c in opts}
    steps = {c: [] for c in opts}

    def iteration(opt):
        for p in params:
            p.grad = None
        feats = model['backbone'](x)[-1]
        loss = F.cross_entropy(model['head'](feats), y)
        loss.backward()
        sync(device)
        t0 = time.perf_counter()
        opt.step()
        sync(device)
        return time.perf_counter() - t0

    for _ in range(warmup):
        for opt in opts.values():
            iteration(opt)
    for _ in range(repeats):
        for c, opt in opts.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            dt_step = iteration(opt)
            times[c].append(time.perf_counter() - t0)
            cpu[c].append(time.process_time() - c0)
            steps[c].append(dt_step)
    res = {c: dict(iter_ms=1e3 * statistics.median(times[c]),
                   step_ms=1e3 * statistics.median(steps[c]),
                   iter_lo=1e3 * min(times[c]), iter_hi=1e3 * max(times[c]),
                   cpu_ms=1e3 * statistics.median(cpu[c])) for c in opts}
    n = sum(p.numel() for p in params)
    return dict(n_params=n, batch=batch, img=img, res=res)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def machine_info(device: str, load_start=None) -> List[str]:
    cpu = platform.processor() or 'unknown'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    lines = [f'- CPU: {cpu}; {os.cpu_count()} logical cores visible; torch threads: '
             f'{torch.get_num_threads()}',
             f'- torch {torch.__version__}, Python {platform.python_version()}, '
             f'{platform.system()} {platform.release()}']
    try:
        end = os.getloadavg()
        start = load_start or end
        lines.append(f'- load average (1/5/15 min) at start: {start[0]:.2f} / {start[1]:.2f} / '
                     f'{start[2]:.2f}, at end: {end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f} '
                     f'on {os.cpu_count()} cores (when it exceeds the core count other jobs '
                     'compete for the cores: wall times are noisy, CPU times much less so)')
    except OSError:
        pass
    if device == 'cuda':
        lines.append(f'- GPU: {torch.cuda.get_device_name()}')
    return lines


def _mb(x):
    return '-' if x is None else f'{x / 2 ** 20:.0f}'


def step_table(result, device='cpu') -> List[str]:
    cpu_cols = device == 'cpu'
    head = ('| config | wall ms/step median | IQR | min | x AdamW (wall median) | x AdamW (wall min) '
            + ('| CPU ms/step median | x AdamW (CPU time) ' if cpu_cols else '')
            + '| peak mem, first 2 steps (MiB) | of which not state (MiB) | state (MiB) '
            '| state / P | vs AdamW | host syncs: transform / whole step |')
    lines = [f"### {result['arch']}: {result['n_params'] / 1e6:.1f} M parameters in "
             f"{result['n_tensors']} tensors (P = {result['p_bytes'] / 2 ** 20:.0f} MiB)", '',
             head, '|' + '|'.join(['---'] * (head.count('|') - 1)) + '|']
    for r in result['rows']:
        transient = None if r['peak'] is None else r['peak'] - r['state']
        lines.append(
            f"| {r['config']} | {r['ms']:.1f} | {r['ms_lo']:.1f}-{r['ms_hi']:.1f} | "
            f"{r['ms_min']:.1f} | {r['ratio']:.2f} | {r['ratio_min']:.2f} | "
            + (f"{r['cpu_ms']:.1f} | {r['ratio_cpu']:.2f} | " if cpu_cols else '')
            + f"{_mb(r['peak'])} | {_mb(transient)} | {_mb(r['state'])} | {r['state_P']:.2f} | "
            f"{r['extra_P']:+.2f} P | {r['sync_own']} / {r['sync_all']} |")
    return lines


def check_targets(results, device: str, iteration=None) -> List[Tuple[str, str, bool]]:
    checks = []
    limit = 1.5 if device == 'cpu' else 1.3
    for res in results:
        rows = {r['config']: r for r in res['rows']}
        a = res['arch']
        for c in ('digrap', 'digrap-lean', 'proto', 'proto-lean'):
            if c in rows:
                r = rows[c]
                if c.startswith('proto'):
                    c = f'{c} (prototype in this script, not mmdigrap)'
                if device == 'cpu':  # judged on CPU time: wall time is at the mercy of other jobs
                    checks.append((f'{a} {c} step <= {limit}x AdamW (cpu; judged on CPU time)',
                                   f"{r['ratio_cpu']:.2f}x CPU time ({r['ratio']:.2f}x wall "
                                   f"median, {r['ratio_min']:.2f}x wall min)",
                                   r['ratio_cpu'] <= limit))
                else:
                    checks.append((f'{a} {c} step <= {limit}x AdamW ({device})',
                                   f"{r['ratio']:.2f}x", r['ratio'] <= limit))
        if 'loop' in rows and 'digrap' in rows:
            key = 'cpu_ms' if device == 'cpu' else 'ms'
            speedup = rows['loop'][key] / rows['digrap'][key]
            checks.append((f'{a} digrap >= 5x faster than the loop'
                           + (' (target is for CUDA; informative on CPU)' if device == 'cpu'
                              else ''), f'{speedup:.2f}x',
                           speedup >= 5 if device == 'cuda' else None))
        for c, extra in (('digrap', 2.0), ('digrap-lean', 1.0)):
            if c in rows:
                checks.append((f'{a} {c} state <= AdamW + {extra:.0f}P',
                               f"AdamW {rows[c]['extra_P']:+.2f}P",
                               rows[c]['extra_P'] <= extra + 1e-3))
            if c in rows:
                own = rows[c]['sync_own']
                checks.append((f'{a} {c}: 0 host syncs in the DiGraP transform', own,
                               own == '0'))
    if iteration is not None:
        r = iteration['res']
        ov = r['digrap']['iter_ms'] / r['adamw']['iter_ms'] - 1
        ov_step = (r['digrap']['step_ms'] - r['adamw']['step_ms']) / r['adamw']['iter_ms']
        ov_cpu = r['digrap']['cpu_ms'] / r['adamw']['cpu_ms'] - 1
        checks.append(('whole iteration (dinov2-small, b32, 112px) overhead <= 3%',
                       f'{100 * ov:+.1f}% wall, {100 * ov_cpu:+.1f}% CPU time; '
                       f'{100 * ov_step:+.1f}% from the step times', ov_step <= 0.03))
    return checks


def render(args, results, iteration, profile, device) -> str:
    lines = ['# DiGraP optimizer-step benchmark', '',
             f'Command: `{" ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1]] + sys.argv)}`',
             f'Date: {time.strftime("%Y-%m-%d %H:%M:%S %Z")}', '', '## Machine', '']
    lines += machine_info(device, getattr(args, 'load_start', None))
    lines += ['', f'Device: **{device}**; {args.repeats} timed steps per configuration '
              f'(median; IQR = inter-quartile range) after {max(args.warmup, 2)} warm-up steps, '
              'configurations interleaved step by step. CPU time = process CPU time of the '
              'step (all threads; insensitive to waiting for the cores, which other jobs share '
              'here), the basis of the CPU speed targets. DiGraP: mu=0.5, row-wise '
              'hyper-gradient, pretrained anchor in float32; AdamW lr=1e-4, foreach default. '
              'Memory: peak above the parameters and gradients during the first '
              '2 steps (state creation + step temporaries; CPU = peak RSS, '
              'CUDA = max_memory_allocated). State = bytes of all optimizer-state tensors. '
              'Host syncs: CPU = Python-level calls of Tensor.item/tolist/__bool__/__float__/'
              '__int__/__index__/numpy; CUDA = torch.cuda.set_sync_debug_mode("error"); '
              '"transform" = inside DiGraP\'s gradient transform (for the loop: whole loop '
              'minus the AdamW step), "whole step" includes AdamW itself (torch\'s AdamW '
              'reads each per-parameter `step` counter with .item() on the CPU path).', '']
    if results:
        lines += ['## Optimizer step', '']
        for res in results:
            lines += step_table(res, device) + ['']
    if iteration is not None:
        r = iteration['res']
        lines += ['## Whole training iteration (the embedded job\'s shape)', '',
                  f"mmpretrain VisionTransformer(arch='dinov2-small', patch_size=14, "
                  f"img_size={iteration['img']}) + Linear(384, 10) head "
                  f"({iteration['n_params'] / 1e6:.1f} M params), batch {iteration['batch']}, "
                  f"{iteration['img']} px, fwd + bwd + step; DiGraP excludes the head.", '',
                  '| optimizer | wall ms/iteration (median) | min-max | CPU ms/iteration (median) '
                  '| of which step, wall ms (median) |',
                  '|---|---:|---|---:|---:|']
        for c, v in r.items():
            lines.append(f"| {c} | {v['iter_ms']:.0f} | {v['iter_lo']:.0f}-{v['iter_hi']:.0f} "
                         f"| {v['cpu_ms']:.0f} | {v['step_ms']:.1f} |")
        ov = r['digrap']['iter_ms'] / r['adamw']['iter_ms'] - 1
        ov_cpu = r['digrap']['cpu_ms'] / r['adamw']['cpu_ms'] - 1
        ov_step = (r['digrap']['step_ms'] - r['adamw']['step_ms']) / r['adamw']['iter_ms']
        lines += ['', f'Overhead of DiGraP on the whole iteration: {100 * ov:+.1f}% '
                  f'(difference of the wall medians; noisy on a shared machine), '
                  f'{100 * ov_cpu:+.1f}% (CPU time) and '
                  f'{100 * ov_step:+.2f}% (extra step time / AdamW iteration time).', '']
    checks = check_targets(results, device, iteration)
    if checks:
        lines += ['## Targets', '', '| target | measured | met |', '|---|---|---|']
        for name, val, ok in checks:
            lines.append(f"| {name} | {val} | {'-' if ok is None else ('yes' if ok else '**no**')} |")
        lines.append('')
    if profile:
        lines += ['## Profile of the DiGraP step pieces', '',
                  'Process CPU time, ONE thread (less sensitive to the other jobs than the wall '
                  'times above), median. `ALT` rows are prototypes of faster formulations; '
                  '`ProtoDiGraP` (in this script) combines them: hyper-gradient first, then the '
                  'offset written into the prev_proj buffer (no 1P allocation per step), '
                  '`_foreach_addcmul_` for the projection, `(x*x).sum(1).sqrt()` row norms for '
                  'conv kernels. `proto` in the tables above is that prototype.', '']
        eq = profile.get('equivalence')
        if eq is not None:
            lines += ['ProtoDiGraP vs DiGraP after 4 steps on ViT-S shapes, max |difference| '
                      'of parameters, omegas and P: '
                      + ', '.join(f'{k} mode {v:.1e}' for k, v in eq.items()) + '.', '']
        for arch, rows in profile.items():
            if arch == 'equivalence':
                continue
            lines += [f'### {arch}', '', '| piece | ms (median) | note |', '|---|---:|---|']
            lines += [f'| {n} | {ms:.2f} | {note} |' for n, ms, note in rows]
            lines.append('')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--models', default='vit-s,vit-b',
                        help="comma list of vit-s, vit-b; 'none' for no step benchmark")
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed steps per configuration (default: 7 on CPU, 50 on CUDA)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: 1 on CPU, so that CPU time is '
                        'not inflated by OpenMP threads spinning while other jobs hold the '
                        'cores; use e.g. --threads 2 on a quiet machine)')
    parser.add_argument('--whole-iteration', action='store_true',
                        help='also time fwd+bwd+step of dinov2-small (b32, 112 px)')
    parser.add_argument('--iter-repeats', type=int, default=None,
                        help='timed iterations per optimizer (default: 4 on CPU, 30 on CUDA)')
    parser.add_argument('--profile', action='store_true',
                        help='time the pieces of the DiGraP step and alternatives')
    parser.add_argument('--out', default=osp.join('docs', 'results', 'step_bench.md'),
                        help="markdown output ('' to only print)")
    parser.add_argument('--append', action='store_true', help='append to --out')
    args = parser.parse_args(argv)
    try:
        args.load_start = os.getloadavg()
    except OSError:
        args.load_start = None
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    if args.threads is None and args.device == 'cpu':
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 10 if args.device == 'cpu' else 50
    if args.iter_repeats is None:
        args.iter_repeats = 4 if args.device == 'cpu' else 30
    models = [m for m in args.models.split(',') if m and m != 'none']
    for m in models:
        if m not in ARCHS:
            parser.error(f'unknown model {m!r}; choose from {sorted(ARCHS)}')

    results, profile, iteration = [], {}, None
    for m in models:
        t0 = time.time()
        configs = CONFIGS + (('proto', 'proto-lean') if args.profile else ())
        results.append(bench_model(m, args.device, args.repeats, args.warmup, configs))
        print(f'[{m}] done in {time.time() - t0:.0f}s', file=sys.stderr)
        if args.profile:
            threads = torch.get_num_threads()
            if args.device == 'cpu':
                torch.set_num_threads(1)
            try:
                profile[m] = profile_pieces(m, args.device, max(3, args.repeats))
            finally:
                torch.set_num_threads(threads)
            print(f'[{m}] profile done', file=sys.stderr)
    if args.profile:
        profile['equivalence'] = check_proto_equivalence()
    if args.whole_iteration:
        t0 = time.time()
        iteration = whole_iteration(args.device, args.iter_repeats, 1)
        print(f'[whole iteration] done in {time.time() - t0:.0f}s', file=sys.stderr)
    text = render(args, results, iteration, profile, args.device)
    print(text)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'a' if args.append else 'w') as f:
            f.write(('\n---\n\n' if args.append else '') + text)
    return results, iteration, profile


if __name__ == '__main__':
    main()
