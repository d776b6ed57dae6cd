"""``mmdigrap.DiGraP``: the torch.optim face of Directional Gradient Projection."""
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..core.digrap import (
    HYPERGRAD_NORMS,
    batched_dot,
    digrap_project_,
    finish_hypergradient,
    hypergradient,
    hypergradient_partials,
    omega_adam_update,
)
from ..core.digrap_fused import FusedDiGraP, compile_available
from ..core.digrap_stream import Scratch, stream_project_
from ..core.digrap_variants import HYPERGRAD_SOURCES, PROJECT_MODES, cosine, update_project_
from ._checks import check_betas, check_choice, check_number
from .gradient_projection import GradientProjectionOptimizer, GroupDefault

__all__ = ['DiGraP']

_SCALARS = ('omega', 'omega_exp_avg', 'omega_exp_avg_sq')
_WIDE = (torch.float32, torch.float64)
_FUSED = (True, False, 'auto')
#: fused='auto' compiles a bucket from this many elements on (below it the one-time compile
#: never pays back in a short run; docs/results/step_bench.md)
AUTO_COMPILE_NUMEL = 1 << 24
#: devices on which fused='auto' compiles. Not the CPU: inductor's cold compile there takes about
#: a minute per process (docs/results/step_bench.md), more than it saves in a run of a few
#: hundred steps; pass fused=True to compile on the CPU for long runs.
AUTO_COMPILE_DEVICES = ('cuda',)
#: devices whose buckets take the tensor-by-tensor eager transform (mmdigrap.core.digrap_stream,
#: the same results as the list path); elsewhere the foreach list path (one launch per list)
STREAM_DEVICES = ('cpu',)
#: extra ``last_stats`` keys of ``track_update=True`` (and their meaning, section 14.3)
TRACK_KEYS = ('grad_cos', 'proj_grad_cos', 'base_update_cos', 'update_cos', 'radial_update')


