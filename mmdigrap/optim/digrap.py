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
)
from ..core.digrap_fused import FusedDiGraP, compile_available
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


class DiGraP(GradientProjectionOptimizer):
    r"""Directional Gradient Projection around any base optimizer (ICLR 2025, Algorithm 1).

    Per parameter tensor (shape S), with d = theta - theta0 and g the raw gradient:
    if <g, d> < 0 (the task gradient pulls away from the pre-trained weights) the gradient
    becomes ``g - omega * (<g,d>/(||d||^2+1e-8)) d``; else it is left alone. The projection
    strength omega (a scalar per tensor, starting at ``omega_init``) is trained by its own
    Adam (learning rate ``mu``, spec 1.6) on the hyper-gradient
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
            PCGrad-style ablation, spec 4.8).
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
            current offset, spec 3.4), saving 1P of memory.
        fused: the kernels of the transform (:mod:`mmdigrap.core.digrap_fused`, same results
            to ~1e-7). True: the two-pass transform compiled with ``torch.compile`` (one
            read of each input for all reductions, one write of each output; the first step
            of a process pays the compilation, see ``compile_seconds``). False: the eager
            reference path. 'auto' (default): compiled for buckets of >= 2**24 elements on
            CPU/CUDA when ``torch.compile`` works there, else the eager path (full mode) or
            the uncompiled two-pass math (lean mode, the faster one there). A failing
            compilation warns once and falls back. Anchors on another device
            (``anchor_device``) always use the eager path.

    Per param group (``group.setdefault`` with the arguments above as defaults, so
    ``paramwise_cfg=dict(custom_keys={'neck': dict(mu=0.1)})`` or an mmengine
    ``param_scheduler`` with ``param_name='mu'`` change them, and the checkpoint keeps them):
    ``mu``, ``hyper_betas`` (= ``betas``), ``hyper_eps`` (= ``eps``; both renamed so that they
    never clash with Adam's own ``betas``/``eps`` in the same group), ``omega_max``,
    ``omega_init``, ``trainable``, ``hypergrad_norm``. ``opt.mu`` etc. read the defaults.

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

    def __init__(self, base_optimizer: Optimizer, *, mu: float = 0.5,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 omega_max: float = 1.0, omega_init: float = 0.0, trainable: bool = True,
                 hypergrad_norm: str = 'row', anchor: str = 'pretrained', anchor_dtype=None,
                 anchor_device=None, exclude: Iterable[str] = (),
                 named_parameters: Optional[Iterable[Tuple[str, Tensor]]] = None,
                 store_projection: bool = True, fused='auto'):
        owner = type(self).__name__
        if not any(fused is f or (isinstance(f, str) and fused == f) for f in _FUSED):
            raise ValueError(f"{owner}: fused must be True, False or 'auto', got {fused!r} "
                             "('auto' = the fastest correct path on this machine)")
        self.fused = fused
        self._fused_impl = {}
        hyper = self._check_hyper(dict(
            mu=mu, hyper_betas=betas, hyper_eps=eps, omega_max=omega_max, omega_init=omega_init,
            trainable=trainable, hypergrad_norm=hypergrad_norm), owner)
        if hyper['omega_max'] == 0:
            warnings.warn(f'{owner}: omega_max=0 disables the projection; this is the base '
                          'optimizer alone. Use omega_max=1.0 (the paper) to project.',
                          UserWarning, stacklevel=2)
        self.store_projection = bool(store_projection)
        #: per-step statistics of the last step: params, dot, sq_dist, conflict, omega
        self.last_stats: Dict[str, object] = {}
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
        return out

    def extra_repr(self) -> str:
        return (f'mu={self.mu}, betas={self.betas}, eps={self.eps}, omega_max={self.omega_max}, '
                f'omega_init={self.omega_init}, trainable={self.trainable}, '
                f'hypergrad_norm={self.hypergrad_norm!r}, '
                f'store_projection={self.store_projection}, fused={self.fused!r}')

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
        for group, idx in self._buckets(params, steps):
            mode = self._fused_mode([params[i] for i in idx])
            if mode is not None:
                parts.append(self._project_fused(
                    [params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                    group, steps[idx[0]], mode))
                continue
            parts.append(self._project([params[i] for i in idx], [grads[i] for i in idx],
                                       [states[i] for i in idx], group, steps[idx[0]]))
        self.last_stats = self._merge_stats(parts)

    def _project(self, params: List[Tensor], grads: List[Tensor], states: List[Dict],
                 group: Dict[str, Any], step: int) -> Dict[str, Any]:
        """DiGraP on one bucket (one param group, device, dtype and hyper-step count)."""
        anchors = self._anchors(params)
        g32 = [g if g.dtype in _WIDE else g.float() for g in grads]  # f16/bf16 -> f32
        omega, m, v = (torch.stack([st[k] for st in states]) for k in _SCALARS)
        mu = float(group['mu'])
        beta1, beta2 = group['hyper_betas']
        train = bool(group['trainable']) and mu > 0 and step > 1
        prev = [st['prev_proj'] for st in states] if self.store_projection else None
        hgrad = None
        red = self._reducer(params)  # sharded (FSDP2) tensors: sums over the ranks
        norm = group['hypergrad_norm']
        if norm == 'row' and train and red.any_sharded:
            red.require_rows_local("hypergrad_norm='row'", [self.param_name(p) for p in params])
        if train and prev is not None:  # Norm(g_t, P_{t-1}), before P is overwritten
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
        if train and prev is None:  # lean mode: P_{t-1} = c_{t-1} d_{t-1} ~ c_{t-1} d_t
            hgrad = (hypergradient_partials(g32, offsets, norm, red.sharded, red.rows_local)
                     if red.any_sharded else hypergradient(g32, offsets, norm))
        dot = sq_dist = None
        if red.any_sharded:  # one all-reduce for <g, d>, ||d||^2 and the hyper-gradient
            sums = torch.stack([batched_dot(g32, offsets), batched_dot(offsets, offsets)])
            sums = red.sum(sums if hgrad is None else torch.cat([sums, hgrad]))
            dot, sq_dist = sums[0], sums[1]
            if hgrad is not None:
                hgrad = finish_hypergradient(sums[2:], red.sharded, red.rows_local, norm)
        if train and prev is None:
            hgrad = torch.sign(torch.stack([st['prev_coef'] for st in states])) * hgrad
        res = digrap_project_(
            g32, offsets, omega, m, v, hgrad, step=step, mu=mu, beta1=beta1, beta2=beta2,
            eps=group['hyper_eps'], omega_max=group['omega_max'], proj_out=proj_out,
            dot=dot, sq_dist=sq_dist)
        for g, g_new in zip(grads, g32):
            if g_new is not g:
                g.copy_(g_new)
        for key, vec in zip(_SCALARS, (res.omega, res.exp_avg, res.exp_avg_sq)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        if prev is None:
            torch._foreach_copy_([st['prev_coef'] for st in states], list(res.proj_coef.unbind()))
        return dict(params=params, omega=res.omega, dot=res.dot, sq_dist=res.sq_dist,
                    conflict=res.conflict)

    @property
    def compile_seconds(self) -> Dict[tuple, float]:
        """{bucket signature: seconds of its first, compiling fused step} (the one-time cost
        of ``fused``; empty on the eager path)."""
        impl = self.__dict__.get('_fused_impl', {}).get(True)
        return dict(impl.compile_seconds) if impl is not None else {}

    def _fused_mode(self, params: List[Tensor]) -> Optional[bool]:
        """None: eager reference path; False: two-pass math uncompiled; True: compiled."""
        fused = self.__dict__.get('fused', 'auto')
        dev = self.anchor_policy.device
        if fused is False or (dev is not None and dev != params[0].device):
            return None
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
        return None if self.store_projection else False

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
        return dict(params=params, omega=omega, dot=dot, sq_dist=sq_dist, conflict=dot < 0)

    def omegas(self) -> Dict[str, float]:
        """{parameter name: omega} for every tensor that has DiGraP state (one host sync).

        Names come from ``named_parameters`` / :meth:`set_param_names`, else ``'param<i>'``.
        """
        return self.scalar_state('omega')
