"""The hyper-Adam part shared by the optimizers that train one scalar per tensor with Adam
(FTP's and TPGM's radius gamma; ``docs/algorithm.md``, "FTP" and "TPGM")."""
from typing import Any, Dict, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_betas, check_number
from ._tensors import wide_dtype
from .gradient_projection import GroupDefault

__all__ = ['HyperAdamMixin']


class HyperAdamMixin:
    """Mixin (before :class:`~mmdigrap.optim.GradientProjectionOptimizer` in the bases) for a
    per-tensor scalar trained by Adam.

    The Adam constants are the param-group keys ``hyper_betas`` and ``hyper_eps``, shown as
    ``opt.betas`` / ``opt.eps`` (the constructor's ``betas`` / ``eps``); the per-tensor state
    is four 0-d tensors in the parameter's wide dtype (float64 for float64 parameters, else
    float32): the scalar, its first and second moments and its step count.
    """

    betas = GroupDefault('hyper_betas')
    eps = GroupDefault('hyper_eps')

    @staticmethod
    def _check_hyper_adam(owner: str, hyper: Dict[str, Any]) -> Dict[str, Any]:
        """``dict(hyper_betas=..., hyper_eps=...)`` validated from ``hyper``.

        Raises:
            ValueError: betas not two numbers in [0, 1); eps not a finite number > 0.
        """
        return dict(
            hyper_betas=check_betas(owner, hyper['hyper_betas'], 'betas'),
            hyper_eps=check_number(owner, 'eps', hyper['hyper_eps'], 0.0, 'use 1e-8',
                                   lo_open=True))

    @staticmethod
    def _init_hyper_adam_state(st: Dict[str, Any], keys: Sequence[str], p: Tensor,
                               value: Union[float, Tensor]) -> None:
        """Set ``st[keys[0]] = value`` and ``st[k] = 0`` for the moments and step count
        ``keys[1:]`` (0-d tensors on ``p``'s device, in its wide dtype)."""
        kw = dict(dtype=wide_dtype(p), device=p.device)
        st[keys[0]] = (value.to(**kw) if isinstance(value, Tensor)
                       else torch.full((), value, **kw))
        for k in keys[1:]:
            st[k] = torch.zeros((), **kw)
