"""FTP: Fast Trainable Projection, the math (docs/algorithm.md §13.5).

Tian, Huang, Kira, "Fast Trainable Projection for Robust Fine-Tuning", NeurIPS 2023; reference
code ``GT-RIPL/FTP util/FTP.py`` (classes ``FTP``, ``AdamP``, ``SGDP``).

FTP is a *post-step* projection. The base optimizer proposes a candidate ``theta~``; FTP keeps
it inside a ball around theta0 whose radius gamma (one scalar per tensor) is trained online:

    c_t    = theta~_t - theta0                               candidate offset       (S)
    n_t    = sum_{dims >= 1} |c_t| + 1e-8                    row-wise MARS norm      (R)
             (R = [rows, 1, ..., 1]; a tensor with < 2 dims is one row: its whole L1 norm)
    G_t    = sum_rows <g_t, c_{t-1}>_row / n_{t-1,row}       hyper-gradient of gamma (scalar)
    G_t    = k * G_t  if G_t > 0                             k in [0, 1]: anneal positive grads
    gamma  = gamma - mu * Adam(G_t)                          (per-tensor step count t)
    gamma  = clip(gamma, 1e-8, max_row n_t)       ;  gamma = 1e-8 at t = 1
    theta_t = theta0 + clip(gamma / n_t, 0, 1) * c_t         projected row by row

``g_t`` is the raw gradient of this step, ``c_{t-1}`` and ``1/n_{t-1}`` are stored from the
previous step (the *unprojected* offset). At t = 1 gamma = 1e-8, which pins the first step back
to (almost exactly) theta0.

Everything is batched over N tensors: scalars in (N,) vectors, elementwise work per tensor or
with ``torch._foreach_*``, the branches as ``torch.where``; no host synchronisation.

:func:`~mmdigrap.core.scalar_adam.scalar_adam_update` (the bias-corrected Adam on one scalar
per tensor, shared with DiGraP and TPGM) is re-exported here; :func:`mars_row_norms` is shared
with SPD.
"""
from typing import List, NamedTuple

import torch
from torch import Tensor

from ..digrap import batched_dot
from ..distributed import IDENTITY, ShardReducer, local_max
from ..scalar_adam import scalar_adam_update

__all__ = ['FTP_EPS', 'mars_row_norms', 'row_dot_sum', 'scalar_adam_update', 'FTPStepResult',
           'ftp_project_']

#: the FTP epsilon: added to the MARS norms, floor of gamma, gamma at t = 1, hyper-Adam eps.
FTP_EPS = 1e-8


def mars_row_norms(t: Tensor, eps: float = FTP_EPS) -> Tensor:
    """Row-wise L1 ("maximum absolute row sum", MARS) norms of ``t``, plus ``eps``.

    Args:
        t: a tensor of any rank; rows are along dim 0.

    Returns:
        Shape ``[rows, 1, ..., 1]`` (keepdim) for ``t.dim() >= 2``; a tensor with fewer than 2
        dims is a single row: its whole L1 norm, shape ``[1]`` (1-D) or ``[]`` (0-d). This is
        what ``torch.sum(dim=tuple(range(1, t.dim())), keepdim=True)`` gives in the reference
        code (an empty ``dim`` reduces everything).
    """
    if t.dim() >= 2:
        return t.abs().sum(dim=tuple(range(1, t.dim())), keepdim=True) + eps
    return t.abs().sum().reshape([1] * t.dim()) + eps


def row_dot_sum(g: Tensor, c: Tensor, scale: Tensor) -> Tensor:
    """``sum_rows <g, c>_row * scale_row`` (0-d); ``scale`` has the shape of the row norms."""
    if g.dim() >= 2:
        return ((g * c).sum(dim=tuple(range(1, g.dim())), keepdim=True) * scale).sum()
    return ((g * c).sum() * scale).sum()


class FTPStepResult(NamedTuple):
    """Per-tensor results of one :func:`ftp_project_` call."""
    gamma: Tensor  #: (N,) radii used at this step (after the hyper-update and the clip)
    exp_avg: Tensor  #: (N,) hyper-Adam first moments
    exp_avg_sq: Tensor  #: (N,) hyper-Adam second moments
    hypergrad: Tensor  #: (N,) G_t after the k-annealing (< 0: gamma grows)
    active: Tensor  #: (N,) bool, the projection shrank at least one row (ratio < 1)
    sq_dist: Tensor  #: (N,) ||theta_t - theta0||^2 after the projection


