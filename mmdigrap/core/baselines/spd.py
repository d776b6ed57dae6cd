"""SPD: Selective Projection Decay, the math (docs/algorithm.md §13.6).

Tian, Huang, Kira, "Rethinking Weight Decay for Robust Fine-Tuning of Foundation Models",
NeurIPS 2024; reference code ``GT-RIPL/Selective-Projection-Decay adamSPD.py`` (AdamSPD) and
``chengyuehuang511/FRAMES-VQA optimizer/adamh.py`` (AdamH: LoRA anchor 0, optional MARS norm).

A *post-step* decay towards theta0, applied to a tensor only when its selection condition holds.
For every tensor (shape S), with theta the weights before the step and theta~ the base
optimizer's candidate:

    c_t     = -<g_t, theta - theta0>                         (whole tensor)
    r_t     = clip((||theta~ - theta0|| - ||theta - theta0||) / ||theta~ - theta0||, 0, 1)
    theta_t = theta~ - weight * r_t * (theta~ - theta0)      if c_t < 0
    theta_t = theta~                                         otherwise

**Sign convention (algorithm.md §13.6): the opposite of DiGraP's.** DiGraP acts when
``<g, theta - theta0> < 0`` (the task gradient pushes away from theta0) and edits the gradient.
SPD acts when ``c_t < 0``, i.e. ``<g, theta - theta0> > 0`` (plain gradient descent would move
*towards* theta0, so regularising is "free" for the loss), and only shrinks whatever growth of
the deviation the (preconditioned, momentum) candidate step still has (``r_t > 0``). The two
conditions are kept in separate helpers on purpose; do not share one.

``norm='mars'`` (AdamH) uses row-wise L1 norms (``+1e-8``, one ratio per row) instead of the
whole-tensor L2 norm. Batched over N tensors, no host synchronisation.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..digrap import batched_dot
from ..distributed import IDENTITY, ShardReducer
from .ftp import FTP_EPS, mars_row_norms

__all__ = ['SPD_NORMS', 'spd_condition', 'spd_norms', 'spd_norms_reduced', 'SPDDecay',
           'spd_decay_coefficients']

#: valid ``norm`` values: whole-tensor L2 (AdamSPD) or row-wise MARS/L1 (AdamH option).
SPD_NORMS = ('l2', 'mars')


def spd_condition(grads: Sequence[Tensor], offsets: Sequence[Tensor]) -> Tensor:
    """SPD's selection quantity ``c_t = -<g_t, theta - theta0>`` per tensor, (N,).

    Decay is applied where ``c_t < 0``. (``-c_t`` is DiGraP's dot product; DiGraP projects
    where that dot product is < 0: the opposite selection, algorithm.md §13.6.)
    """
    return -batched_dot(grads, offsets)


def spd_norms(offsets: Sequence[Tensor], norm: str = 'l2') -> List[Tensor]:
    """Deviation norms: 0-d whole-tensor L2 norms ('l2') or row-wise L1 + 1e-8 ('mars').

    Raises:
        ValueError: unknown ``norm``.
    """
    if norm == 'l2':
        return [torch.linalg.vector_norm(d) for d in offsets]
    if norm == 'mars':
        return [mars_row_norms(d) for d in offsets]
    raise ValueError(f"SPD norm must be one of {SPD_NORMS}, got {norm!r}")


def spd_norms_reduced(offsets: Sequence[Tensor], norm: str = 'l2',
                      reducer: ShardReducer = IDENTITY, sums: Optional[Tensor] = None
                      ) -> Tuple[List[Tensor], Optional[Tensor]]:
    """:func:`spd_norms` of the whole logical tensors when the offsets are local shards.

    Args:
        offsets, norm: as for :func:`spd_norms` (local shards).
        reducer: the bucket's :class:`~mmdigrap.core.distributed.ShardReducer`.
        sums: optional ``(k, N)`` partial sums reduced in the same collective.

    Returns:
        (norms, sums): norms as :func:`spd_norms` gives for the full tensors (row norms of
        shards holding whole rows stay local), and ``sums`` summed over the ranks.

    Raises:
        NotImplementedError: ``norm='mars'`` on a tensor sharded along a dim other than 0.
    """
    norms = spd_norms(offsets, norm)
    if not reducer.any_sharded:
        return norms, sums
    if norm == 'mars':
        reducer.require_rows_local("SPD norm='mars'")
    whole = [sh and not (norm == 'mars' and rl)
             for sh, rl in zip(reducer.sharded, reducer.rows_local)]
    part = torch.stack([(d.reshape(-1).dot(d.reshape(-1)) if norm == 'l2' else d.abs().sum())
                        if w else d.new_zeros(()) for d, w in zip(offsets, whole)])
    red = reducer.sum(part[None] if sums is None else torch.cat([sums, part[None]]))
    for i, (d, w) in enumerate(zip(offsets, whole)):
        if w:
            norms[i] = (red[-1, i].sqrt() if norm == 'l2'
                        else red[-1, i].reshape([1] * d.dim()) + FTP_EPS)
    return norms, (None if sums is None else red[:-1])


class SPDDecay(NamedTuple):
    """Result of :func:`spd_decay_coefficients`."""
    coefs: List[Tensor]  #: N tensors (0-d, or row shape for 'mars'): weight * r_t, 0 if unselected
    selected: Tensor  #: (N,) bool, c_t < 0
    decayed: Tensor  #: (N,) bool, selected and r_t > 0 somewhere (the weights were pulled back)


def spd_decay_coefficients(new_offsets: Sequence[Tensor], prev_norms: Sequence[Tensor],
                           condition: Tensor, weight: float, norm: str = 'l2',
                           curr: Optional[Sequence[Tensor]] = None) -> SPDDecay:
    """The per-tensor decay coefficients ``weight * r_t`` (0 where ``c_t >= 0``).

    The caller applies ``theta_t = theta~ - coef * (theta~ - theta0)``.

    Args:
        new_offsets: N candidate offsets ``theta~ - theta0`` (float32/float64).
        prev_norms: N norms of ``theta - theta0`` before the step (:func:`spd_norms`).
        condition: (N,) ``c_t`` from :func:`spd_condition`.
        weight: the decay strength lambda (>= 0).
        norm: 'l2' or 'mars' (as for ``prev_norms``).
        curr: the norms of ``new_offsets`` when already computed (e.g. over the whole logical
            tensors of a sharded run, :func:`spd_norms_reduced`); None: computed here.

    Returns:
        :class:`SPDDecay`. A zero candidate offset gives r_t = 0 (the reference code divides
        by zero there; it cannot be selected in practice).
    """
    curr = spd_norms(new_offsets, norm) if curr is None else curr
    selected = condition < 0
    coefs, decayed = [], []
    for c, p, sel in zip(curr, prev_norms, selected.unbind()):
        r = torch.nan_to_num((c - p) / c, nan=0.0).clamp(0.0, 1.0)
        coef = torch.where(sel, r * weight, torch.zeros_like(r))
        coefs.append(coef)
        decayed.append((coef > 0).any())
    return SPDDecay(coefs, selected, torch.stack(decayed))
