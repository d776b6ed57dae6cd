"""The anchor theta0 (pre-trained weights) and the exclusion rules, shared by every method.

* ``anchor='pretrained'``: theta0 is a detached copy of each parameter taken the first time it
  is updated (for an mmengine run: after ``load_from`` / the pre-trained ``init_cfg`` was
  loaded). Stored in the optimizer state under ``'anchor'``, so it is checkpointed and resumed.
* ``anchor='zero'``: theta0 = 0, for LoRA/PEFT adapters (algorithm.md §8); nothing is stored.

Anchors live on the parameter's device by default; ``anchor_dtype`` (e.g. ``torch.bfloat16``)
keeps them in a lower precision for very large models. Reductions always run in float32.
"""
import re
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ['ANCHOR_MODES', 'AnchorPolicy', 'compile_exclude', 'match_excluded']

ANCHOR_MODES = ('pretrained', 'zero')


def _wide(t: Tensor) -> Tensor:
    """float32 view/copy of a half-precision tensor; float32/float64 tensors as they are."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class AnchorPolicy:
    """Where the anchor comes from and how it is stored.

    Args:
        mode: 'pretrained' (copy of the weights at the first step) or 'zero' (LoRA/PEFT).
        dtype: storage dtype of the anchor copies; None = the parameter's dtype.
        device: storage device of the anchor copies (e.g. 'cpu' for very large models; each
            step then copies them to the parameter's device); None = the parameter's.

    Raises:
        ValueError: unknown ``mode`` or a non-floating ``dtype``.
    """

    def __init__(self, mode: str = 'pretrained',
                 dtype: Optional[Union[str, torch.dtype]] = None,
                 device: Optional[Union[str, torch.device]] = None):
        if mode not in ANCHOR_MODES:
            raise ValueError(f"anchor must be one of {ANCHOR_MODES}, got {mode!r}: use "
                             "'pretrained' for full fine-tuning, 'zero' for LoRA/PEFT adapters")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.replace('torch.', ''), None)
            if dtype is None:
                raise ValueError(f'anchor_dtype {dtype!r} is not a torch dtype name')
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f'anchor_dtype must be a floating dtype, got {dtype}')
        self.mode = mode
        self.dtype = dtype
        self.device = None if device is None else torch.device(device)

    @property
    def stored(self) -> bool:
        """True when an anchor tensor is kept per parameter (mode 'pretrained')."""
        return self.mode == 'pretrained'

    def snapshot(self, param: Tensor) -> Tensor:
        """A detached copy of ``param`` in the storage dtype, on the parameter's device."""
        return param.detach().to(device=self.device or param.device,
                                 dtype=self.dtype or param.dtype, copy=True)

    def place(self, anchor: Tensor, param: Tensor) -> Tensor:
        """Move a loaded anchor to its storage device and dtype, e.g. after resume."""
        return anchor.to(device=self.device or param.device, dtype=self.dtype or param.dtype)

    def offsets(self, params: Sequence[Tensor],
                anchors: Sequence[Optional[Tensor]]) -> Tuple[List[Tensor], bool]:
        """Offsets (float32, or float64 for float64 parameters) ``d_i = theta_i - theta0_i``.

        Returns:
            (offsets, writable): ``writable`` is True when the offsets are fresh scratch
            tensors (never aliases of a parameter).
        """
        p32 = [_wide(p.detach()) for p in params]
        if not self.stored:
            return p32, False
        a32 = [a.to(device=p.device, dtype=p.dtype, non_blocking=True)
               for a, p in zip(anchors, p32)]
        return torch._foreach_sub(p32, a32), True

    def offsets_into(self, out: Sequence[Tensor], params: Sequence[Tensor],
                     anchors: Sequence[Optional[Tensor]]) -> List[Tensor]:
        """Write ``d_i = theta_i - theta0_i`` into the buffers ``out`` (no allocation).

        ``out`` must have the parameters' shapes and a wide dtype (float32/float64).
        """
        for buf, p, a in zip(out, params, anchors):
            if a is None:
                buf.copy_(p.detach())
            else:
                torch.sub(p.detach(), a.to(device=p.device, non_blocking=True), out=buf)
        return list(out)

    def __repr__(self) -> str:
        return f'AnchorPolicy(mode={self.mode!r}, dtype={self.dtype}, device={self.device})'


def compile_exclude(patterns: Union[str, Iterable[str], None]) -> List['re.Pattern']:
    """Compile ``exclude`` regexes (matched with ``re.search`` on parameter names).

    Raises:
        ValueError: a pattern is not a valid regular expression.
    """
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out = []
    for pat in patterns:
        try:
            out.append(re.compile(pat))
        except re.error as err:
            raise ValueError(f'exclude pattern {pat!r} is not a valid regex: {err}') from err
    return out


def match_excluded(names: Dict[int, str], patterns: Sequence['re.Pattern'],
                   owner: str = 'DiGraP') -> set:
    """Ids of the parameters whose name matches any ``patterns``.

    Args:
        names: {id(param): name}.
        patterns: compiled regexes.
        owner: method name used in the warning.

    Warns:
        UserWarning for every pattern that matches no parameter name (a typo protects nothing).
    """
    excluded = set()
    for pat in patterns:
        hits = [pid for pid, name in names.items() if pat.search(name)]
        if not hits:
            sample = ', '.join(list(names.values())[:5])
            warnings.warn(f'{owner}: exclude pattern {pat.pattern!r} matches no parameter name; '
                          f'check it against the model (names look like: {sample}, ...)',
                          UserWarning, stacklevel=3)
        excluded.update(hits)
    return excluded
