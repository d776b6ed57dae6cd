"""DiGraP: Directional Gradient Projection, the math (pure PyTorch, no mmengine).

Huang et al., "Directional Gradient Projection for Robust Fine-Tuning of Foundation Models",
ICLR 2025, arXiv 2502.15895, Algorithm 1 (Eqs. 3-8); the exact update we implement is
``docs/algorithm.md`` §10.

For every parameter tensor ``p`` (shape ``S``) with gradient ``g`` and anchor ``theta0``:

    d      = p - theta0                         (offset; anchor='zero': d = p)
    s      = <g, d>,  q = ||d||^2               (whole-tensor float32 reductions)
    P_t    = s / (q + 1e-8) * d                 (component of g along d, Eq. 3)
    h_t    = Norm(g_t, P_{t-1})                 (hyper-gradient of omega, Eq. 8)
    omega  = clip(omega - mu * Adam(h_t), 0, omega_max)   (global step counter T)
    g'     = g - omega * P_t   if s < 0 else g  (Eqs. 4, 6, 7: project only on conflict)

Equivalently g' = g + lambda_t * d with lambda_t = omega * max(0, -s) / (q + 1e-8), an adaptive,
selective, per-layer L2-SP coefficient (algorithm.md §7).

Everything here is batched over a list of N tensors: scalar quantities live in float32 vectors
of shape (N,), the elementwise work uses ``torch._foreach_*`` kernels, and there is no host
synchronisation (no ``.item()``, no Python branch on a tensor value).
"""
from typing import List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .scalar_adam import scalar_adam_update

__all__ = [
    'HYPERGRAD_NORMS', 'PROJ_EPS', 'NORM_EPS', 'batched_dot', 'hypergradient',
    'omega_adam_update', 'DiGraPStepResult', 'digrap_project_', 'hypergradient_partials',
    'finish_hypergradient', 'step_scalars', 'row_cosine_sum', 'tensor_cosine'
]

#: Valid values of ``hypergrad_norm``: 'row' = the authors' row-wise L2 normalisation
#: (``F.normalize(dim=1)``, whole-tensor cosine for tensors with < 2 dims); 'tensor' =
#: whole-tensor cosine similarity. Spec section 1.5.
HYPERGRAD_NORMS = ('row', 'tensor')
#: Added to ||d||^2 in the projection denominator (authors' code, algorithm.md §3).
PROJ_EPS = 1e-8
#: Floor of each norm inside the normalisation (``F.normalize`` default, algorithm.md §3).
NORM_EPS = 1e-12


