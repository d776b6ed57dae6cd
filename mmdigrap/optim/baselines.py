r"""The torch.optim faces of the baselines (digrap_spec.md section 4), around ANY base optimizer.

* :class:`L2SP` (``method='l2sp'``): pre-step ``g += weight * (theta - theta0)`` (spec 4.4).
* :class:`FTP` (``'ftp'``): post-step projection of the candidate onto a ball of trained
  per-tensor radius, row-wise MARS norms (spec 4.5; AdamP/SGDP).
* :class:`SPD` (``'spd'``): post-step selective decay towards theta0 (spec 4.6; AdamSPD).
* :class:`TPGM` (``'tpgm'``): the base step alone; :meth:`TPGM.tpgm_update` trains the radii on
  validation data and projects (spec 4.7; ``TPGMHook`` drives it in mmengine runs).
* :class:`FixedDiGraP` (``'digrap_fixed'``): DiGraP with a frozen omega, the PCGrad-style
  fixed-strength ablation (spec 4.8).

They share :class:`~mmdigrap.optim.GradientProjectionOptimizer`: ``param_groups`` are the
base's (LR schedulers, ``paramwise_cfg``, GradScaler work unchanged), per-parameter state lives
in ``self.state[p]`` (anchor + the method's tensors), ``state_dict()`` is
the base's keys plus ``'projection': {'method': ..., ...}`` and a checkpoint of another method is
refused on load. Each sets ``last_stats`` (``params``, ``dot``, ``sq_dist``, ``conflict``, plus
method keys) for ``DiGraPHook``'s logging.

Post-step methods (FTP, SPD, TPGM) snapshot theta0 *before* the first base step, so the anchor
is the pre-trained weight, never the first candidate.
"""
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from ..core.baselines import (FTP_EPS, SPD_NORMS, TPGM_NORMS, ftp_project_, l2sp_grad_,
                              scalar_adam_update, spd_condition, spd_decay_coefficients,
                              spd_norms, tpgm_clip_radii, tpgm_init_radius, tpgm_norms,
                              tpgm_project, tpgm_ratios)
from ..core.digrap import batched_dot
from .digrap import DiGraP
from .gradient_projection import GradientProjectionOptimizer

__all__ = ['L2SP', 'FTP', 'SPD', 'TPGM', 'FixedDiGraP']

_WIDE = (torch.float32, torch.float64)
NamedParams = Optional[Iterable[Tuple[str, Tensor]]]


def _wide_dtype(p: Tensor) -> torch.dtype:
    """float64 for float64 parameters, float32 for everything else (reductions, scalars)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def _wide(t: Tensor) -> Tensor:
    return t if t.dtype in _WIDE else t.float()


def _check_number(owner: str, name: str, value, lo: float, fix: str, lo_open: bool = False,
                  hi: Optional[float] = None) -> float:
    """``float(value)``, or a ValueError naming the fix."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{owner}: {name} must be a number, got {value!r}; {fix}') from None
    bad = (value <= lo if lo_open else value < lo) or (hi is not None and value > hi)
    if bad or value != value:
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f'{owner}: {name} must lie in {rng}, got {value}; {fix}')
    return value


def _check_betas(owner: str, betas) -> Tuple[float, float]:
    if (not isinstance(betas, (tuple, list)) or len(betas) != 2
            or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)):
        raise ValueError(f'{owner}: betas must be two numbers in [0, 1), got {betas!r} '
                         '(the reference uses (0.9, 0.999))')
    return float(betas[0]), float(betas[1])


def _write_(params: List[Tensor], values: List[Tensor]) -> None:
    """``p.copy_(value)`` for every pair (casts float32 values into half-precision weights)."""
    torch._foreach_copy_(params, values)


def _subtract_(params: List[Tensor], deltas: List[Tensor]) -> None:
    """``p -= delta`` in the parameter's dtype (half-precision weights go through float32)."""
    wide = [(p, d) for p, d in zip(params, deltas) if p.dtype == d.dtype]
    if wide:
        torch._foreach_sub_([p for p, _ in wide], [d for _, d in wide])
    for p, d in zip(params, deltas):
        if p.dtype != d.dtype:
            p.copy_(p.to(d.dtype) - d)


