"""L2-SP: a coupled pull towards the pre-trained weights (docs/algorithm.md §13.4).

Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018. Minimises ``L(theta) + weight/2 * ||theta - theta0||^2``: for every
parameter tensor (shape ``S``) the gradient of the penalty is added to the task gradient
*before* the base optimizer's moments (coupled, like Adam's ``weight_decay``, unlike AdamW's
decoupled decay):

    g' = g + weight * (theta - theta0)          (anchor='zero', LoRA/PEFT: g' = g + weight * theta)

One global coefficient, no selection, no per-layer adaptation: the baseline DiGraP makes
adaptive (algorithm.md §7). Batched over N tensors with ``torch._foreach_*``; no host sync.
"""
from typing import List, NamedTuple

import torch
from torch import Tensor

from ..digrap import batched_dot

__all__ = ['L2SPStepResult', 'l2sp_grad_']


class L2SPStepResult(NamedTuple):
    """Per-tensor statistics of one :func:`l2sp_grad_` call, float32/float64 (N,) tensors."""
    dot: Tensor  #: <g, theta - theta0> of the raw gradient (< 0: g pushes away from theta0)
    sq_dist: Tensor  #: ||theta - theta0||^2 before the step


def l2sp_grad_(grads: List[Tensor], offsets: List[Tensor], weight: float) -> L2SPStepResult:
    """Add ``weight * (theta - theta0)`` to each gradient, in place (algorithm.md §13.4).

    Args:
        grads: N gradients ``g`` (float32/float64, shapes S_i); overwritten with ``g'``.
        offsets: N offsets ``d = theta - theta0`` of the same shapes and dtypes (not modified).
        weight: the L2-SP coefficient lambda (>= 0).

    Returns:
        :class:`L2SPStepResult` computed on the raw gradients (two reductions per tensor).
    """
    dot = batched_dot(grads, offsets)
    sq_dist = batched_dot(offsets, offsets)
    if weight != 0:
        torch._foreach_add_(grads, offsets, alpha=weight)
    return L2SPStepResult(dot, sq_dist)
