"""The one bias-corrected Adam on N scalars: DiGraP's omega, FTP's gamma, TPGM's radii.

Each method trains one scalar per parameter tensor with its own small Adam (the
hyper-optimizer). They share this function, so the update is written once:

    m_t   = beta1 * m_{t-1} + (1 - beta1) * h_t
    v_t   = beta2 * v_{t-1} + (1 - beta2) * h_t^2
    x_t   = x_{t-1} - lr * (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)
    x_t   = clip(x_t, lo, hi)                         (optional; DiGraP: [0, omega_max])

(Kingma & Ba 2015, Algorithm 1; ``docs/algorithm.md``, "hyper-optimizer"). Entries whose
hyper-gradient ``h_t`` is not finite keep their value and moments. No host synchronisation.
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ['scalar_adam_update']


def scalar_adam_update(value: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, grad: Tensor, *,
                       step: Union[int, Tensor], lr: float, beta1: float, beta2: float,
                       eps: float, lo: Optional[float] = None,
                       hi: Optional[float] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """One bias-corrected Adam step on N scalars.

    Args:
        value, exp_avg, exp_avg_sq, grad: (N,) tensors of one floating dtype.
        step: the step count t >= 1 of this update, for the bias correction: a Python int
            (the same t for all N entries; ``beta ** t`` is then computed on the host, in
            double precision) or an (N,) tensor of per-entry counts in the values' dtype.
        lr: learning rate (DiGraP: mu; FTP: mu; TPGM: proj_lr).
        beta1, beta2, eps: Adam constants.
        lo, hi: optional clip of the new values (``clamp(lo, hi)``).

    Returns:
        (value, exp_avg, exp_avg_sq): new (N,) tensors. Entries whose ``grad`` is not finite
        keep their old values (a NaN/inf never reaches the trained scalar).
    """
    finite = torch.isfinite(grad)
    h = torch.where(finite, grad, torch.zeros_like(grad))
    m = torch.where(finite, exp_avg * beta1 + h * (1 - beta1), exp_avg)
    v = torch.where(finite, exp_avg_sq * beta2 + h * h * (1 - beta2), exp_avg_sq)
    if isinstance(step, Tensor):
        m_hat = m / (1 - torch.pow(beta1, step))
        v_hat = v / (1 - torch.pow(beta2, step))
    else:
        m_hat = m / (1 - beta1 ** step)
        v_hat = v / (1 - beta2 ** step)
    new = value - lr * m_hat / (v_hat.sqrt() + eps)
    if lo is not None or hi is not None:
        new = new.clamp(lo, hi)
    return torch.where(finite, new, value), m, v
