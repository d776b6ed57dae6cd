"""``mmdigrap.FTP``: the torch.optim face of FTP, Fast Trainable Projection (NeurIPS 2023).

Math in :mod:`mmdigrap.core.baselines.ftp`; reference loop in
:mod:`mmdigrap.core.reference.ftp`.
"""
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..core.baselines import FTP_EPS, ftp_project_
from ._checks import check_number
from ._hyper_adam import HyperAdamMixin
from ._tensors import wide_dtype, write_
from .gradient_projection import GradientProjectionOptimizer, GroupDefault

__all__ = ['FTP']

NamedParams = Optional[Iterable[Tuple[str, Tensor]]]


class FTP(HyperAdamMixin, GradientProjectionOptimizer):
    r"""FTP: Fast Trainable Projection of the base optimizer's candidate step (algorithm.md §13.5).

    After ``base.step()`` proposes ``theta~``, every managed tensor is projected row by row onto
    a ball around theta0: ``theta = theta0 + clip(gamma / n, 0, 1) * (theta~ - theta0)``, with
    ``n`` the row-wise L1 (MARS) norms of the candidate offset and gamma a per-tensor radius
    trained by a scalar Adam (lr ``mu``) on the hyper-gradient
    ``G = sum_rows <g_t, c_{t-1}>_row / n_{t-1}`` (positive values scaled by ``k``), clipped to
    ``[1e-8, max row norm]``. At a tensor's first step gamma = 1e-8: the step is pulled back to
    theta0. See :mod:`mmdigrap.core.baselines.ftp` for the equations.

    Differences from ``GT-RIPL/FTP util/FTP.py`` (``AdamP``/``SGDP``):

    * FTP wraps *any* base optimizer's candidate (``p`` after ``base.step()``) instead of being
      built into its own Adam/SGD. With ``torch.optim.Adam`` (or ``AdamW``, whose decoupled
      decay is AdamP's ``lr * weight_decay * theta`` term) this is AdamP; with
      ``torch.optim.SGD`` (momentum, nesterov, coupled weight decay) it is SGDP. Both are
      checked against the literal re-implementation in :mod:`mmdigrap.core.reference.ftp`.
    * State is per parameter (keyed by the tensor, checkpointed), not lists indexed by call
      order, so tensors without a gradient on a step keep their state (algorithm.md §12.7/5.5). The
      hyper-Adam bias correction uses a per-tensor step count, equal to the reference's global
      ``t`` whenever every tensor gets a gradient at every step.
    * ``mu`` and the hyper-Adam betas/eps are arguments (hard-coded 1e-2, (0.9, 0.999), 1e-8
      there). A non-finite hyper-gradient leaves gamma and its moments untouched.
    * Row norms: rows are along dim 0; tensors with < 2 dims are one row (as the reference's
      ``torch.sum(dim=())`` does).

    Args:
        base_optimizer: an already built optimizer (the reference runs used weight decay 0).
        k: annealing factor of positive hyper-gradients, in [0, 1] (1 = strongest
            regularisation, 0 = gamma can only grow).
        mu: hyper-learning-rate of gamma (> 0; reference 1e-2).
        betas, eps: hyper-Adam constants.
        anchor, anchor_dtype, exclude, named_parameters: see
            :class:`~mmdigrap.optim.GradientProjectionOptimizer`. Exclude new heads.

    Shapes: ``gamma`` is a scalar per tensor; the row norms have shape ``[rows, 1, ...]``.
    Per param group (``group.setdefault``, schedulable, checkpointed): ``k``, ``mu``,
    ``hyper_betas`` (= ``betas``), ``hyper_eps`` (= ``eps``). ``opt.k`` etc. read the defaults.

    State per managed tensor: ``anchor`` (S), ``ftp_prev_offset`` (S, the previous unprojected
    offset), ``ftp_prev_scale`` (row shape, 1/n), ``ftp_gamma``, ``ftp_exp_avg``,
    ``ftp_exp_avg_sq``, ``ftp_step`` (0-d). Memory beyond the base optimizer: 2P (1P for PEFT)
    plus the row vectors.

    Raises:
        ValueError: a non-finite number, ``k`` outside [0, 1], ``mu <= 0``, bad
            betas/eps/anchor/exclude (also for a param group's own values).
    """

    method = 'ftp'
    _SCALARS = ('ftp_gamma', 'ftp_exp_avg', 'ftp_exp_avg_sq', 'ftp_step')

    k = GroupDefault('k')
    mu = GroupDefault('mu')  # betas, eps: HyperAdamMixin

    def __init__(self, base_optimizer: Optimizer, *, k: float = 1.0, mu: float = 1e-2,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = FTP_EPS,
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        hyper = self._check_hyper(dict(k=k, mu=mu, hyper_betas=betas, hyper_eps=eps),
                                  type(self).__name__)
        #: statistics of the last step: params, dot (hyper-gradient G), sq_dist (after the
        #: projection), conflict (G < 0: the gradient pushes away from theta0), radius, active
        self.last_stats: Dict[str, object] = {}
        super().__init__(base_optimizer, hyper=hyper, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    @classmethod
    def _check_hyper(cls, hyper: Dict[str, Any], owner: str) -> Dict[str, Any]:
        return dict(
            k=check_number(owner, 'k', hyper['k'], 0.0, 'k=1.0 is the reference default (k=0 '
                           'lets the radius only grow)', hi=1.0),
            mu=check_number(owner, 'mu', hyper['mu'], 0.0, 'the reference uses mu=1e-2; mu=0 '
                            'would pin every tensor to theta0 forever', lo_open=True),
            **cls._check_hyper_adam(owner, hyper))

    def extra_repr(self) -> str:
        return f'k={self.k}, mu={self.mu}, betas={self.betas}, eps={self.eps}'

    def _init_state(self, p: Tensor, group: Dict[str, Any]) -> Dict:
        st = self.state[p]
        if 'ftp_gamma' not in st:
            self._init_hyper_adam_state(st, self._SCALARS, p, group['hyper_eps'])
            st['ftp_prev_offset'] = torch.zeros_like(p, memory_format=torch.preserve_format)
            rows = [p.shape[0]] + [1] * (p.dim() - 1) if p.dim() >= 2 else [1] * p.dim()
            st['ftp_prev_scale'] = torch.zeros(rows, dtype=wide_dtype(p), device=p.device)
        return st

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        self._anchors(params)  # theta0 before the first base step

    def _post_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        parts = []
        for group, idx in self._buckets(params):
            parts.append(self._project([params[i] for i in idx], [grads[i] for i in idx], group))
        self.last_stats = self._merge_stats(parts)

    def _project(self, params: List[Tensor], grads: List[Tensor],
                 group: Dict[str, Any]) -> Dict[str, Any]:
        """FTP on one bucket (one param group, device and dtype)."""
        states = [self._init_state(p, group) for p in params]
        anchors = self._anchors(params)
        offsets, writable = self.anchor_policy.offsets(params, anchors)
        if not writable:  # zero anchor: the offsets may alias the weights
            offsets = [o.clone() if o.dtype == p.dtype else o for o, p in zip(offsets, params)]
        torch._foreach_add_([st['ftp_step'] for st in states], 1.0)
        gamma, m, v, step = (torch.stack([st[k] for st in states]) for k in self._SCALARS)
        beta1, beta2 = group['hyper_betas']
        res = ftp_project_(offsets, grads, [st['ftp_prev_offset'] for st in states],
                           [st['ftp_prev_scale'] for st in states], gamma, m, v, step,
                           k=group['k'], mu=group['mu'], beta1=beta1, beta2=beta2,
                           eps=group['hyper_eps'], reducer=self._reducer(params))
        if self.anchor_policy.stored:
            torch._foreach_add_(offsets, [a.to(o.dtype) for a, o in zip(anchors, offsets)])
        write_(params, offsets)
        for key, vec in zip(self._SCALARS[:3], (res.gamma, res.exp_avg, res.exp_avg_sq)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        return dict(params=params, dot=res.hypergrad, sq_dist=res.sq_dist,
                    conflict=res.hypergrad < 0, radius=res.gamma, active=res.active)

    def radii(self) -> Dict[str, float]:
        """{parameter name: gamma} for every tensor with FTP state (one host sync)."""
        return self.scalar_state('ftp_gamma')
