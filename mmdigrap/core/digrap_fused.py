"""The fused DiGraP transform: two passes over memory instead of about twenty.

Same math as :func:`mmdigrap.core.digrap.digrap_project_` with the hyper-gradient of
:func:`~mmdigrap.core.digrap.hypergradient` (``docs/algorithm.md``, "DiGraP"; paper Eqs. 3-8),
written as two functions over the whole tensor list that ``torch.compile`` turns into one
inductor kernel per tensor and pass (C++/OpenMP on the CPU, Triton on CUDA):

* pass 1, :func:`reduce_pass` -- reads g, theta, theta0 and P_{t-1} (full mode) once and
  returns, per tensor, the hyper-gradient h (the row-wise cosine sum or the whole-tensor
  cosine), s = <g, d> and q = ||d||^2 (d = theta - theta0). The row reductions are shared:
  s and q are the sums of the row sums, and in the lean mode the hyper-gradient partner *is* d;
* between the passes, the N-scalar work in eager (hyper-Adam, coefficients; no host sync and
  no recompilation when ``mu`` or ``omega_max`` are scheduled);
* pass 2, :func:`apply_pass` -- reads g, theta, theta0 once more and writes g' = g + lam * d
  and (full mode) P_t = coef * d into the ``prev_proj`` buffers.

Bytes per element of a float32 tensor: full mode 4 + 3 reads and 2 writes (9 x 4 B), lean mode
3 + 3 reads and 1 write (7 x 4 B); the eager path moves about 20 x 4 B. Low-precision (bf16 /
fp16) gradients and parameters are upcast inside the kernels, never copied.

:class:`FusedDiGraP` holds the compiled functions. ``torch.compile`` caches one graph per list
signature (device, dtypes, shapes: in practice once per bucket of a model), so the one-time
cost is paid at the first step of a process; ``load_state_dict`` keeps it (the compiled
functions belong to the optimizer object, not to its state); a new process pays it again,
mostly served from inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default
``/tmp/torchinductor_<user>``). Everything here is pure PyTorch; the functions run eagerly too
(the tests check the math that way, without compiling).
"""
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .digrap import NORM_EPS, PROJ_EPS, omega_adam_update

__all__ = ['reduce_pass', 'apply_pass', 'coefficients', 'chunk_bounds', 'FusedDiGraP',
           'compile_available']


def _rows(x: Tensor, row: bool) -> Tensor:
    """x as (rows, cols): rows along dim 1 for the row-wise norm of tensors with >= 2 dims
    (``F.normalize(dim=1)``: dim 1 moved last), else the whole tensor as one row."""
    if row and x.dim() >= 2:
        return x.movedim(1, -1).reshape(-1, x.shape[1])
    return x.reshape(1, -1)


def reduce_pass(grads: Sequence[Tensor], params: Sequence[Tensor],
                anchors: Sequence[Optional[Tensor]], prev: Optional[Sequence[Tensor]],
                row: bool) -> Tensor:
    """Pass 1: every reduction of the step in one read of each input.

    Args:
        grads: N raw gradients g (any float dtype; computed in float32, float64 stays).
        params: N parameters theta (shapes of ``grads``).
        anchors: N anchors theta0 on the parameters' devices, or None entries (zero anchor).
        prev: N buffers P_{t-1} (full mode) or None (lean mode: the partner of the
            hyper-gradient is d_t, algorithm.md §11).
        row: True for ``hypergrad_norm='row'`` (row cosines over dim 1 for >= 2-D tensors,
            the whole-tensor cosine for the others), False for 'tensor'.

    Returns:
        (3, N) tensor of the wide dtype: rows h (hyper-gradient, un-signed in the lean mode),
        s = <g, d>, q = ||d||^2. No host sync.
    """
    out = []
    for i, (g, p) in enumerate(zip(grads, params)):
        wide = torch.float64 if g.dtype == torch.float64 else torch.float32
        g2 = _rows(g, row).to(wide)
        d2 = _rows(p, row).to(wide)
        if anchors[i] is not None:
            d2 = d2 - _rows(anchors[i], row).to(wide)
        x2 = d2 if prev is None else _rows(prev[i], row).to(wide)
        gx = (g2 * x2).sum(1)
        gn = (g2 * g2).sum(1).sqrt().clamp_min(NORM_EPS)
        xn = (x2 * x2).sum(1)
        if prev is None:
            s, q = gx.sum(), xn.sum()
        else:
            s, q = (g2 * d2).sum(1).sum(), (d2 * d2).sum(1).sum()
        h = (gx / (gn * xn.sqrt().clamp_min(NORM_EPS))).sum()
        out.append(torch.stack([h, s, q]))
    return torch.stack(out, 1)