def ftp_project_(offsets: List[Tensor], grads: List[Tensor], prev_offsets: List[Tensor],
                 prev_scales: List[Tensor], gamma: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                 step: Tensor, *, k: float = 1.0, mu: float = 1e-2, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = FTP_EPS,
                 reducer: ShardReducer = IDENTITY) -> FTPStepResult:
    """One FTP projection of N candidate offsets, in place (algorithm.md §13.5, steps 2-6).

    Args:
        offsets: N candidate offsets ``c_t = theta~_t - theta0`` (float32/float64 scratch
            tensors, shapes S_i); overwritten with the projected offsets
            ``clip(gamma / n_t, 0, 1) * c_t``, so that ``theta_t = theta0 + offsets``.
        grads: N raw gradients ``g_t`` of this step (not modified; any float dtype).
        prev_offsets: N state buffers holding ``c_{t-1}`` (zeros before the first step);
            overwritten with ``c_t``.
        prev_scales: N state buffers ``1 / n_{t-1}`` of the row-norm shapes (zeros before the
            first step); overwritten with ``1 / n_t``.
        gamma, exp_avg, exp_avg_sq: (N,) radii and hyper-Adam moments before this step.
        step: (N,) per-tensor step counts t >= 1 of this step (t = 1: gamma = 1e-8).
        k: annealing factor of positive hyper-gradients (1 = strongest regularisation).
        mu, beta1, beta2, eps: hyper-Adam settings (reference: 1e-2, 0.9, 0.999, 1e-8).
        reducer: for local shards of sharded tensors (FSDP2), the bucket's
            :class:`~mmdigrap.core.distributed.ShardReducer`: the hyper-gradient, the L1 norm of
            1-D tensors, the largest row norm, ``active`` and ``sq_dist`` are then taken over
            the whole logical tensors (two collectives per call); row norms stay local.

    Raises:
        NotImplementedError: a tensor sharded along a dim other than 0.

    Returns:
        :class:`FTPStepResult`.
    """
    dtype = gamma.dtype
    # hyper-gradient from the previous unprojected offset and its row scales (wide dtype)
    h = torch.stack([row_dot_sum(g.to(s.dtype), c.to(s.dtype), s).to(dtype)
                     for g, c, s in zip(grads, prev_offsets, prev_scales)])
    norms = [mars_row_norms(c, eps) for c in offsets]
    if reducer.any_sharded:  # one collective: h, the L1 norms of 1-D shards, the row maxima
        reducer.require_rows_local('FTP row norms')
        whole = [sh and not rl for sh, rl in zip(reducer.sharded, reducer.rows_local)]
        l1 = torch.stack([c.abs().sum().to(dtype) if w else h.new_zeros(())
                          for c, w in zip(offsets, whole)])
        nloc = torch.stack([local_max(n).to(dtype) for n in norms])
        sums, nmax, _ = reducer.reduce(torch.stack([h, l1]), nloc)
        h = sums[0]
        for i, (c, w) in enumerate(zip(offsets, whole)):
            if w:
                norms[i] = sums[1, i].to(c.dtype).reshape([1] * c.dim()) + eps
        nmax = torch.where(torch.tensor(whole, device=nmax.device),
                           torch.stack([n.reshape(()).to(dtype) if w else nmax.new_zeros(())
                                        for n, w in zip(norms, whole)]), nmax)
    else:
        nmax = torch.stack([n.max().to(dtype) for n in norms])
    h = torch.where(h > 0, h * k, h)
    new_gamma, m, v = scalar_adam_update(gamma, exp_avg, exp_avg_sq, h, step=step, lr=mu,
                                         beta1=beta1, beta2=beta2, eps=eps)
    new_gamma = torch.minimum(new_gamma.clamp_min(eps), nmax)
    first = step == 1  # t = 1: gamma = 1e-8 (no clip), moments untouched
    new_gamma = torch.where(first, torch.full_like(new_gamma, eps), new_gamma)
    m = torch.where(first, exp_avg, m)
    v = torch.where(first, exp_avg_sq, v)
    scales = [1 / n for n in norms]
    ratios = [(w.to(s.dtype) * s).clamp(0.0, 1.0) for w, s in zip(new_gamma.unbind(), scales)]
    active = torch.stack([(r < 1).any() for r in ratios])
    torch._foreach_copy_(prev_offsets, offsets)
    torch._foreach_copy_(prev_scales, scales)
    torch._foreach_mul_(offsets, ratios)
    sq_dist = batched_dot(offsets, offsets).to(dtype)
    if reducer.any_sharded:  # the second collective: statistics
        sq_dist, act, _ = reducer.reduce(sq_dist, active.to(dtype))
        active = act > 0
    return FTPStepResult(new_gamma, m, v, h, active, sq_dist)
