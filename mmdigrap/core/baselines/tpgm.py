"""TPGM: Trainable Projected Gradient Method, the math (docs/algorithm.md §13.7).

Tian, Dai, Ha, Kira, "Trainable Projected Gradient Method for Robust Fine-Tuning", CVPR 2023;
reference code ``PotatoTian/TPGM */utils/tpgm.py`` (``TPGM``, ``tpgm_trainer``).

Every parameter tensor (shape S) is projected into a ball around theta0 whose radius gamma (one
scalar per tensor) is *learned on held-out validation data*:

    d       = theta - theta0
    n       = ||d||_2                       (norm='l2', whole tensor, 0-d)
            = sum_{dims >= 1} |d|           (norm='mars', one value per row: [rows, 1, ...];
                                             a tensor with < 2 dims: elementwise |d|)
    gamma   = min(n) / 2                    the first time a tensor is projected
    gamma   = clip(gamma, 1e-8, max(n))     before every use
    ratio   = clip(relu(gamma) / (n + 1e-8), 0, 1)
    theta  <- theta0 + ratio * d

Projection update (``max_iters`` times): build the projected weights differentiably in gamma,
compute the validation loss, back-propagate to the gammas and take an Adam step (lr
``proj_lr``). Then the projection is applied in place, without gradients. These functions are
the pieces; the loop (which needs a model forward) lives in ``mmdigrap.optim.TPGM``.

Batched over N tensors: radii in an (N,) vector, no host synchronisation (the reference's
Python ``if constraint <= 0`` clip is a ``clamp``).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['TPGM_NORMS', 'TPGM_EPS', 'tpgm_norms', 'tpgm_init_radius', 'tpgm_clip_radii',
           'tpgm_ratios', 'tpgm_project']

#: valid ``norm`` values.
TPGM_NORMS = ('l2', 'mars')
#: floor of the radii and the epsilon of the ratio denominator.
TPGM_EPS = 1e-8


def tpgm_norms(offsets: Sequence[Tensor], norm: str = 'l2') -> List[Tensor]:
    """Norms of the offsets ``d = theta - theta0`` (detached inputs expected).

    Args:
        offsets: N tensors (float32/float64).
        norm: 'l2' (0-d whole-tensor L2 norms) or 'mars' (row-wise L1 sums, keepdim shape
            ``[rows, 1, ...]``; tensors with fewer than 2 dims: elementwise ``|d|``).

    Raises:
        ValueError: unknown ``norm``.
    """
    if norm == 'l2':
        return [torch.linalg.vector_norm(d) for d in offsets]
    if norm == 'mars':
        return [d.abs().sum(dim=tuple(range(1, d.dim())), keepdim=True) if d.dim() >= 2
                else d.abs() for d in offsets]
    raise ValueError(f"TPGM norm must be one of {TPGM_NORMS}, got {norm!r}")


def tpgm_init_radius(norm: Tensor) -> Tensor:
    """Initial radius ``min(n) / 2`` of one tensor (0-d)."""
    return norm.min() / 2


def tpgm_clip_radii(gamma: Tensor, norms: Sequence[Tensor],
                    nmax: Optional[Tensor] = None) -> Tensor:
    """``clip(gamma, 1e-8, max(n))`` per tensor; (N,) in, (N,) out. ``nmax``: the (N,) maxima
    of the norms when already known (e.g. over all shards of a sharded tensor)."""
    if nmax is None:
        nmax = torch.stack([n.max().to(gamma.dtype) for n in norms])
    return torch.minimum(gamma.clamp_min(TPGM_EPS), nmax)  # torch.clamp order: max wins


def tpgm_ratios(gamma: Tensor, norms: Sequence[Tensor]) -> List[Tensor]:
    """``hardtanh(relu(gamma) / (n + 1e-8), 0, 1)`` per tensor (differentiable in gamma).

    Args:
        gamma: (N,) radii (may require grad).
        norms: N norms from :func:`tpgm_norms`.

    Returns:
        N ratio tensors of the norms' shapes (0-d for 'l2').
    """
    return [F.hardtanh(F.relu(w.to(n.dtype)) / (n + TPGM_EPS), 0.0, 1.0)
            for w, n in zip(gamma.unbind(), norms)]


def tpgm_project(anchors: Optional[Sequence[Tensor]], offsets: Sequence[Tensor],
                 ratios: Sequence[Tensor]) -> List[Tensor]:
    """Projected weights ``theta0 + ratio * d`` (new tensors; differentiable in the ratios).

    Args:
        anchors: N anchors theta0 in the offsets' dtype, or None for a zero anchor (LoRA).
        offsets: N detached offsets ``d``.
        ratios: N ratios from :func:`tpgm_ratios`.
    """
    if anchors is None:
        return [d * r for d, r in zip(offsets, ratios)]
    return [d * r + a for a, d, r in zip(anchors, offsets, ratios)]