def apply_pass(grads: List[Tensor], params: Sequence[Tensor],
               anchors: Sequence[Optional[Tensor]], proj_out: Optional[List[Tensor]],
               coef: Tensor, lam: Tensor) -> None:
    """Pass 2: ``g += lam_i * d`` and (if ``proj_out``) ``P_t = coef_i * d``, in place.

    Args:
        grads, params, anchors: as for :func:`reduce_pass`; ``grads`` are overwritten.
        proj_out: N ``prev_proj`` buffers receiving P_t, or None (lean mode).
        coef: (N,) s / (q + 1e-8); lam: (N,) -omega * coef on conflict (s < 0), else 0.
    """
    for i, (g, p) in enumerate(zip(grads, params)):
        wide = coef.dtype
        d = p.to(wide)
        if anchors[i] is not None:
            d = d - anchors[i].to(wide)
        if proj_out is not None:
            proj_out[i].copy_(d * coef[i])
        g.copy_(g.to(wide) + d * lam[i])


def coefficients(red: Tensor, omega: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                 hgrad_sign: Optional[Tensor], *, train: bool, step: int, mu: float,
                 beta1: float, beta2: float, eps: float, omega_max: float
                 ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The N-scalar work between the passes, exactly as ``digrap_project_`` does it.

    Args:
        red: (3, N) output of :func:`reduce_pass`.
        omega, exp_avg, exp_avg_sq: (N,) state before the step.
        hgrad_sign: None (full mode) or (N,) sign(c_{t-1}) (lean mode: P_{t-1} ~ c_{t-1} d_t).
        train: do the hyper-update (trainable, mu > 0 and hyper-step > 1).
        step, mu, beta1, beta2, eps, omega_max: the hyper-Adam settings (Eq. 8).

    Returns:
        (omega, exp_avg, exp_avg_sq, coef, lam), (N,) each; lam = -omega * coef where s < 0.
    """
    h, dot, sq = red[0], red[1], red[2]
    if train:
        if hgrad_sign is not None:
            h = hgrad_sign * h
        omega, exp_avg, exp_avg_sq = omega_adam_update(
            omega, exp_avg, exp_avg_sq, h, step=step, mu=mu, beta1=beta1, beta2=beta2, eps=eps,
            omega_max=omega_max)
    coef = dot / (sq + PROJ_EPS)
    coef = torch.where(torch.isfinite(coef), coef, torch.zeros_like(coef))
    lam = torch.where(dot < 0, -omega * coef, torch.zeros_like(coef))
    return omega, exp_avg, exp_avg_sq, coef, lam


_COMPILE_OK: Dict[str, bool] = {}


def compile_available(device: torch.device) -> bool:
    """Whether ``torch.compile`` can be tried on ``device`` (inductor needs a C++ compiler on
    the CPU and Triton on CUDA); the first real compilation decides for good."""
    key = torch.device(device).type
    if key not in _COMPILE_OK:
        ok = hasattr(torch, 'compile')
        if ok and key == 'cpu':
            from shutil import which
            ok = any(which(c) for c in ('g++', 'c++', 'clang++'))
        elif ok and key == 'cuda':
            try:
                import triton  # noqa: F401
            except ImportError:
                ok = False
        elif key not in ('cpu', 'cuda'):
            ok = False
        _COMPILE_OK[key] = ok
    return _COMPILE_OK[key]


def chunk_bounds(signatures: Sequence[Tuple], max_period: int = 32) -> List[Tuple[int, int]]:
    """Split a tensor list into windows whose signatures repeat, so one compiled graph serves
    many windows (a ViT's 12 blocks share one graph: compile time ~ 1 block, not 12).

    Args:
        signatures: per tensor a hashable (shape, dtypes, ...) key.
        max_period: longest repeat unit searched (a window is at most this long).

    Returns:
        [(start, stop)] covering the list in order; the whole list when it is short or has no
        repeat unit (fewer than half of the tensors match the one ``period`` places later).
    """
    n = len(signatures)
    if n <= 2 * max_period:
        return [(0, n)]
    counts = [sum(signatures[i] == signatures[i + p] for i in range(n - p))
              for p in range(1, max_period + 1)]
    best = max(counts)
    period = counts.index(best) + 1 if best >= n // 2 else max_period
    return [(i, min(i + period, n)) for i in range(0, n, period)]


class FusedDiGraP:
    """The two passes, compiled once per device type and window signature, with an eager
    fallback (one warning) when compilation fails.

    Args:
        compile: False runs the same two-pass math eagerly (no kernels built).

    Attributes:
        compile_seconds: {(device type, tensors, elements, 'full'/'lean', 'row'/'tensor'):
            seconds of the first (compiling) call of such a bucket}, the one-time cost.
    """

    #: dynamo keeps at most this many graphs per function (one per window signature)
    RECOMPILE_LIMIT = 64

    def __init__(self, compile: bool = True):
        self.compile = compile
        self.compile_seconds: Dict[Tuple, float] = {}
        self._fns: Dict[str, Tuple] = {}
        self._failed: set = set()

    def _passes(self, device: torch.device):
        key = device.type
        if not self.compile or key in self._failed or not compile_available(device):
            return reduce_pass, apply_pass, False
        if key not in self._fns:
            opts = dict(fullgraph=True, dynamic=False)
            self._fns[key] = (torch.compile(reduce_pass, **opts),
                              torch.compile(apply_pass, **opts))
        return self._fns[key] + (True,)

    def __call__(self, grads, params, anchors, prev, omega, exp_avg, exp_avg_sq, hgrad_sign,
                 *, row: bool, **hyper):
        """One DiGraP transform of a bucket (one device, param group and hyper-step).

        Args:
            grads, params, anchors, prev: as for :func:`reduce_pass` (``prev`` also receives
                P_t); ``grads`` are overwritten with the projected gradients.
            omega, exp_avg, exp_avg_sq: (N,) state; hgrad_sign: see :func:`coefficients`.
            row: ``hypergrad_norm == 'row'``; hyper: train, step, mu, beta1, beta2, eps,
                omega_max (see :func:`coefficients`).

        Returns:
            (omega, exp_avg, exp_avg_sq, coef, dot, sq_dist), (N,) each. No host sync.
        """
        device = grads[0].device
        red_fn, apply_fn, compiled = self._passes(device)
        sigs = [(tuple(g.shape), g.dtype, p.dtype, a is None or a.dtype)
                for g, p, a in zip(grads, params, anchors)]
        bounds = chunk_bounds(sigs)
        key = (device.type, len(grads), sum(g.numel() for g in grads),
               'lean' if prev is None else 'full', 'row' if row else 'tensor')
        first = compiled and key not in self.compile_seconds
        t0 = time.perf_counter()
        try:
            with torch._dynamo.config.patch(recompile_limit=self.RECOMPILE_LIMIT):
                red = torch.cat([red_fn(grads[i:j], params[i:j], anchors[i:j],
                                        None if prev is None else prev[i:j], row)
                                 for i, j in bounds], 1)
                out = coefficients(red, omega, exp_avg, exp_avg_sq, hgrad_sign, **hyper)
                for i, j in bounds:  # fresh (offset-0) slices: no recompilation per window
                    apply_fn(grads[i:j], params[i:j], anchors[i:j],
                             None if prev is None else prev[i:j], out[3][i:j].clone(),
                             out[4][i:j].clone())
        except Exception as err:  # noqa: BLE001  (compile failure: fall back once, loudly)
            if not compiled:
                raise
            self._failed.add(device.type)
            warnings.warn(f'DiGraP(fused=...): torch.compile failed on {device.type} '
                          f'({type(err).__name__}: {str(err).splitlines()[0][:200]}); using '
                          'the eager two-pass path from now on (same results, slower). Set '
                          'fused=False to silence this.', UserWarning, stacklevel=3)
            return self(grads, params, anchors, prev, omega, exp_avg, exp_avg_sq, hgrad_sign,
                        row=row, **hyper)
        if first:
            self.compile_seconds[key] = time.perf_counter() - t0
        return out[:4] + (red[1], red[2])

    def __getstate__(self):  # compiled functions do not pickle; rebuilt on first use
        return dict(compile=self.compile, compile_seconds=dict(self.compile_seconds),
                    _fns={}, _failed=set())
