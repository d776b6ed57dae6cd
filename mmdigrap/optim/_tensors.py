"""Small dtype helpers shared by the optimizers (reductions and scalars run in float32/64)."""
from typing import List

import torch
from torch import Tensor

__all__ = ['WIDE', 'wide_dtype', 'wide', 'write_', 'subtract_']

#: dtypes the method math runs in; half-precision tensors are widened to float32
WIDE = (torch.float32, torch.float64)


def wide_dtype(p: Tensor) -> torch.dtype:
    """float64 for float64 parameters, float32 for everything else (reductions, scalars)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def wide(t: Tensor) -> Tensor:
    """``t`` itself if float32/float64, else a float32 copy."""
    return t if t.dtype in WIDE else t.float()


def write_(params: List[Tensor], values: List[Tensor]) -> None:
    """``p.copy_(value)`` for every pair (casts float32 values into half-precision weights)."""
    torch._foreach_copy_(params, values)


def subtract_(params: List[Tensor], deltas: List[Tensor]) -> None:
    """``p -= delta`` in the parameter's dtype (half-precision weights go through float32)."""
    same = [(p, d) for p, d in zip(params, deltas) if p.dtype == d.dtype]
    if same:
        torch._foreach_sub_([p for p, _ in same], [d for _, d in same])
    for p, d in zip(params, deltas):
        if p.dtype != d.dtype:
            p.copy_(p.to(d.dtype) - d)