# ------------------------------------------------------------------------------------- L2-SP
class L2SP(GradientProjectionOptimizer):
    r"""L2-SP: ``g' = g + weight * (theta - theta0)`` before the base optimizer (spec 4.4).

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

    Shapes: every tensor keeps its shape S; ``dot``/``sq_dist`` statistics are (N,).
    State per managed tensor: ``anchor`` (S; not stored with ``anchor='zero'``).
    Memory beyond the base optimizer: 1P (0 for PEFT). Compute: one axpy and two reductions
    (for the logged statistics) per tensor.

    Raises:
        ValueError: ``weight`` negative or not a number; bad anchor/exclude values.

    Example:
        >>> opt = L2SP(torch.optim.Adam(model.parameters(), lr=1e-4), weight=0.01,
        ...            exclude=[r'^head\.'], named_parameters=model.named_parameters())
    """

    method = 'l2sp'

    def __init__(self, base_optimizer: Optimizer, *, weight: float = 1e-2,
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        self.weight = _check_number('L2SP', 'weight', weight, 0.0,
                                    'use a small positive coefficient such as 0.01')
        if self.weight == 0:
            warnings.warn('L2SP: weight=0 is the base optimizer alone; set weight > 0 '
                          '(e.g. 0.01) to pull towards theta0.', UserWarning, stacklevel=2)
        #: statistics of the last step: params, dot, sq_dist, conflict
        self.last_stats: Dict[str, object] = {}
        super().__init__(base_optimizer, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    def extra_repr(self) -> str:
        return f'weight={self.weight}'

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        offsets, _ = self.anchor_policy.offsets(params, self._anchors(params))
        g32 = [_wide(g) for g in grads]
        res = l2sp_grad_(g32, offsets, self.weight)
        for g, g_new in zip(grads, g32):
            if g_new is not g:
                g.copy_(g_new)
        self.last_stats = dict(params=params, dot=res.dot, sq_dist=res.sq_dist,
                               conflict=res.dot < 0)


# --------------------------------------------------------------------------------------- FTP
class FTP(GradientProjectionOptimizer):
    r"""FTP: Fast Trainable Projection of the base optimizer's candidate step (spec 4.5).

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
      checked against literal re-implementations in ``tests/reference_baselines.py``.
    * State is per parameter (keyed by the tensor, checkpointed), not lists indexed by call
      order, so tensors without a gradient on a step keep their state (spec 5.4/5.5). The
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
    State per managed tensor: ``anchor`` (S), ``ftp_prev_offset`` (S, the previous unprojected
    offset), ``ftp_prev_scale`` (row shape, 1/n), ``ftp_gamma``, ``ftp_exp_avg``,
    ``ftp_exp_avg_sq``, ``ftp_step`` (0-d). Memory beyond the base optimizer: 2P (1P for PEFT)
    plus the row vectors.

    Raises:
        ValueError: ``k`` outside [0, 1], ``mu <= 0``, bad betas/eps/anchor/exclude.
    """

    method = 'ftp'
    _SCALARS = ('ftp_gamma', 'ftp_exp_avg', 'ftp_exp_avg_sq', 'ftp_step')

    def __init__(self, base_optimizer: Optimizer, *, k: float = 1.0, mu: float = 1e-2,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = FTP_EPS,
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        self.k = _check_number('FTP', 'k', k, 0.0, 'k=1.0 is the reference default (k=0 lets '
                               'the radius only grow)', hi=1.0)
        self.mu = _check_number('FTP', 'mu', mu, 0.0, 'the reference uses mu=1e-2; mu=0 would '
                                'pin every tensor to theta0 forever', lo_open=True)
        self.betas = _check_betas('FTP', betas)
        self.eps = _check_number('FTP', 'eps', eps, 0.0, 'use 1e-8', lo_open=True)
        #: statistics of the last step: params, dot (hyper-gradient G), sq_dist (after the
        #: projection), conflict (G < 0: the gradient pushes away from theta0), radius, active
        self.last_stats: Dict[str, object] = {}
        super().__init__(base_optimizer, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    def extra_repr(self) -> str:
        return f'k={self.k}, mu={self.mu}, betas={self.betas}, eps={self.eps}'

    def _init_state(self, p: Tensor) -> Dict:
        st = self.state[p]
        if 'ftp_gamma' not in st:
            kw = dict(dtype=_wide_dtype(p), device=p.device)
            st['ftp_gamma'] = torch.full((), self.eps, **kw)
            st['ftp_exp_avg'] = torch.zeros((), **kw)
            st['ftp_exp_avg_sq'] = torch.zeros((), **kw)
            st['ftp_step'] = torch.zeros((), **kw)
            st['ftp_prev_offset'] = torch.zeros_like(p, memory_format=torch.preserve_format)
            rows = [p.shape[0]] + [1] * (p.dim() - 1) if p.dim() >= 2 else [1] * p.dim()
            st['ftp_prev_scale'] = torch.zeros(rows, **kw)
        return st

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        self._anchors(params)  # theta0 before the first base step

    def _post_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        states = [self._init_state(p) for p in params]
        anchors = self._anchors(params)
        offsets, writable = self.anchor_policy.offsets(params, anchors)
        if not writable:  # zero anchor: the offsets may alias the weights
            offsets = [o.clone() if o.dtype == p.dtype else o for o, p in zip(offsets, params)]
        torch._foreach_add_([st['ftp_step'] for st in states], 1.0)
        gamma, m, v, step = (torch.stack([st[k] for st in states]) for k in self._SCALARS)
        res = ftp_project_(offsets, grads, [st['ftp_prev_offset'] for st in states],
                           [st['ftp_prev_scale'] for st in states], gamma, m, v, step,
                           k=self.k, mu=self.mu, beta1=self.betas[0], beta2=self.betas[1],
                           eps=self.eps)
        if self.anchor_policy.stored:
            torch._foreach_add_(offsets, [a.to(o.dtype) for a, o in zip(anchors, offsets)])
        _write_(params, offsets)
        for key, vec in zip(self._SCALARS[:3], (res.gamma, res.exp_avg, res.exp_avg_sq)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        self.last_stats = dict(params=params, dot=res.hypergrad, sq_dist=res.sq_dist,
                               conflict=res.hypergrad < 0, radius=res.gamma, active=res.active)

    def radii(self) -> Dict[str, float]:
        """{parameter name: gamma} for every tensor with FTP state (one host sync)."""
        return self.scalar_state('ftp_gamma')


# --------------------------------------------------------------------------------------- SPD
class SPD(GradientProjectionOptimizer):
    r"""SPD: Selective Projection Decay of the base optimizer's candidate (spec 4.6, AdamSPD).

    With ``theta`` the weights before the step, ``theta~`` the base optimizer's candidate and
    ``c = -<g, theta - theta0>``: where ``c < 0``,
    ``theta = theta~ - weight * r * (theta~ - theta0)`` with
    ``r = clip((||theta~ - theta0|| - ||theta - theta0||) / ||theta~ - theta0||, 0, 1)``;
    elsewhere the candidate is kept. **The selection is the opposite of DiGraP's** (spec 5.1):
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

    State per managed tensor: ``anchor`` (S; none for PEFT). Memory beyond the base optimizer:
    1P (0 for PEFT) plus one transient offset during the step. Compute: 1 dot and 2 norms per
    tensor.

    Raises:
        ValueError: ``weight`` negative, unknown ``norm``, bad anchor/exclude values.
    """

    method = 'spd'

    def __init__(self, base_optimizer: Optimizer, *, weight: float = 0.5, norm: str = 'l2',
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        self.weight = _check_number('SPD', 'weight', weight, 0.0,
                                    'the authors used 0.5 (the AdamSPD weight_decay)')
        if self.weight == 0:
            warnings.warn('SPD: weight=0 is the base optimizer alone; set weight > 0 '
                          '(e.g. 0.5).', UserWarning, stacklevel=2)
        if norm not in SPD_NORMS:
            raise ValueError(f"SPD: norm must be one of {SPD_NORMS}, got {norm!r} ('l2' = "
                             "AdamSPD, 'mars' = FRAMES-VQA AdamH's row-wise variant)")
        self.norm = norm
        #: statistics of the last step: params, dot (<g, theta - theta0>), sq_dist (before the
        #: step), conflict (dot < 0, DiGraP's sense), selected (c < 0), decayed
        self.last_stats: Dict[str, object] = {}
        self._pending = None
        super().__init__(base_optimizer, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    def extra_repr(self) -> str:
        return f'weight={self.weight}, norm={self.norm!r}'

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        offsets, _ = self.anchor_policy.offsets(params, self._anchors(params))
        g32 = [g if g.dtype == o.dtype else g.to(o.dtype) for g, o in zip(grads, offsets)]
        cond = spd_condition(g32, offsets)
        self._pending = (cond, spd_norms(offsets, self.norm), batched_dot(offsets, offsets))

    def _post_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        cond, prev_norms, sq_dist = self._pending
        self._pending = None
        offsets, writable = self.anchor_policy.offsets(params, self._anchors(params))
        dec = spd_decay_coefficients(offsets, prev_norms, cond, self.weight, self.norm)
        coefs = [c.to(o.dtype) for c, o in zip(dec.coefs, offsets)]
        if writable:
            torch._foreach_mul_(offsets, coefs)
            deltas = offsets
        else:
            deltas = torch._foreach_mul(offsets, coefs)
        _subtract_(params, deltas)  # theta~ - weight * r * (theta~ - theta0)
        self.last_stats = dict(params=params, dot=-cond, sq_dist=sq_dist, conflict=cond > 0,
                               selected=dec.selected, decayed=dec.decayed)


# -------------------------------------------------------------------------------------- TPGM
class TPGM(GradientProjectionOptimizer):
    r"""TPGM: projection radii trained on held-out validation data (spec 4.7).

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
    projection (all tensors at once in the reference).

    Args:
        base_optimizer: an already built optimizer (the reference: SGD, Nesterov momentum).
        proj_lr: learning rate of the radius Adam (> 0; reference 1e-2).
        norm: 'l2' (whole-tensor) or 'mars' (row-wise L1).
        max_iters: Adam iterations per :meth:`tpgm_update` (>= 0; reference 1).
        betas, eps: the radius Adam's constants (``torch.optim.Adam`` defaults).
        anchor, anchor_dtype, exclude, named_parameters: see
            :class:`~mmdigrap.optim.GradientProjectionOptimizer`; ``named_parameters`` (or
            ``TPGMHook``/``DiGraPHook``) is required for :meth:`tpgm_update`.

    State per projected tensor: ``anchor`` (S), ``tpgm_gamma``, ``tpgm_exp_avg``,
    ``tpgm_exp_avg_sq``, ``tpgm_step`` (0-d). Memory beyond the base optimizer: 1P, plus one
    projected copy of the weights and the activations of one validation forward/backward during
    an update.

    Raises:
        ValueError: ``proj_lr <= 0``, ``max_iters < 0``, unknown ``norm``, bad betas/anchor.
    """

    method = 'tpgm'
    _SCALARS = ('tpgm_gamma', 'tpgm_exp_avg', 'tpgm_exp_avg_sq', 'tpgm_step')

    def __init__(self, base_optimizer: Optimizer, *, proj_lr: float = 1e-2, norm: str = 'l2',
                 max_iters: int = 1, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, anchor: str = 'pretrained', anchor_dtype=None,
                 exclude: Iterable[str] = (), named_parameters: NamedParams = None):
        self.proj_lr = _check_number('TPGM', 'proj_lr', proj_lr, 0.0,
                                     'the reference uses proj_lr=1e-2', lo_open=True)
        if norm not in TPGM_NORMS:
            raise ValueError(f"TPGM: norm must be one of {TPGM_NORMS}, got {norm!r} ('l2' = "
                             "whole-tensor L2 ball, 'mars' = row-wise L1 ball)")
        if not isinstance(max_iters, int) or isinstance(max_iters, bool) or max_iters < 0:
            raise ValueError(f'TPGM: max_iters must be an int >= 0, got {max_iters!r} (the '
                             'reference trains the radii 1 iteration per update)')
        self.norm = norm
        self.max_iters = max_iters
        self.betas = _check_betas('TPGM', betas)
        self.eps = _check_number('TPGM', 'eps', eps, 0.0, 'use 1e-8', lo_open=True)
        #: statistics of the last projection: params, dot (d val-loss / d gamma of the last
        #: iteration; 0 without training), sq_dist (after the projection), conflict (dot < 0),
        #: radius, active (some row was shrunk), val_loss
        self.last_stats: Dict[str, object] = {}
        super().__init__(base_optimizer, anchor=anchor, anchor_dtype=anchor_dtype,
                         exclude=exclude, named_parameters=named_parameters)

    def extra_repr(self) -> str:
        return (f'proj_lr={self.proj_lr}, norm={self.norm!r}, max_iters={self.max_iters}, '
                f'betas={self.betas}, eps={self.eps}')

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        self._anchors(params)  # theta0 before the first base step

    def projected_parameters(self) -> List[Tensor]:
        """The tensors TPGM projects: managed, ``requires_grad`` and not excluded."""
        if self._exclude_patterns and not self._names:
            raise RuntimeError(
                'TPGM: `exclude` patterns need parameter names. Pass '
                '`named_parameters=model.named_parameters()`, call `set_param_names(...)`, or '
                "add `dict(type='TPGMHook')` to custom_hooks.")
        return [p for p in self._all_params() if p.requires_grad and not self.is_excluded(p)]

    def _init_state(self, p: Tensor, norm: Tensor) -> Dict:
        st = self.state[p]
        if 'tpgm_gamma' not in st:
            kw = dict(dtype=_wide_dtype(p), device=p.device)
            st['tpgm_gamma'] = tpgm_init_radius(norm).to(**kw)
            st['tpgm_exp_avg'] = torch.zeros((), **kw)
            st['tpgm_exp_avg_sq'] = torch.zeros((), **kw)
            st['tpgm_step'] = torch.zeros((), **kw)
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
        params = self.projected_parameters()
        if not params:
            return torch.zeros(0)
        if iters > 0 and not self._names:
            raise RuntimeError(
                'TPGM.tpgm_update needs parameter names to hand the projected weights to '
                'loss_fn: pass `named_parameters=model.named_parameters()`, call '
                "`set_param_names(...)`, or use `dict(type='TPGMHook')` in an mmengine run.")
        names = [self.param_name(p) for p in params]
        with torch.no_grad():
            anchors = self._anchors(params)
            offsets, _ = self.anchor_policy.offsets(params, anchors)
            offsets = [o.detach() for o in offsets]
            norms = tpgm_norms(offsets, self.norm)
            states = [self._init_state(p, n) for p, n in zip(params, norms)]
            gamma, m, v, step = (torch.stack([st[k] for st in states]) for k in self._SCALARS)
            anchors_w = ([a.to(o.dtype) for a, o in zip(anchors, offsets)]
                         if self.anchor_policy.stored else None)
        losses, hgrad = [], torch.zeros_like(gamma)
        for _ in range(iters):
            gamma = tpgm_clip_radii(gamma, norms)
            leaf = gamma.detach().requires_grad_(True)
            with torch.enable_grad():
                proj = tpgm_project(anchors_w, offsets, tpgm_ratios(leaf, norms))
                proj = [x if x.dtype == p.dtype else x.to(p.dtype) for x, p in zip(proj, params)]
                loss = loss_fn(dict(zip(names, proj)))
                (grad,) = torch.autograd.grad(loss, [leaf], allow_unused=True)
            with torch.no_grad():
                hgrad = torch.zeros_like(gamma) if grad is None else grad.detach()
                hgrad = self._average_over_ranks(hgrad)
                step = step + 1
                gamma, m, v = scalar_adam_update(gamma, m, v, hgrad, step=step, lr=self.proj_lr,
                                                 beta1=self.betas[0], beta2=self.betas[1],
                                                 eps=self.eps)
                losses.append(loss.detach().reshape(()))
        with torch.no_grad():
            gamma = tpgm_clip_radii(gamma, norms)
            ratios = tpgm_ratios(gamma, norms)
            _write_(params, tpgm_project(anchors_w, offsets, ratios))
            for key, vec in zip(self._SCALARS, (gamma, m, v, step)):
                torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
            moved = torch._foreach_mul(offsets, ratios)
            val_loss = torch.stack(losses) if losses else gamma.new_zeros(0)
            self.last_stats = dict(params=params, dot=hgrad, sq_dist=batched_dot(moved, moved),
                                   conflict=hgrad < 0, radius=gamma,
                                   active=torch.stack([(r < 1).any() for r in ratios]),
                                   val_loss=val_loss)
        return val_loss

    def apply_projection(self) -> None:
        """Project every tensor onto its current radius (no training; the reference's
        ``tpgm_iters(model, apply=True)``)."""
        self.tpgm_update(None, max_iters=0)

    def radii(self) -> Dict[str, float]:
        """{parameter name: gamma} for every tensor with TPGM state (one host sync)."""
        return self.scalar_state('tpgm_gamma')


# -------------------------------------------------------------------------------- FixedDiGraP
class FixedDiGraP(DiGraP):
    r"""DiGraP with a fixed projection strength: the PCGrad-style ablation (spec 4.8).

    Where ``<g, theta - theta0> < 0`` the gradient loses ``omega`` times its component along
    ``theta - theta0``; elsewhere it is unchanged; then the base optimizer steps. omega never
    changes (``DiGraP(trainable=False, omega_init=omega)``). Unlike the authors' earlier
    ``optimizer/pcgrad.py`` the regularisation gradient is not added and the projection is over
    the whole tensor (not row-wise): it isolates what training omega brings.

    Args:
        base_optimizer: an already built optimizer.
        omega: the fixed strength, >= 0 (1 = full projection onto the plane orthogonal to
            ``theta - theta0``; > 1 over-projects and warns; 0 = the base optimizer alone).
        anchor, anchor_dtype, exclude, named_parameters: as for :class:`DiGraP`.

    State per managed tensor: ``anchor`` (S), ``omega`` and two unused hyper-moments, and
    ``prev_coef`` (0-d) -- no projection buffer (lean mode is exact when omega is frozen).
    Memory beyond the base optimizer: 1P (0 for PEFT).

    Raises:
        ValueError: ``omega`` negative or not a number.
    """

    method = 'digrap_fixed'

    def __init__(self, base_optimizer: Optimizer, *, omega: float = 1.0,
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        omega = _check_number('FixedDiGraP', 'omega', omega, 0.0,
                              'use omega=1.0 for a full projection (0 = no projection)')
        if omega == 0:
            warnings.warn('FixedDiGraP: omega=0 never projects; this is the base optimizer '
                          'alone. Use omega=1.0 for the full projection.', UserWarning,
                          stacklevel=2)
        elif omega > 1:
            warnings.warn(f'FixedDiGraP: omega={omega} > 1 over-projects (pushes the update '
                          'towards theta0); the paper keeps omega in [0, 1].', UserWarning,
                          stacklevel=2)
        super().__init__(base_optimizer, mu=0.0, omega_max=max(1.0, omega), omega_init=omega,
                         trainable=False, store_projection=False, anchor=anchor,
                         anchor_dtype=anchor_dtype, exclude=exclude,
                         named_parameters=named_parameters)

    def extra_repr(self) -> str:
        return f'omega={self.omega_init}'
