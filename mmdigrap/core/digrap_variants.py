"""DiGraP variants beyond the paper (off by default): the math, pure PyTorch.

``docs/algorithm.md``, section *Variants* (14). Two options of :class:`mmdigrap.optim.DiGraP`:

* ``project='update'`` (section 14.1): the projection acts on the base optimizer's *update*
  instead of the raw gradient. With ``Delta = theta_new - theta_old`` (the base step, e.g. Adam's)
  and ``d = theta_old - theta0``::

      c      = <Delta, d> / (||d||^2 + 1e-8)
      theta <- theta_new - omega * c * d        if <Delta, d> > 0   (the step grows ||d||)
      Q_t    = d theta_t / d omega = -[<Delta, d> > 0] * c * d      (stored, S)
      h_t+1  = Norm(g_t+1, Q_t)                                      (same Norm as Eq. 8)

  so no preconditioner can undo the projection: with omega = 1 the step is orthogonal to d.
* ``hypergrad_source='val'`` (section 14.2): the hyper-gradient of omega is taken on a held-out
  ID validation batch at the current weights: ``h_t = Norm(g_val(theta_t-1), P_t-1)`` (the
  same :func:`~mmdigrap.core.digrap.hypergradient`, fed a validation gradient), so omega rises
  when projecting lowers the *validation* loss.

Everything is batched over N tensors (float32 (N,) scalars, ``torch._foreach_*``), with no host
synchronisation.
"""
from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .digrap import PROJ_EPS, batched_dot

__all__ = ['PROJECT_MODES', 'HYPERGRAD_SOURCES', 'UpdateProjectionResult', 'update_project_',
           'cosine']

#: ``project``: 'gradient' = the paper (project the raw gradient before the base step);
#: 'update' = project the base optimizer's update after its step (section 14.1).
PROJECT_MODES = ('gradient', 'update')
#: ``hypergrad_source``: 'train' = the paper (the training mini-batch gradient g_t);
#: 'val' = the gradient of a held-out validation batch (section 14.2).
HYPERGRAD_SOURCES = ('train', 'val')


def cosine(dot: Tensor, sq_a: Tensor, sq_b: Tensor, eps: float = 1e-12) -> Tensor:
    """``dot / (||a|| ||b||)`` from a dot product and two squared norms ((N,) tensors); 0 where a
    norm is 0 (never NaN)."""
    den = sq_a.clamp_min(0).sqrt() * sq_b.clamp_min(0).sqrt()
    return torch.where(den > eps, dot / den.clamp_min(eps), torch.zeros_like(dot))


class UpdateProjectionResult(NamedTuple):
    """Per-tensor results of one :func:`update_project_` call, each an (N,) tensor."""
    dot: Tensor  #: <Delta, d>, the radial part of the base update (> 0: it grows ||d||)
    sq_dist: Tensor  #: q = ||d||^2 (d = theta_old - theta0)
    sq_delta: Tensor  #: ||Delta||^2
    coef: Tensor  #: c = <Delta, d> / (q + 1e-8)
    conflict: Tensor  #: bool, <Delta, d> > 0 (the update was projected where omega > 0)
    final_dot: Tensor  #: <Delta', d> of the applied update Delta' = Delta - omega*[conflict]*c*d
    final_sq_delta: Tensor  #: ||Delta'||^2


def update_project_(params: List[Tensor], deltas: Sequence[Tensor], offsets: List[Tensor],
                    omega: Tensor, proj_out: Optional[List[Tensor]] = None
                    ) -> UpdateProjectionResult:
    """Project the base optimizer's update, in place (``docs/algorithm.md`` section 14.1).

    Args:
        params: N parameters *after* the base step (theta_new), any float dtype; updated in place
            to ``theta_new - omega * [<Delta,d> > 0] * c * d``.
        deltas: N base updates ``Delta = theta_new - theta_old`` (float32/float64).
        offsets: N offsets ``d = theta_old - theta0`` (same shapes and dtypes as ``deltas``).
        omega: (N,) projection strengths.
        proj_out: None, or N buffers that receive ``Q_t = -[<Delta,d> > 0] * c * d`` (the
            derivative of theta_t in omega, kept for the next hyper-gradient). Passing
            ``offsets`` itself scales them in place (no allocation).

    Returns:
        :class:`UpdateProjectionResult` (no host synchronisation happened).
    """
    dot = batched_dot(deltas, offsets)
    sq_dist = batched_dot(offsets, offsets)
    sq_delta = batched_dot(deltas, deltas)
    coef = dot / (sq_dist + PROJ_EPS)
    coef = torch.where(torch.isfinite(coef), coef, torch.zeros_like(coef))
    conflict = dot > 0
    removed = torch.where(conflict, coef, torch.zeros_like(coef))  # [conflict] * c
    # theta <- theta - omega * [conflict] * c * d
    torch._foreach_addcmul_(params, offsets, (-omega * removed).unbind())
    # Delta' = Delta - omega r d: <Delta', d> = <Delta,d> - omega r q,
    # ||Delta'||^2 = ||Delta||^2 - 2 omega r <Delta,d> + (omega r)^2 q
    wr = omega * removed
    final_dot = dot - wr * sq_dist
    final_sq = (sq_delta - 2 * wr * dot + wr * wr * sq_dist).clamp_min(0)
    if proj_out is not None:
        if proj_out is not offsets:
            torch._foreach_copy_(proj_out, offsets)
        torch._foreach_mul_(proj_out, (-removed).unbind())
    return UpdateProjectionResult(dot, sq_dist, sq_delta, coef, conflict, final_dot, final_sq)

