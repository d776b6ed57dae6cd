"""``mmdigrap.TPGM``: the torch.optim face of TPGM, Trainable Projected Gradient Method
(CVPR 2023).

Math in :mod:`mmdigrap.core.baselines.tpgm`; reference loop in
:mod:`mmdigrap.core.reference.tpgm`; ``TPGMHook`` drives it in mmengine runs.
"""
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from ..core.baselines import (
    TPGM_NORMS,
    tpgm_clip_radii,
    tpgm_init_radius,
    tpgm_norms,
    tpgm_project,
    tpgm_ratios,
)
from ..core.digrap import batched_dot
from ..core.distributed import local_max, local_min
from ..core.scalar_adam import scalar_adam_update
from ._checks import check_choice, check_number
from ._hyper_adam import HyperAdamMixin
from ._tensors import write_
from .gradient_projection import GradientProjectionOptimizer, GroupDefault

__all__ = ['TPGM']

NamedParams = Optional[Iterable[Tuple[str, Tensor]]]


class TPGM(HyperAdamMixin, GradientProjectionOptimizer):
    r"""TPGM: projection radii trained on held-out validation data (algorithm.md §13.7).

    ``step()`` is the base optimizer alone (plus the theta0 snapshot before the first step).
    :meth:`tpgm_update` does TPGM's *projection update*: for ``max_iters`` iterations it builds
    the projected weights ``theta0 + clip(gamma / n, 0, 1) * (theta - theta0)``
    differentiably in the radii gamma (one per tensor; n the L2 or row-wise MARS norms of
    ``theta - theta0``), evaluates ``loss_fn`` on them (a validation batch), back-propagates to
    the gammas and takes an Adam step (lr ``proj_lr``); then it applies the projection in place.
    :meth:`apply_projection` only projects with the current radii. In an mmengine run
    ``TPGMHook`` calls them (the reference DomainNet schedule: radii trained at every
    ``interval``-th step, projection applied after every step).

    ``loss_fn(weights) -> loss``: ``weights`` maps parameter names (as given by
    ``named_parameters`` / :meth:`set_param_names`) to the projected tensors; evaluate the
    model with them, e.g. with ``torch.func.functional_call``, in eval mode, on the next
    validation batch::

        def loss_fn(weights):
            x, y = next(val_batches)
            return F.cross_entropy(torch.func.functional_call(model, weights, (x,)), y)
        opt.tpgm_update(loss_fn)

    Differences from ``PotatoTian/TPGM utils/tpgm.py``: no deep copy of the model (the
    projected tensors go through ``functional_call``); radii clip ``clamp(gamma, 1e-8, max n)``
    before every use (the ImageNet version's clip; the DomainNet version's conditional clip is
    the same up to 1e-8) and ratios ``hardtanh(relu(gamma) / (n + 1e-8), 0, 1)`` (DomainNet);
    MARS rows are along dim 0 for every tensor with >= 2 dims (the DomainNet code uses rows only
    for 2-D/4-D tensors, elementwise otherwise), elementwise for 1-D; the radius Adam keeps its
    state per tensor (checkpointed); under ``torch.distributed`` the radius gradients are
    averaged over ranks so every rank keeps the same radii; a non-finite validation gradient
    leaves the radii untouched; the initial radius min(n)/2 is set per tensor at its first
    projection *after its first gradient* (all tensors at once in the reference, where a tensor
    that had no gradient yet gets n = 0, i.e. a radius pinned at 1e-8).

    Args:
        base_optimizer: an already built optimizer (the reference: SGD, Nesterov momentum).
        proj_lr: learning rate of the radius Adam (> 0; reference 1e-2).
        norm: 'l2' (whole-tensor) or 'mars' (row-wise L1).
        max_iters: Adam iterations per :meth:`tpgm_update` (>= 0; reference 1).
        betas, eps: the radius Adam's constants (``torch.optim.Adam`` defaults).
        anchor, anchor_dtype, exclude, named_parameters: see
            :class:`~mmdigrap.optim.GradientProjectionOptimizer`; ``named_parameters`` (or
            ``TPGMHook``/``DiGraPHook``) is required for :meth:`tpgm_update`.

    Per param group (``group.setdefault``, schedulable, checkpointed): ``proj_lr``, ``norm``,
    ``hyper_betas`` (= ``betas``), ``hyper_eps`` (= ``eps``). ``max_iters`` is one setting for
    the whole update. ``opt.proj_lr`` etc. read the defaults.

    A tensor is projected (and gets radius state) only once it has had a gradient, and only
    while its param group has ``lr != 0``.

    State per projected tensor: ``step`` (int, steps with a gradient), ``anchor`` (S),
    ``tpgm_gamma``, ``tpgm_exp_avg``, ``tpgm_exp_avg_sq``, ``tpgm_step`` (0-d). Memory beyond
    the base optimizer: 1P, plus one projected copy of the weights and the activations of one
    validation forward/backward during an update.

    Raises:
        ValueError: a non-finite number, ``proj_lr <= 0``, ``max_iters < 0``, unknown ``norm``,
            bad betas/anchor (also for a param group's own values).
    """

    method = 'tpgm'
    _SCALARS = ('tpgm_gamma', 'tpgm_exp_avg', 'tpgm_exp_avg_sq', 'tpgm_step')

    proj_lr = GroupDefault('proj_lr')
    norm = GroupDefault('norm')  # betas, eps: HyperAdamMixin

    def __init__(self, base_optimizer: Optimizer, *, proj_lr: float = 1e-2, norm: str = 'l2',
                 max_iters: int = 1, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, anchor: str = 'pretrained', anchor_dtype=None,
                 exclude: Iterable[str] = (), named_parameters: NamedParams = None):
        hyper = self._check_hyper(dict(proj_lr=proj_lr, norm=norm, hyper_betas=betas,
                                       hyper_eps=eps), type(self).__name__)
        if not isinstance(max_iters, int) or isinstance(max_iters, bool) or max_iters < 0:
            raise ValueError(f'TPGM: max_iters must be an int >= 0, got {max_iters!r} (the '
                             'reference trains the radii 1 iteration per update)')
        self.max_iters = max_iters
        #: statistics of the last projection: params, dot (d val-loss / d gamma of the last
        #: iteration; 0 without training), sq_dist (after the projection), conflict (dot < 0),
        #: radius, active (some row was shrunk), val_loss
        self.last_stats: Dict[str, object] = {}
        super().__init__(base_optimizer, hyper=hyper, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    @classmethod
    def _check_hyper(cls, hyper: Dict[str, Any], owner: str) -> Dict[str, Any]:
        return dict(
            proj_lr=check_number(owner, 'proj_lr', hyper['proj_lr'], 0.0,
                                 'the reference uses proj_lr=1e-2', lo_open=True),
            norm=check_choice(owner, 'norm', hyper['norm'], TPGM_NORMS,
                              "'l2' = whole-tensor L2 ball, 'mars' = row-wise L1 ball"),
            **cls._check_hyper_adam(owner, hyper))

    def extra_repr(self) -> str:
        return (f'proj_lr={self.proj_lr}, norm={self.norm!r}, max_iters={self.max_iters}, '
                f'betas={self.betas}, eps={self.eps}')

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        self._anchors(params)  # theta0 before the first base step
        for p in params:  # from now on the tensor is projected
            st = self.state[p]
            st['step'] = st.get('step', 0) + 1

    def _upgrade_state(self) -> None:
        for st in self.state.values():  # older checkpoints: a radius means "had a gradient"
            if 'tpgm_gamma' in st and 'step' not in st:
                st['step'] = self.hyper_step

    def projected_parameters(self) -> List[Tensor]:
        """The tensors TPGM projects: managed, ``requires_grad``, not excluded, in a group with
        ``lr != 0``, and with a gradient at some step so far."""
        self._require_names()
        return [p for g in self._active_groups() for p in g['params']
                if p.requires_grad and not self.is_excluded(p)
                and self.state.get(p, {}).get('step', 0) > 0]

    def _init_state(self, p: Tensor, norm: Tensor) -> Dict:
        st = self.state[p]
        if 'tpgm_gamma' not in st:
            self._init_hyper_adam_state(st, self._SCALARS, p, tpgm_init_radius(norm))
        return st

    @staticmethod
    def _average_over_ranks(t: Tensor) -> Tensor:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = t.clone()
            dist.all_reduce(t)
            t /= dist.get_world_size()
        return t

    def tpgm_update(self, loss_fn: Optional[Callable[[Dict[str, Tensor]], Tensor]] = None,
                    max_iters: Optional[int] = None) -> Tensor:
        """Train the radii for ``max_iters`` Adam iterations on ``loss_fn``, then project.

        Args:
            loss_fn: ``loss_fn({name: projected tensor}) -> 0-d loss`` on validation data
                (called once per iteration; fetch the next batch inside). Not needed when
                ``max_iters`` is 0.
            max_iters: overrides the constructor's ``max_iters`` for this call.

        Returns:
            The detached validation losses of the iterations, shape (max_iters,) (no host
            sync).

        Raises:
            ValueError: ``max_iters > 0`` without a ``loss_fn``.
            RuntimeError: no parameter names (needed to build ``loss_fn``'s mapping).
        """
        iters = self.max_iters if max_iters is None else int(max_iters)
        if iters < 0:
            raise ValueError(f'TPGM.tpgm_update: max_iters must be >= 0, got {iters}')
        if iters > 0 and loss_fn is None:
            raise ValueError('TPGM.tpgm_update: training the radii needs a loss_fn(weights) on '
                             'validation data; use apply_projection() to only project')
        if iters > 0 and not self._names:
            raise RuntimeError(
                'TPGM.tpgm_update needs parameter names to hand the projected weights to '
                'loss_fn: pass `named_parameters=model.named_parameters()`, call '
                "`set_param_names(...)`, or build the optim_wrapper with "
                "`constructor='RobustFTOptimWrapperConstructor'`.")
        params = self._local_params(self.projected_parameters())
        if not params:
            return torch.zeros(0)
        names = [self.param_name(p) for p in params]
        self._group_of = {id(p): g for g in self.param_groups for p in g['params']}
        self._group_of.update({id(p): self._group_of[id(self.state.key(p))] for p in params})
        segs = []  # per bucket (group, device, dtype): the tensors and their radius state
        with torch.no_grad():
            for group, idx in self._buckets(params):
                ps = [params[i] for i in idx]
                anchors = self._anchors(ps)
                offsets, _ = self.anchor_policy.offsets(ps, anchors)
                offsets = [o.detach() for o in offsets]
                norms = tpgm_norms(offsets, group['norm'])
                red = self._reducer(ps)
                nmin = nmax = None
                if red.any_sharded:  # norms, min and max over the whole tensors
                    norms, nmin, nmax = self._reduce_norms(red, offsets, norms, group['norm'],
                                                           iters)
                states = [self._init_state(p, n if nmin is None else nmin[i])
                          for i, (p, n) in enumerate(zip(ps, norms))]
                scalars = [torch.stack([st[k] for st in states]) for k in self._SCALARS]
                anchors_w = ([a.to(o.dtype) for a, o in zip(anchors, offsets)]
                             if self.anchor_policy.stored else None)
                segs.append(dict(group=group, idx=idx, params=ps, offsets=offsets, norms=norms,
                                 states=states, scalars=scalars, anchors=anchors_w,
                                 hgrad=torch.zeros_like(scalars[0]), red=red, nmax=nmax))
        losses = []
        for _ in range(iters):
            proj: List[Optional[Tensor]] = [None] * len(params)
            leaves = []
            with torch.enable_grad():
                for s in segs:
                    s['scalars'][0] = tpgm_clip_radii(s['scalars'][0], s['norms'], s['nmax'])
                    leaf = s['scalars'][0].detach().requires_grad_(True)
                    leaves.append(leaf)
                    out = tpgm_project(s['anchors'], s['offsets'], tpgm_ratios(leaf, s['norms']))
                    for i, x, p in zip(s['idx'], out, s['params']):
                        proj[i] = x if x.dtype == p.dtype else x.to(p.dtype)
                loss = loss_fn(dict(zip(names, proj)))
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            with torch.no_grad():
                for s, grad in zip(segs, grads):
                    gamma, m, v, step = s['scalars']
                    hgrad = torch.zeros_like(gamma) if grad is None else grad.detach()
                    s['hgrad'] = hgrad = self._average_over_ranks(hgrad)
                    step = step + 1
                    beta1, beta2 = s['group']['hyper_betas']
                    gamma, m, v = scalar_adam_update(gamma, m, v, hgrad, step=step,
                                                     lr=s['group']['proj_lr'], beta1=beta1,
                                                     beta2=beta2, eps=s['group']['hyper_eps'])
                    s['scalars'] = [gamma, m, v, step]
                losses.append(loss.detach().reshape(()))
        parts = []
        with torch.no_grad():
            for s in segs:
                gamma = tpgm_clip_radii(s['scalars'][0], s['norms'], s['nmax'])
                ratios = tpgm_ratios(gamma, s['norms'])
                write_(s['params'], tpgm_project(s['anchors'], s['offsets'], ratios))
                for key, vec in zip(self._SCALARS, [gamma] + s['scalars'][1:]):
                    torch._foreach_copy_([st[key] for st in s['states']], list(vec.unbind()))
                moved = torch._foreach_mul(s['offsets'], ratios)
                sq_dist = batched_dot(moved, moved)
                active = torch.stack([(r < 1).any() for r in ratios])
                if s['red'].any_sharded:
                    sq_dist, act, _ = s['red'].reduce(sq_dist, active.to(sq_dist.dtype))
                    active = act > 0
                parts.append(dict(params=s['params'], dot=s['hgrad'], sq_dist=sq_dist,
                                  conflict=s['hgrad'] < 0, radius=gamma, active=active))
            val_loss = torch.stack(losses) if losses else segs[0]['scalars'][0].new_zeros(0)
            self.last_stats = dict(self._merge_stats(parts), val_loss=val_loss)
        return val_loss

    @staticmethod
    def _reduce_norms(red, offsets: List[Tensor], norms: List[Tensor], norm: str, iters: int):
        """(norms, min, max) over the whole logical tensors of a bucket with sharded tensors:
        one collective. 'l2' norms are reduced; 'mars' row norms (and the elementwise norms of
        1-D tensors) stay local.

        Raises:
            NotImplementedError: training the radii (``max_iters > 0``) on sharded parameters;
                ``norm='mars'`` on tensors sharded along a dim other than 0.
        """
        if iters > 0:
            raise NotImplementedError(
                'TPGM: training the projection radii on sharded (FSDP2) parameters is not '
                'supported (loss_fn would need the full weights); call apply_projection() '
                '(max_iters=0) under FSDP2, or train the radii with DDP')
        if norm == 'mars':
            red.require_rows_local("TPGM norm='mars'")
        dtype = offsets[0].dtype
        whole = [sh and norm == 'l2' for sh in red.sharded]
        sq = torch.stack([o.reshape(-1).dot(o.reshape(-1)) if w else o.new_zeros(())
                          for o, w in zip(offsets, whole)])
        nmax = torch.stack([local_max(n).to(dtype) for n in norms])
        nmin = torch.stack([local_min(n).to(dtype) for n in norms])
        sq, nmax, nmin = red.reduce(sq, nmax, nmin)
        norms = [sq[i].sqrt() if w else n for i, (n, w) in enumerate(zip(norms, whole))]
        wmask = torch.tensor(whole, device=sq.device)
        roots = torch.stack([n.reshape(()) if w else nmax.new_zeros(())
                             for n, w in zip(norms, whole)])
        return norms, torch.where(wmask, roots, nmin), torch.where(wmask, roots, nmax)

    def apply_projection(self) -> None:
        """Project every tensor onto its current radius (no training; the reference's
        ``tpgm_iters(model, apply=True)``)."""
        self.tpgm_update(None, max_iters=0)

    def radii(self) -> Dict[str, float]:
        """{parameter name: gamma} for every tensor with TPGM state (one host sync)."""
        return self.scalar_state('tpgm_gamma')