class DiGraP(GradientProjectionOptimizer):
    r"""Directional Gradient Projection around any base optimizer (ICLR 2025, Algorithm 1).

    Per parameter tensor (shape S), with d = theta - theta0 and g the raw gradient:
    if <g, d> < 0 (the task gradient pulls away from the pre-trained weights) the gradient
    becomes ``g - omega * (<g,d>/(||d||^2+1e-8)) d``; else it is left alone. The projection
    strength omega (a scalar per tensor, starting at ``omega_init``) is trained by its own
    Adam (learning rate ``mu``, algorithm.md §5) on the hyper-gradient
    ``Norm(g_t, P_{t-1})`` (Eq. 8). The regularisation gradient is not added. Then the
    (unmodified) base optimizer steps on the projected gradients.

    Args:
        base_optimizer: an already built optimizer (``torch.optim.AdamW(...)`` etc.). Its
            ``weight_decay`` still applies; the paper uses Adam with no weight decay.
        mu: hyper-learning-rate of omega (>= 0; paper/code default 0.5; 0 freezes omega).
        betas: hyper-Adam (beta1, beta2), in [0, 1).
        eps: hyper-Adam epsilon (> 0).
        omega_max: upper clip kappa of omega (paper: 1). 0 disables the projection (warns).
        omega_init: omega at step 1 (paper: 0). In [0, omega_max].
        trainable: False keeps omega at ``omega_init`` forever (the fixed-strength
            PCGrad-style ablation, algorithm.md §13.8).
        hypergrad_norm: 'row' (authors' row-wise normalisation; whole-tensor cosine for 1-D)
            or 'tensor' (whole-tensor cosine).
        anchor: 'pretrained' (theta0 = weights at the first step) or 'zero' (LoRA/PEFT).
        anchor_dtype: storage dtype of theta0 copies (None = parameter dtype).
        anchor_device: storage device of theta0 copies (None = the parameter's; 'cpu' offloads
            them for very large models at the cost of a copy per step).
        exclude: regexes on parameter names whose tensors get no projection (new heads).
        named_parameters: ``model.named_parameters()`` (names for ``exclude`` and logging).
        store_projection: True keeps P_{t-1} (one parameter-sized buffer per tensor, exact
            spec); False is the lean mode (a scalar per tensor; the hyper-gradient uses the
            current offset, algorithm.md §11), saving 1P of memory.
        project: 'gradient' (the paper: project the raw gradient before the base step) or
            'update' (a variant, ``docs/algorithm.md`` section 14.1: project the base
            optimizer's update after its step, so Adam's preconditioner cannot undo it; needs
            ``store_projection=True``).
        hypergrad_source: 'train' (the paper: h_t from the training gradient) or 'val' (a
            variant, section 14.2: h_t from the gradient of a held-out validation batch, given
            by :meth:`set_val_gradients`; in mmengine runs ``DiGraPValHook`` does it).
        track_update: also record the diagnostics of section 14.3 in ``last_stats``
            (:data:`TRACK_KEYS`: cosines of the raw / projected gradient and of the update with
            d, the radial update); costs a copy of the weights per step. Off by default.
        fused: the kernels of the transform (:mod:`mmdigrap.core.digrap_fused`, same results
            to ~1e-7). True: the two-pass transform compiled with ``torch.compile`` (one
            read of each input for all reductions, one write of each output; the first step
            of a process pays the compilation, see ``compile_seconds``). False: the eager
            reference path; on the CPU it runs tensor by tensor
            (:mod:`mmdigrap.core.digrap_stream`: the same kernels as the list path, equal
            bit for bit in full mode, to ~1e-7 in lean mode, and faster; the lean mode is
            the faster of the two there). 'auto' (default): compiled for buckets of >= 2**24
            elements on CUDA when ``torch.compile`` works there, else the eager path (full
            mode, and lean mode on the CPU) or the uncompiled two-pass math (lean mode on
            CUDA, the faster one there). The CPU default is eager: compiled, a step of the
            embedded job is no faster in full mode and ~15% faster in lean mode, which does
            not pay back the compilation (cold cache ~1 min, warm ~5 s a process) within a
            run of a few hundred steps. A failing compilation warns once and falls back.
            Anchors on another device (``anchor_device``), sharded tensors and the variants
            (``project``, ``hypergrad_source='val'``, ``track_update``) always use the eager
            path (the list path for all but ``hypergrad_source='val'``).

    Per param group (``group.setdefault`` with the arguments above as defaults, so
    ``paramwise_cfg=dict(custom_keys={'neck': dict(mu=0.1)})`` or an mmengine
    ``param_scheduler`` with ``param_name='mu'`` change them, and the checkpoint keeps them):
    ``mu``, ``hyper_betas`` (= ``betas``), ``hyper_eps`` (= ``eps``; both renamed so that they
    never clash with Adam's own ``betas``/``eps`` in the same group), ``omega_max``,
    ``omega_init``, ``trainable``, ``hypergrad_norm``, ``project``, ``hypergrad_source``.
    ``opt.mu`` etc. read the defaults.

    State per managed tensor (in ``self.state[p]``): ``anchor`` (S, pretrained mode),
    ``omega``, ``omega_exp_avg``, ``omega_exp_avg_sq`` (0-d float32), ``prev_proj`` (S) or
    ``prev_coef`` (0-d), and ``step`` (int): the tensor's own hyper-step count t for the
    hyper-Adam bias correction (as ``torch.optim.Adam`` keeps ``state['step']``). A tensor
    that first gets a gradient late starts fresh at t = 1; when every tensor has a gradient from
    the first step on, t equals the authors' global counter. Memory beyond the base optimizer:
    2P (1P lean, 1P/0P with zero anchor).

    Raises:
        ValueError: a non-finite number, ``mu < 0``, ``omega_max < 0``, ``omega_init`` outside
            [0, omega_max], betas outside [0, 1), ``eps <= 0``, unknown ``hypergrad_norm`` or
            ``anchor`` (also for a param group's own values).

    Example:
        >>> base = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
        >>> opt = DiGraP(base, mu=0.5, exclude=[r'^head\.'],
        ...              named_parameters=model.named_parameters())
        >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    method = 'digrap'

    mu = GroupDefault('mu')
    betas = GroupDefault('hyper_betas')
    eps = GroupDefault('hyper_eps')
    omega_max = GroupDefault('omega_max')
    omega_init = GroupDefault('omega_init')
    trainable = GroupDefault('trainable')
    hypergrad_norm = GroupDefault('hypergrad_norm')
    project = GroupDefault('project')
    hypergrad_source = GroupDefault('hypergrad_source')

    def __init__(self, base_optimizer: Optimizer, *, mu: float = 0.5,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 omega_max: float = 1.0, omega_init: float = 0.0, trainable: bool = True,
                 hypergrad_norm: str = 'row', anchor: str = 'pretrained', anchor_dtype=None,
                 anchor_device=None, exclude: Iterable[str] = (),
                 named_parameters: Optional[Iterable[Tuple[str, Tensor]]] = None,
                 store_projection: bool = True, project: str = 'gradient',
                 hypergrad_source: str = 'train', track_update: bool = False,
                 fused='auto'):
        owner = type(self).__name__
        if not any(fused is f or (isinstance(f, str) and fused == f) for f in _FUSED):
            raise ValueError(f"{owner}: fused must be True, False or 'auto', got {fused!r} "
                             "('auto' = the fastest correct path on this machine)")
        self.fused = fused
        self._fused_impl = {}
        hyper = self._check_hyper(dict(
            mu=mu, hyper_betas=betas, hyper_eps=eps, omega_max=omega_max, omega_init=omega_init,
            trainable=trainable, hypergrad_norm=hypergrad_norm, project=project,
            hypergrad_source=hypergrad_source), owner)
        if hyper['omega_max'] == 0:
            warnings.warn(f'{owner}: omega_max=0 disables the projection; this is the base '
                          'optimizer alone. Use omega_max=1.0 (the paper) to project.',
                          UserWarning, stacklevel=2)
        self.store_projection = bool(store_projection)
        self.track_update = bool(track_update)
        #: per-step statistics of the last step, (N,) tensors: params, omega, dot (<g, d>),
        #: sq_dist, conflict (the projection's trigger), hgrad (h_t; NaN: no hyper-step), and
        #: with ``track_update`` the :data:`TRACK_KEYS`
        self.last_stats: Dict[str, object] = {}
        self._pending: List[Tuple] = []
        self._warned_no_val = False
        super().__init__(base_optimizer, hyper=hyper, anchor=anchor, anchor_dtype=anchor_dtype,
                         anchor_device=anchor_device, exclude=exclude,
                         named_parameters=named_parameters)

    @classmethod
    def _check_hyper(cls, hyper: Dict[str, Any], owner: str) -> Dict[str, Any]:
        out = dict(hyper)
        out['mu'] = check_number(owner, 'mu', hyper['mu'], 0.0,
                                 'mu is the hyper-learning-rate of omega: the paper uses 0.5 '
                                 '(sweep 0.01-10), mu=0 freezes omega')
        out['omega_max'] = check_number(owner, 'omega_max', hyper['omega_max'], 0.0,
                                        'the paper clips omega to [0, 1] (omega_max=1.0)')
        out['omega_init'] = check_number(
            owner, 'omega_init', hyper['omega_init'], 0.0,
            f"omega_init must lie in [0, omega_max={out['omega_max']:g}] (the paper starts at 0)",
            hi=out['omega_max'])
        out['hyper_betas'] = check_betas(owner, hyper['hyper_betas'], 'betas')
        out['hyper_eps'] = check_number(owner, 'eps', hyper['hyper_eps'], 0.0, 'use 1e-8',
                                        lo_open=True)
        out['trainable'] = bool(hyper['trainable'])
        check_choice(owner, 'hypergrad_norm', hyper['hypergrad_norm'], HYPERGRAD_NORMS,
                     "'row' = the authors' code")
        check_choice(owner, 'project', hyper.get('project', 'gradient'), PROJECT_MODES,
                     "'gradient' = the paper, 'update' = project the base optimizer's update")
        check_choice(owner, 'hypergrad_source', hyper.get('hypergrad_source', 'train'),
                     HYPERGRAD_SOURCES, "'train' = the paper, 'val' = a held-out batch given by "
                     "set_val_gradients / DiGraPValHook")
        return out

    def _init_group(self, group: Dict[str, Any], index: int) -> None:
        super()._init_group(group, index)
        if group.get('project') == 'update' and not self.store_projection:
            raise ValueError(f"{type(self).__name__} (param group {index}): project='update' "
                             'keeps the offset d across the base step in the projection buffer; '
                             'use store_projection=True (the default)')

    def extra_repr(self) -> str:
        return (f'mu={self.mu}, betas={self.betas}, eps={self.eps}, omega_max={self.omega_max}, '
                f'omega_init={self.omega_init}, trainable={self.trainable}, '
                f'hypergrad_norm={self.hypergrad_norm!r}, store_projection={self.store_projection}'
                + (f', project={self.project!r}' if self.project != 'gradient' else '')
                + (f', hypergrad_source={self.hypergrad_source!r}'
                   if self.hypergrad_source != 'train' else '')
                + f', fused={self.fused!r}')

    def _init_state(self, p: Tensor, group: Optional[Dict[str, Any]] = None) -> Dict:
        """The tensor's DiGraP state, created with its group's ``omega_init`` (default: the
        constructor's) the first time."""
        group = self.method_defaults if group is None else group
        st = self.state[p]
        if 'omega' not in st:
            kw = dict(dtype=torch.float64 if p.dtype == torch.float64 else torch.float32,
                      device=p.device)
            st['omega'] = torch.full((), float(group['omega_init']), **kw)
            st['omega_exp_avg'] = torch.zeros((), **kw)
            st['omega_exp_avg_sq'] = torch.zeros((), **kw)
            if self.store_projection:
                st['prev_proj'] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                st['prev_coef'] = torch.zeros((), **kw)
            st['step'] = 0
        return st

    def _upgrade_state(self) -> None:
        for st in self.state.values():  # before per-tensor counts: the global counter
            if 'omega' in st and 'step' not in st:
                st['step'] = self.hyper_step

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        states = [self._init_state(p, self._group_of[id(p)]) for p in params]
        for st in states:
            st['step'] += 1
        steps = [st['step'] for st in states]
        parts = []
        self._pending = []
        for group, idx in self._buckets(params, steps):
            if group['project'] == 'update':
                parts.append(self._project_update(
                    [params[i] for i in idx], [grads[i] for i in idx],
                    [states[i] for i in idx], group, steps[idx[0]]))
                continue
            mode = self._fused_mode([params[i] for i in idx], group)
            if mode is not None:
                parts.append(self._project_fused(
                    [params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                    group, steps[idx[0]], mode))
                continue
            parts.append(self._project([params[i] for i in idx], [grads[i] for i in idx],
                                       [states[i] for i in idx], group, steps[idx[0]]))
        self._parts = parts
        self.last_stats = self._merge_stats(parts)

    def _project(self, params: List[Tensor], grads: List[Tensor], states: List[Dict],
                 group: Dict[str, Any], step: int) -> Dict[str, Any]:
        """DiGraP on one bucket (one param group, device, dtype and hyper-step count)."""
        anchors = self._anchors(params)
        g32 = [g if g.dtype in _WIDE else g.float() for g in grads]  # f16/bf16 -> f32
        omega, m, v = (torch.stack([st[k] for st in states]) for k in _SCALARS)
        mu = float(group['mu'])
        train = bool(group['trainable']) and mu > 0 and step > 1
        prev = [st['prev_proj'] for st in states] if self.store_projection else None
        red = self._reducer(params)  # sharded (FSDP2) tensors: sums over the ranks
        norm = group['hypergrad_norm']
        val = group['hypergrad_source'] == 'val'
        if red.any_sharded and (val or self.track_update):
            self._refuse_sharded_variant(params, "hypergrad_source='val' / track_update")
        if norm == 'row' and train and red.any_sharded:
            red.require_rows_local("hypergrad_norm='row'", [self.param_name(p) for p in params])
        hgrad = None
        if train and val:  # Norm(g_val, P_{t-1}), computed by set_val_gradients
            hgrad = self._take_val_hgrad(states, omega)
        beta1, beta2 = group['hyper_betas']
        hyper = dict(step=step, mu=mu, beta1=beta1, beta2=beta2, eps=group['hyper_eps'],
                     omega_max=group['omega_max'])
        track = None
        if self._streams(params, g32, prev, red):  # CPU: tensor by tensor, same results
            lean_sign = (torch.sign(torch.stack([st['prev_coef'] for st in states]))
                         if prev is None and train and not val else None)
            res, hgrad = stream_project_(
                g32, [p.detach() for p in params], anchors, prev, omega, m, v, norm=norm,
                compute_hgrad=train and not val, hgrad=hgrad, lean_sign=lean_sign,
                scratch=self._scratch(), **hyper)
        else:
            track = self._track_before(params, anchors, g32) if self.track_update else None
            res, hgrad = self._project_lists(params, g32, states, anchors, prev, omega, m, v,
                                             hgrad, red, norm, train and not val, hyper)
        for g, g_new in zip(grads, g32):
            if g_new is not g:
                g.copy_(g_new)
        for key, vec in zip(_SCALARS, (res.omega, res.exp_avg, res.exp_avg_sq)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        if prev is None:
            torch._foreach_copy_([st['prev_coef'] for st in states], list(res.proj_coef.unbind()))
        stats = dict(params=params, omega=res.omega, dot=res.dot, sq_dist=res.sq_dist,
                     conflict=res.conflict, hgrad=self._hgrad_stat(hgrad, res.omega))
        if track is not None:
            self._pending.append(('track', stats, params, anchors, g32, res.dot) + track)
        return stats

    def _project_lists(self, params, g32, states, anchors, prev, omega, m, v, hgrad, red, norm,
                       own_hgrad: bool, hyper: Dict[str, Any]):
        """The list path of :meth:`_project` (``hypergradient`` + ``digrap_project_``, foreach
        kernels over the bucket): CUDA, sharded (FSDP2) tensors, half-precision weights and
        ``track_update``. ``own_hgrad``: form the hyper-gradient from the training gradient.
        Returns (DiGraPStepResult, hyper-gradient or None)."""
        if own_hgrad and prev is not None:  # Norm(g_t, P_{t-1}), before P is overwritten
            if red.any_sharded:
                hgrad = hypergradient_partials(g32, prev, norm, red.sharded, red.rows_local)
            else:
                hgrad = hypergradient(g32, prev, norm)
        if prev is not None and all(b.dtype == g.dtype for b, g in zip(prev, g32)):
            # allocation-free path: d is written into the P buffers, then scaled into P_t
            offsets = proj_out = self.anchor_policy.offsets_into(prev, params, anchors)
        else:
            offsets, _ = self.anchor_policy.offsets(params, anchors)
            proj_out = prev
        lean = own_hgrad and prev is None
        if lean:  # lean mode: P_{t-1} = c_{t-1} d_{t-1} ~ c_{t-1} d_t
            hgrad = (hypergradient_partials(g32, offsets, norm, red.sharded, red.rows_local)
                     if red.any_sharded else hypergradient(g32, offsets, norm))
        dot = sq_dist = None
        if red.any_sharded:  # one all-reduce for <g, d>, ||d||^2 and the hyper-gradient
            sums = torch.stack([batched_dot(g32, offsets), batched_dot(offsets, offsets)])
            sums = red.sum(sums if hgrad is None else torch.cat([sums, hgrad]))
            dot, sq_dist = sums[0], sums[1]
            if hgrad is not None:
                hgrad = finish_hypergradient(sums[2:], red.sharded, red.rows_local, norm)
        if lean:
            hgrad = torch.sign(torch.stack([st['prev_coef'] for st in states])) * hgrad
        res = digrap_project_(g32, offsets, omega, m, v, hgrad, proj_out=proj_out, dot=dot,
                              sq_dist=sq_dist, **hyper)
        return res, hgrad

    def _streams(self, params: List[Tensor], g32: List[Tensor], prev, red) -> bool:
        """Whether a bucket takes :func:`~mmdigrap.core.digrap_stream.stream_project_`: CPU
        tensors (:data:`STREAM_DEVICES`), not sharded, no ``track_update``, float32/float64
        weights with gradients (and P buffers) of their own dtype, anchors on their device."""
        if (self.__dict__.get('track_update') or red.any_sharded
                or params[0].device.type not in STREAM_DEVICES):
            return False
        dev = self.anchor_policy.device
        if dev is not None and torch.device(dev) != params[0].device:
            return False
        return all(p.dtype in _WIDE and g.dtype == p.dtype for p, g in zip(params, g32)) and (
            prev is None or all(b.dtype == g.dtype for b, g in zip(prev, g32)))

    def _scratch(self) -> Scratch:
        """The reused temporaries of the streamed transform (not state, not saved)."""
        scratch = self.__dict__.get('_scratch_bufs')
        if scratch is None:
            scratch = self._scratch_bufs = Scratch()
        return scratch

    # ------------------------------------------------------- variants (algorithm.md 14)
    def _project_update(self, params: List[Tensor], grads: List[Tensor], states: List[Dict],
                        group: Dict[str, Any], step: int) -> Dict[str, Any]:
        """``project='update'``, one bucket, before the base step: omega's hyper-step with
        ``h_t = Norm(g_t or g_val, Q_{t-1})``, then ``d_t`` into the projection buffers; the
        projection itself runs in :meth:`_post_step` (section 14.1). Gradients are untouched."""
        if self._reducer(params).any_sharded:
            self._refuse_sharded_variant(params, "project='update'")
        anchors = self._anchors(params)
        g32 = [g if g.dtype in _WIDE else g.float() for g in grads]
        omega, m, v = (torch.stack([st[k] for st in states]) for k in _SCALARS)
        mu = float(group['mu'])
        beta1, beta2 = group['hyper_betas']
        prev = [st['prev_proj'] for st in states]
        hgrad = None
        if bool(group['trainable']) and mu > 0 and step > 1:
            if group['hypergrad_source'] == 'val':
                hgrad = self._take_val_hgrad(states, omega)
            else:
                hgrad = hypergradient(g32, prev, group['hypergrad_norm'])
            omega, m, v = omega_adam_update(
                omega, m, v, hgrad, step=step, mu=mu, beta1=beta1, beta2=beta2,
                eps=group['hyper_eps'], omega_max=group['omega_max'])
            for key, vec in zip(_SCALARS, (omega, m, v)):
                torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        if all(b.dtype in _WIDE for b in prev):  # d_t kept in the Q buffers over the step
            offsets = self.anchor_policy.offsets_into(prev, params, anchors)
        else:  # half-precision weights: a float32 copy of d_t
            offsets, _ = self.anchor_policy.offsets(params, anchors)
        dot = batched_dot(g32, offsets)
        stats = dict(params=params, omega=omega, dot=dot, sq_dist=batched_dot(offsets, offsets),
                     conflict=torch.zeros_like(dot, dtype=torch.bool),
                     hgrad=self._hgrad_stat(hgrad, omega))
        gsq = batched_dot(g32, g32) if self.track_update else None
        self._pending.append(('update', stats, params, anchors, offsets, prev, omega, gsq))
        return stats

    def _track_before(self, params: List[Tensor], anchors, g32: List[Tensor]) -> Tuple:
        """``track_update`` in gradient mode: ||g||^2 before the projection and a float copy
        of theta_{t-1} (for Delta and d after the base step)."""
        old = [p.detach().to(g.dtype, copy=True) for p, g in zip(params, g32)]
        return batched_dot(g32, g32), old

    def _post_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        """``project='update'``: project the base update (section 14.1); ``track_update``:
        the update statistics (14.3). Nothing for the faithful default."""
        if not self._pending:
            return
        for job in self._pending:
            if job[0] == 'update':
                self._apply_update_projection(*job[1:])
            else:
                self._track_after(*job[1:])
        self._pending = []
        parts = self._parts
        keys = set().union(*(part.keys() for part in parts))
        for part in parts:  # buckets without the extra keys get NaN there
            for key in keys - set(part):
                part[key] = torch.full_like(part['omega'], float('nan'))
        self.last_stats = self._merge_stats(parts)

    def _apply_update_projection(self, stats, params, anchors, offsets, prev, omega, gsq):
        new, writable = self.anchor_policy.offsets(params, anchors)  # theta_t' - theta0
        if writable:
            torch._foreach_sub_(new, offsets)
            deltas = new
        else:
            deltas = torch._foreach_sub(new, offsets)
        res = update_project_(params, deltas, offsets, omega, proj_out=prev)
        stats['conflict'] = res.conflict
        if gsq is not None:
            q = res.sq_dist
            grad_cos = cosine(-stats['dot'], gsq, q)
            stats.update(grad_cos=grad_cos, proj_grad_cos=grad_cos,
                         base_update_cos=cosine(res.dot, res.sq_delta, q),
                         update_cos=cosine(res.final_dot, res.final_sq_delta, q),
                         radial_update=res.final_dot / q.sqrt().clamp_min(1e-12))

    def _track_after(self, stats, params, anchors, g32, dot, gsq, old):
        """Cosines with d_t = theta_{t-1} - theta0 of -g, of the projected -g~ and of the
        update Delta = theta_t - theta_{t-1}; the radial update <Delta, d>/||d||."""
        d, _ = self.anchor_policy.offsets(old, anchors)  # zero anchor: d = theta_{t-1}
        new = [p.detach().to(o.dtype) for p, o in zip(params, old)]
        deltas = torch._foreach_sub(new, old)
        q = batched_dot(d, d)
        pdot, psq = batched_dot(g32, d), batched_dot(g32, g32)  # g32 holds g~ now
        udot, usq = batched_dot(deltas, d), batched_dot(deltas, deltas)
        ucos = cosine(udot, usq, q)
        stats.update(grad_cos=cosine(-dot, gsq, q), proj_grad_cos=cosine(-pdot, psq, q),
                     base_update_cos=ucos, update_cos=ucos,
                     radial_update=udot / q.sqrt().clamp_min(1e-12))

    def _refuse_sharded_variant(self, params: List[Tensor], what: str) -> None:
        """The variants of section 14 have no all-reduced (FSDP2) form yet."""
        raise NotImplementedError(
            f'{type(self).__name__}: {what} (docs/algorithm.md section 14) is not implemented '
            'for sharded (FSDP2) parameters, e.g. '
            f'{self.param_name(params[0])}; use the faithful DiGraP (the defaults) with FSDP2, '
            'or train without sharding')

    @staticmethod
    def _hgrad_stat(hgrad: Optional[Tensor], omega: Tensor) -> Tensor:
        return torch.full_like(omega, float('nan')) if hgrad is None else hgrad

    def _take_val_hgrad(self, states: List[Dict], like: Tensor) -> Tensor:
        """The pending validation hyper-gradients (NaN where none arrived: no hyper-step)."""
        nan = torch.full((), float('nan'), dtype=like.dtype, device=like.device)
        vals = [st.pop('val_hgrad', None) for st in states]
        if all(v is None for v in vals) and not self.__dict__.get('_warned_no_val'):
            self._warned_no_val = True
            warnings.warn(f"{type(self).__name__}: hypergrad_source='val' but no validation "
                          'gradients arrived before this step, so omega stays where it is. Call '
                          "opt.set_val_gradients(...) after each step, or add "
                          "dict(type='DiGraPValHook') to custom_hooks.", UserWarning,
                          stacklevel=4)
        return torch.stack([nan if v is None else v.to(like.dtype) for v in vals])

    @torch.no_grad()
    def set_val_gradients(self, params_and_grads: Iterable[Tuple[Tensor, Optional[Tensor]]]
                          ) -> int:
        """Give the next step its validation hyper-gradients (``hypergrad_source='val'``).

        Call after step t-1, with the gradients of a held-out validation loss at the current
        weights theta_{t-1}; step t then uses ``h_t = Norm(g_val, P_{t-1})`` (section 14.2)
        instead of the training gradient. Only one scalar per tensor is kept (0-d
        ``state['val_hgrad']``), never the gradients. No host synchronisation.

        Args:
            params_and_grads: (parameter, gradient or None) pairs, e.g.
                ``zip(params, torch.autograd.grad(val_loss, params, allow_unused=True))``.
                Tensors without DiGraP state yet (before their first step), excluded ones,
                ones without a gradient and ones in ``hypergrad_source='train'`` groups are
                skipped.

        Returns:
            The number of tensors that got a hyper-gradient.
        """
        groups = {id(p): g for g in self.param_groups for p in g['params']}
        picked: Dict[Tuple, List[Tuple[Tensor, Tensor]]] = {}
        for p, g in params_and_grads:
            group = groups.get(id(p))
            if (g is None or group is None or group['hypergrad_source'] != 'val'
                    or id(p) in self._excluded or 'omega' not in self.state.get(p, {})):
                continue
            picked.setdefault((id(group), p.device, p.dtype), []).append((p, g))
        count = 0
        for items in picked.values():
            params = [p for p, _ in items]
            states = [self.state[p] for p in params]
            g32 = [g.detach() if g.dtype in _WIDE else g.detach().float() for _, g in items]
            norm = groups[id(params[0])]['hypergrad_norm']
            if self.store_projection:
                h = hypergradient(g32, [st['prev_proj'] for st in states], norm)
            else:  # lean mode: P_{t-1} = c_{t-1} (theta_{t-1} - theta0), exact here
                offsets, _ = self.anchor_policy.offsets(params, self._anchors(params))
                coef = torch.stack([st['prev_coef'] for st in states])
                h = torch.sign(coef) * hypergradient(g32, offsets, norm)
            for st, val in zip(states, h.unbind()):
                st['val_hgrad'] = val
            count += len(items)
        return count

    @property
    def compile_seconds(self) -> Dict[tuple, float]:
        """{bucket signature: seconds of its first, compiling fused step} (the one-time cost
        of ``fused``; empty on the eager path)."""
        impl = self.__dict__.get('_fused_impl', {}).get(True)
        return dict(impl.compile_seconds) if impl is not None else {}

    def _fused_mode(self, params: List[Tensor], group: Optional[Dict[str, Any]] = None
                    ) -> Optional[bool]:
        """None: eager reference path; False: two-pass math uncompiled; True: compiled."""
        fused = self.__dict__.get('fused', 'auto')
        dev = self.anchor_policy.device
        if fused is False or (dev is not None and dev != params[0].device):
            return None
        if self.__dict__.get('track_update') or (group is not None and (
                group.get('project', 'gradient') != 'gradient'
                or group.get('hypergrad_source', 'train') != 'train')):
            return None  # the variants of docs/algorithm.md section 14 run eager
        if self._reducer(params).any_sharded:  # FSDP2 shards: the eager path's all-reduce
            return None
        can = compile_available(params[0].device)
        if fused is True:
            if not can and not self.__dict__.get('_warned_no_compile'):
                self._warned_no_compile = True
                warnings.warn(f'{type(self).__name__}(fused=True): torch.compile is not usable '
                              f'on {params[0].device.type} (needs a C++ compiler on the CPU, '
                              'Triton on CUDA); using the uncompiled two-pass math.',
                              UserWarning, stacklevel=4)
            return can
        if (can and params[0].device.type in AUTO_COMPILE_DEVICES
                and sum(p.numel() for p in params) >= AUTO_COMPILE_NUMEL):
            return True
        if self.store_projection or params[0].device.type in STREAM_DEVICES:
            return None  # eager; on the CPU tensor by tensor (lean mode included)
        return False  # CUDA lean mode: the two-pass math beats the list path there

    def _project_fused(self, params: List[Tensor], grads: List[Tensor], states: List[Dict],
                       group: Dict[str, Any], step: int, compiled: bool) -> Dict[str, Any]:
        """DiGraP on one bucket with :class:`~mmdigrap.core.digrap_fused.FusedDiGraP`."""
        impls = self.__dict__.setdefault('_fused_impl', {})
        if compiled not in impls:
            impls[compiled] = FusedDiGraP(compile=compiled)
        omega, m, v = (torch.stack([st[k] for st in states]) for k in _SCALARS)
        mu = float(group['mu'])
        beta1, beta2 = group['hyper_betas']
        prev = [st['prev_proj'] for st in states] if self.store_projection else None
        sign = None if prev is not None else torch.sign(
            torch.stack([st['prev_coef'] for st in states]))
        omega, m, v, coef, dot, sq_dist = impls[compiled](
            grads, [p.detach() for p in params], self._anchors(params), prev, omega, m, v,
            sign, row=group['hypergrad_norm'] == 'row',
            train=bool(group['trainable']) and mu > 0 and step > 1, step=step, mu=mu,
            beta1=beta1, beta2=beta2, eps=group['hyper_eps'], omega_max=group['omega_max'])
        for key, vec in zip(_SCALARS, (omega, m, v)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        if prev is None:
            torch._foreach_copy_([st['prev_coef'] for st in states], list(coef.unbind()))
        return dict(params=params, omega=omega, dot=dot, sq_dist=sq_dist, conflict=dot < 0,
                    hgrad=torch.full_like(omega, float('nan')))

    def omegas(self) -> Dict[str, float]:
        """{parameter name: omega} for every tensor that has DiGraP state (one host sync).

        Names come from ``named_parameters`` / :meth:`set_param_names`, else ``'param<i>'``.
        """
        return self.scalar_state('omega')
