"""``mmdigrap.SPD``: the torch.optim face of SPD, Selective Projection Decay (NeurIPS 2024).

Math in :mod:`mmdigrap.core.baselines.spd`; reference loop in
:mod:`mmdigrap.core.reference.spd`.
"""
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..core.baselines.spd import SPD_NORMS, spd_condition, spd_decay_coefficients, spd_norms_reduced
from ..core.digrap import batched_dot
from ._checks import check_choice, check_number
from ._tensors import subtract_
from .gradient_projection import GradientProjectionOptimizer, GroupDefault

__all__ = ['SPD']

NamedParams = Optional[Iterable[Tuple[str, Tensor]]]


class SPD(GradientProjectionOptimizer):
    r"""SPD: Selective Projection Decay of the base optimizer's candidate (AdamSPD).

    ``docs/algorithm.md`` §13.6.

    With ``theta`` the weights before the step, ``theta~`` the base optimizer's candidate and
    ``c = -<g, theta - theta0>``: where ``c < 0``,
    ``theta = theta~ - weight * r * (theta~ - theta0)`` with
    ``r = clip((||theta~ - theta0|| - ||theta - theta0||) / ||theta~ - theta0||, 0, 1)``;
    elsewhere the candidate is kept. **The selection is the opposite of DiGraP's**
    (algorithm.md §13.6):
    SPD acts when ``<g, theta - theta0> > 0``.

    Differences from ``GT-RIPL/Selective-Projection-Decay adamSPD.py``: it wraps any base
    optimizer's candidate (with ``torch.optim.Adam`` and no weight decay it is AdamSPD, checked
    in the tests); a zero candidate offset gives r = 0 instead of a division by zero;
    ``norm='mars'`` is FRAMES-VQA AdamH's row-wise option; ``anchor='zero'`` is AdamH's LoRA
    mode.

    Args:
        base_optimizer: an already built optimizer; the reference is Adam *without* weight
            decay (its ``weight_decay`` argument is this ``weight``).
        weight: the decay strength lambda, >= 0 (the authors' PaliGemma runs: 0.5).
        norm: 'l2' (whole tensor, AdamSPD) or 'mars' (row-wise L1, one ratio per row).
        anchor, anchor_dtype, exclude, named_parameters: see
            :class:`~mmdigrap.optim.GradientProjectionOptimizer`.

    Per param group (``group.setdefault``, schedulable, checkpointed): ``weight``, ``norm``.
    ``opt.weight`` / ``opt.norm`` read the defaults.

    State per managed tensor: ``anchor`` (S; none for PEFT). Memory beyond the base optimizer:
    1P (0 for PEFT) plus one transient offset during the step. Compute: 1 dot and 2 norms per
    tensor.

    Raises:
        ValueError: ``weight`` negative or not finite, unknown ``norm``, bad anchor/exclude
            values (also for a param group's own values).
    """

    method = 'spd'

    weight = GroupDefault('weight')
    norm = GroupDefault('norm')

    def __init__(self, base_optimizer: Optimizer, *, weight: float = 0.5, norm: str = 'l2',
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        hyper = self._check_hyper(dict(weight=weight, norm=norm), type(self).__name__)
        if hyper['weight'] == 0:
            warnings.warn('SPD: weight=0 is the base optimizer alone; set weight > 0 '
                          '(e.g. 0.5).', UserWarning, stacklevel=2)
        #: statistics of the last step: params, dot (<g, theta - theta0>), sq_dist (before the
        #: step), conflict (dot < 0, DiGraP's sense), selected (c < 0), decayed
        self.last_stats: Dict[str, object] = {}
        self._pending: List = []
        super().__init__(base_optimizer, hyper=hyper, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    @classmethod
    def _check_hyper(cls, hyper: Dict[str, Any], owner: str) -> Dict[str, Any]:
        return dict(
            weight=check_number(owner, 'weight', hyper['weight'], 0.0,
                                'the authors used 0.5 (the AdamSPD weight_decay)'),
            norm=check_choice(owner, 'norm', hyper['norm'], SPD_NORMS,
                              "'l2' = AdamSPD, 'mars' = FRAMES-VQA AdamH's row-wise variant"))

    def extra_repr(self) -> str:
        return f'weight={self.weight}, norm={self.norm!r}'

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        self._pending = []
        for group, idx in self._buckets(params):
            ps = [params[i] for i in idx]
            offsets, _ = self.anchor_policy.offsets(ps, self._anchors(ps))
            g32 = [grads[i] if grads[i].dtype == o.dtype else grads[i].to(o.dtype)
                   for i, o in zip(idx, offsets)]
            sums = torch.stack([spd_condition(g32, offsets), batched_dot(offsets, offsets)])
            norms, sums = spd_norms_reduced(offsets, group['norm'], self._reducer(ps), sums)
            self._pending.append((sums[0], norms, sums[1]))

    def _post_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        pending, self._pending = self._pending, []
        parts = []
        for (group, idx), (cond, prev_norms, sq_dist) in zip(self._buckets(params), pending):
            ps = [params[i] for i in idx]
            offsets, writable = self.anchor_policy.offsets(ps, self._anchors(ps))
            red = self._reducer(ps)
            dec = spd_decay_coefficients(offsets, prev_norms, cond, group['weight'],
                                         group['norm'], curr=spd_norms_reduced(
                                             offsets, group['norm'], red)[0])
            if red.any_sharded and group['norm'] == 'mars':  # row coefficients are local
                dec = dec._replace(decayed=red.reduce(maxs=dec.decayed.float())[1] > 0)
            coefs = [c.to(o.dtype) for c, o in zip(dec.coefs, offsets)]
            if writable:
                torch._foreach_mul_(offsets, coefs)
                deltas = offsets
            else:
                deltas = torch._foreach_mul(offsets, coefs)
            subtract_(ps, deltas)  # theta~ - weight * r * (theta~ - theta0)
            parts.append(dict(params=ps, dot=-cond, sq_dist=sq_dist, conflict=cond > 0,
                              selected=dec.selected, decayed=dec.decayed))
        self.last_stats = self._merge_stats(parts)
