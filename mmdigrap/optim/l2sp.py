"""``mmdigrap.L2SP``: the torch.optim face of L2-SP (Li et al., ICML 2018).

Math in :mod:`mmdigrap.core.baselines.l2sp`; reference loop in
:mod:`mmdigrap.core.reference.l2sp`.
"""
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..core.baselines import l2sp_grad_
from ._checks import check_number
from ._tensors import wide
from .gradient_projection import GradientProjectionOptimizer, GroupDefault

__all__ = ['L2SP']

NamedParams = Optional[Iterable[Tuple[str, Tensor]]]


class L2SP(GradientProjectionOptimizer):
    r"""L2-SP: ``g' = g + weight * (theta - theta0)`` before the base optimizer.

    ``docs/algorithm.md`` §13.4.

    Minimises ``L + weight/2 * ||theta - theta0||^2``, coupled: the penalty's gradient feeds the
    base optimizer's moments (with Adam it is *not* AdamW-style decoupled). With
    ``anchor='zero'`` (LoRA/PEFT) it is coupled L2 weight decay towards 0.

    Args:
        base_optimizer: an already built optimizer. Use ``weight_decay=0`` on it unless an
            additional decay towards 0 is wanted (the L2-SP paper also decays the new head
            towards 0: exclude the head and give its param group a weight decay).
        weight: the coefficient lambda (>= 0; needs tuning, e.g. 1e-3..1e-1). 0 = the base alone.
        anchor, anchor_dtype, exclude, named_parameters: see
            :class:`~mmdigrap.optim.GradientProjectionOptimizer`.

    Per param group (``group.setdefault``; ``paramwise_cfg`` custom keys and mmengine param
    schedulers can change it; checkpointed): ``weight``. ``opt.weight`` reads the default.

    Shapes: every tensor keeps its shape S; ``dot``/``sq_dist`` statistics are (N,).
    State per managed tensor: ``anchor`` (S; not stored with ``anchor='zero'``).
    Memory beyond the base optimizer: 1P (0 for PEFT). Compute: one axpy and two reductions
    (for the logged statistics) per tensor.

    Raises:
        ValueError: ``weight`` negative, not a finite number; bad anchor/exclude values.

    Example:
        >>> opt = L2SP(torch.optim.Adam(model.parameters(), lr=1e-4), weight=0.01,
        ...            exclude=[r'^head\.'], named_parameters=model.named_parameters())
    """

    method = 'l2sp'

    weight = GroupDefault('weight')

    def __init__(self, base_optimizer: Optimizer, *, weight: float = 1e-2,
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        hyper = self._check_hyper(dict(weight=weight), type(self).__name__)
        if hyper['weight'] == 0:
            warnings.warn('L2SP: weight=0 is the base optimizer alone; set weight > 0 '
                          '(e.g. 0.01) to pull towards theta0.', UserWarning, stacklevel=2)
        #: statistics of the last step: params, dot, sq_dist, conflict
        self.last_stats: Dict[str, object] = {}
        super().__init__(base_optimizer, hyper=hyper, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    @classmethod
    def _check_hyper(cls, hyper: Dict[str, Any], owner: str) -> Dict[str, Any]:
        return dict(weight=check_number(owner, 'weight', hyper['weight'], 0.0,
                                        'use a small positive coefficient such as 0.01'))

    def extra_repr(self) -> str:
        return f'weight={self.weight}'

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        parts = []
        for group, idx in self._buckets(params):
            ps, gs = [params[i] for i in idx], [grads[i] for i in idx]
            offsets, _ = self.anchor_policy.offsets(ps, self._anchors(ps))
            g32 = [wide(g) for g in gs]
            res = l2sp_grad_(g32, offsets, group['weight'])
            for g, g_new in zip(gs, g32):
                if g_new is not g:
                    g.copy_(g_new)
            dot, sq_dist = self._reducer(ps).sum(torch.stack([res.dot, res.sq_dist]))
            parts.append(dict(params=ps, dot=dot, sq_dist=sq_dist, conflict=dot < 0))
        self.last_stats = self._merge_stats(parts)