def batched_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Whole-tensor inner products ``<x_i, y_i>`` of two tensor lists.

    Args:
        xs, ys: N pairs of float32 tensors of equal shapes (any rank).

    Returns:
        Tensor of shape (N,), float32, on the device of ``xs[0]``. No host sync.
    """
    return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys)])


def tensor_cosine(g: Tensor, p: Tensor) -> Tensor:
    """<g, p> / (max(||g||, eps) * max(||p||, eps)) over all entries; 0-d float32."""
    g, p = g.reshape(-1), p.reshape(-1)
    return torch.dot(g, p) / (_norm(g).clamp_min(NORM_EPS) * _norm(p).clamp_min(NORM_EPS))


def row_cosine_sum(g: Tensor, p: Tensor, buf: Optional[Tensor] = None) -> Tensor:
    """sum(F.normalize(g, dim=1) * F.normalize(p, dim=1)), the authors' hyper-gradient.

    For a 2-D weight [out, in] this is the sum over rows of the row cosines (range
    [-out, out]); for a conv kernel [o, i, kh, kw] the cosines are over the in-channels at
    each (o, kh, kw). Tensors with fewer than 2 dims use the whole-tensor cosine (the authors'
    code crashes there, algorithm.md §4). Returns a 0-d float32 tensor.

    ``buf``: an optional scratch tensor of ``g``'s shape and dtype that receives the
    elementwise products instead of a fresh temporary (same values bit for bit; used only
    when ``g`` and ``p`` are contiguous, so the reductions see the same memory layout).
    """
    if g.dim() < 2:
        return tensor_cosine(g, p)
    if buf is None or not (g.is_contiguous() and p.is_contiguous()):
        num = (g * p).sum(1)
    else:
        num = torch.mul(g, p, out=buf).sum(1)
    if g.dim() == 2:
        gn, pn = _norm(g, dim=1), _norm(p, dim=1)
    elif buf is None or not (g.is_contiguous() and p.is_contiguous()):
        # norm(dim=1) on a conv kernel is ~100x slower on CPU than the explicit form
        gn, pn = (g * g).sum(1).sqrt(), (p * p).sum(1).sqrt()
    else:
        gn = torch.mul(g, g, out=buf).sum(1).sqrt()
        pn = torch.mul(p, p, out=buf).sum(1).sqrt()
    return (num / (gn.clamp_min(NORM_EPS) * pn.clamp_min(NORM_EPS))).sum()


def _norm(x: Tensor, dim: Optional[int] = None) -> Tensor:
    """``x.norm()`` / ``x.norm(dim=dim)`` (the 2-norm), without its two Python layers: the
    same kernel, ``torch.linalg.vector_norm``."""
    return torch.linalg.vector_norm(x, 2, dim)


_tensor_cosine, _row_cosine_sum = tensor_cosine, row_cosine_sum  # the former private names


def hypergradient(grads: Sequence[Tensor], prev_proj: Sequence[Tensor],
                  norm: str = 'row') -> Tensor:
    """Normalised hyper-gradient of omega, ``h_t = Norm(g_t, P_{t-1})`` (algorithm.md §4, Eq. 8).

    Args:
        grads: N current raw (unprojected) gradients, float32.
        prev_proj: N projection components of the previous step (same shapes, any float
            dtype; cast to the gradient's).
        norm: 'row' or 'tensor' (see :data:`HYPERGRAD_NORMS`).

    Returns:
        Tensor (N,), float32. All-zero inputs give 0 (never NaN).

    Raises:
        ValueError: unknown ``norm``.
    """
    if norm == 'row':
        fn = row_cosine_sum
    elif norm == 'tensor':
        fn = tensor_cosine
    else:
        raise ValueError(f"hypergrad_norm must be one of {HYPERGRAD_NORMS}, got {norm!r}")
    return torch.stack([fn(g, p.to(g.dtype)) for g, p in zip(grads, prev_proj)])


def hypergradient_partials(grads: Sequence[Tensor], prev_proj: Sequence[Tensor],
                           norm: str = 'row', sharded: Optional[Sequence[bool]] = None,
                           rows_local: Optional[Sequence[bool]] = None) -> Tensor:
    """:func:`hypergradient` as local partial sums, for tensors sharded over ranks.

    Args:
        grads, prev_proj, norm: as for :func:`hypergradient`, the local shards.
        sharded: (N,) bool, the tensor is a shard of a larger one (None: none is).
        rows_local: (N,) bool, the shard holds whole rows (FSDP2 ``Shard(0)``, >= 2 dims).

    Returns:
        Tensor (3, N), float32. Unsharded tensors: ``[h, 0, 0]`` (the value of
        :func:`hypergradient`); sharded with local rows and ``norm='row'``: ``[local sum of row
        cosines, 0, 0]``; other sharded tensors (whole-tensor cosine): ``[<g, p>, ||g||^2,
        ||p||^2]`` over the shard. Sum the sharded columns over the ranks, then
        :func:`finish_hypergradient`.
    """
    if sharded is None or not any(sharded):
        return torch.nn.functional.pad(hypergradient(grads, prev_proj, norm)[None], (0, 0, 0, 2))
    if norm not in HYPERGRAD_NORMS:
        raise ValueError(f"hypergrad_norm must be one of {HYPERGRAD_NORMS}, got {norm!r}")
    cols = []
    for g, p, sh, rl in zip(grads, prev_proj, sharded, rows_local):
        p = p.to(g.dtype)
        if not sh or (norm == 'row' and rl):
            val = (row_cosine_sum if norm == 'row' else tensor_cosine)(g, p) if g.numel() \
                else g.new_zeros(())
            cols.append(torch.stack([val, val.new_zeros(()), val.new_zeros(())]))
        else:
            g, p = g.reshape(-1), p.reshape(-1)
            cols.append(torch.stack([torch.dot(g, p), torch.dot(g, g), torch.dot(p, p)]))
    return torch.stack(cols, 1)


def finish_hypergradient(partials: Tensor, sharded: Optional[Sequence[bool]] = None,
                         rows_local: Optional[Sequence[bool]] = None,
                         norm: str = 'row') -> Tensor:
    """The hyper-gradient (N,) from :func:`hypergradient_partials` summed over the ranks.

    Whole-tensor cosines of sharded tensors are ``<g, p> / (max(||g||, eps) max(||p||, eps))``
    of the summed partials; every other column is its row 0.
    """
    out = partials[0]
    if sharded is None or not any(sharded):
        return out
    cos = torch.tensor([sh and not (norm == 'row' and rl) for sh, rl in zip(sharded, rows_local)],
                       device=out.device)
    whole = partials[0] / (partials[1].sqrt().clamp_min(NORM_EPS)
                           * partials[2].sqrt().clamp_min(NORM_EPS))
    return torch.where(cos, whole, out)


def omega_adam_update(omega: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, hgrad: Tensor, *,
                      step: Union[int, Tensor], mu: float, beta1: float, beta2: float,
                      eps: float, omega_max: float):
    """One Adam step on the projection strengths, clipped to [0, omega_max] (Eq. 8).

    :func:`~mmdigrap.core.scalar_adam.scalar_adam_update` with lr = ``mu`` and the clip.

    Args:
        omega, exp_avg, exp_avg_sq, hgrad: float32 tensors of shape (N,).
        step: the hyper-step count t >= 1 used for bias correction (an int shared by the N
            tensors, or an (N,) tensor).
        mu: hyper-learning-rate; beta1, beta2, eps: Adam constants; omega_max: kappa.

    Returns:
        (omega, exp_avg, exp_avg_sq), new tensors of shape (N,). Entries whose ``hgrad`` is not
        finite keep their old values (a NaN/inf gradient never reaches omega).
    """
    return scalar_adam_update(omega, exp_avg, exp_avg_sq, hgrad, step=step, lr=mu, beta1=beta1,
                              beta2=beta2, eps=eps, lo=0.0, hi=omega_max)


class DiGraPStepResult(NamedTuple):
    """Per-tensor results of one :func:`digrap_project_` call, each a float32 (N,) tensor."""
    omega: Tensor  #: projection strengths used at this step (after the hyper-update)
    exp_avg: Tensor  #: hyper-Adam first moments
    exp_avg_sq: Tensor  #: hyper-Adam second moments
    proj_coef: Tensor  #: s / (q + 1e-8): P_t = proj_coef * d
    dot: Tensor  #: s = <g, d>
    sq_dist: Tensor  #: q = ||theta - theta0||^2
    conflict: Tensor  #: bool, s < 0 (the step was projected where omega > 0)


def digrap_project_(grads: List[Tensor], offsets: List[Tensor], omega: Tensor,
                    exp_avg: Tensor, exp_avg_sq: Tensor, hgrad: Optional[Tensor] = None, *,
                    step: int = 1, mu: float = 0.5, beta1: float = 0.9, beta2: float = 0.999,
                    eps: float = 1e-8, omega_max: float = 1.0,
                    proj_out: Optional[List[Tensor]] = None, dot: Optional[Tensor] = None,
                    sq_dist: Optional[Tensor] = None) -> DiGraPStepResult:
    """Apply one DiGraP step to a list of gradients, in place (algorithm.md §10, steps 3-7).

    Args:
        grads: N gradients ``g`` (float32/float64, shape S_i each); overwritten with the
            projected ones.
        offsets: N offsets ``d = theta - theta0`` (same shapes and dtypes as ``grads``).
        omega, exp_avg, exp_avg_sq: (N,) strengths and hyper-Adam moments before this step.
        hgrad: (N,) hyper-gradient ``Norm(g_t, P_{t-1})`` (see :func:`hypergradient`), or
            None for no hyper-update (step T = 1, or a fixed omega).
        step: global hyper-step counter T (for the hyper-Adam bias correction).
        mu, beta1, beta2, eps, omega_max: hyper-optimizer settings (algorithm.md §5).
        proj_out: None, or N buffers that receive ``P_t = s/(q+1e-8) d`` (the state kept for
            the next hyper-gradient). Passing ``offsets`` itself is the allocation-free path:
            the offsets are scaled in place into ``P_t``.
        dot, sq_dist: (N,) ``<g, d>`` and ``||d||^2`` when already computed (e.g. summed over
            the ranks of a sharded run, :mod:`mmdigrap.core.distributed`); None: computed here.

    Returns:
        :class:`DiGraPStepResult` (no host synchronisation happened).
    """
    dot = batched_dot(grads, offsets) if dot is None else dot
    sq_dist = batched_dot(offsets, offsets) if sq_dist is None else sq_dist
    omega, exp_avg, exp_avg_sq, coef, conflict, lam = step_scalars(
        dot, sq_dist, omega, exp_avg, exp_avg_sq, hgrad, on_offsets=proj_out is offsets,
        step=step, mu=mu, beta1=beta1, beta2=beta2, eps=eps, omega_max=omega_max)
    if proj_out is not None:
        if proj_out is not offsets:
            torch._foreach_copy_(proj_out, offsets)
        torch._foreach_mul_(proj_out, coef.unbind())
    torch._foreach_addcmul_(grads, offsets, lam.unbind())
    return DiGraPStepResult(omega, exp_avg, exp_avg_sq, coef, dot, sq_dist, conflict)


def step_scalars(dot: Tensor, sq_dist: Tensor, omega: Tensor, exp_avg: Tensor,
                 exp_avg_sq: Tensor, hgrad: Optional[Tensor], *, on_offsets: bool, step: int,
                 mu: float, beta1: float, beta2: float, eps: float, omega_max: float):
    """The N-scalar part of :func:`digrap_project_` (shared with
    :func:`~mmdigrap.core.digrap_stream.stream_project_`).

    Args:
        dot, sq_dist: (N,) s = <g, d> and q = ||d||^2.
        omega, exp_avg, exp_avg_sq, hgrad, step, mu, beta1, beta2, eps, omega_max: as for
            :func:`digrap_project_` (``hgrad`` None: no hyper-update).
        on_offsets: the offsets d are scaled in place into P_t before g is updated (then
            ``lam`` multiplies P_t), else ``lam`` multiplies d.

    Returns:
        (omega, exp_avg, exp_avg_sq, coef, conflict, lam), (N,) each: ``coef`` = s / (q +
        1e-8) (0 where not finite), ``conflict`` = s < 0, and g' = g + lam * (P_t or d):
        ``lam`` = -omega (or -omega * coef) on conflict, else 0.
    """
    if hgrad is not None:
        omega, exp_avg, exp_avg_sq = omega_adam_update(
            omega, exp_avg, exp_avg_sq, hgrad, step=step, mu=mu, beta1=beta1, beta2=beta2,
            eps=eps, omega_max=omega_max)
    coef = dot / (sq_dist + PROJ_EPS)
    coef = torch.where(torch.isfinite(coef), coef, torch.zeros_like(coef))
    conflict = dot < 0
    zero = torch.zeros_like(coef)
    if on_offsets:  # g' = g - omega * P_t on conflict
        lam = torch.where(conflict, -omega, zero)
    else:  # the same as g + lam * d with lam = -omega * coef >= 0
        lam = torch.where(conflict, -omega * coef, zero)
    return omega, exp_avg, exp_avg_sq, coef, conflict, lam
