"""``mmdigrap.DiGraP``: the torch.optim face of Directional Gradient Projection."""
import warnings
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..core.digrap import HYPERGRAD_NORMS, digrap_project_, hypergradient
from .gradient_projection import GradientProjectionOptimizer

__all__ = ['DiGraP']

_SCALARS = ('omega', 'omega_exp_avg', 'omega_exp_avg_sq')
_WIDE = (torch.float32, torch.float64)


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

    State per managed tensor (in ``self.state[p]``): ``anchor`` (S, pretrained mode),
    ``omega``, ``omega_exp_avg``, ``omega_exp_avg_sq`` (0-d float32), and ``prev_proj`` (S) or
    ``prev_coef`` (0-d). Memory beyond the base optimizer: 2P (1P lean, 1P/0P with zero anchor).

    Raises:
        ValueError: ``mu < 0``, ``omega_max < 0``, ``omega_init`` outside [0, omega_max], betas
            outside [0, 1), ``eps <= 0``, unknown ``hypergrad_norm`` or ``anchor``.

    Example:
        >>> base = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
        >>> opt = DiGraP(base, mu=0.5, exclude=[r'^head\.'],
        ...              named_parameters=model.named_parameters())
        >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    method = 'digrap'

    def __init__(self, base_optimizer: Optimizer, *, mu: float = 0.5,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 omega_max: float = 1.0, omega_init: float = 0.0, trainable: bool = True,
                 hypergrad_norm: str = 'row', anchor: str = 'pretrained', anchor_dtype=None,
                 anchor_device=None, exclude: Iterable[str] = (),
                 named_parameters: Optional[Iterable[Tuple[str, Tensor]]] = None,
                 store_projection: bool = True):
        if mu < 0:
            raise ValueError(f'DiGraP: mu (hyper-learning-rate of omega) must be >= 0, got {mu}; '
                             'the paper uses 0.5 (sweep 0.01-10), mu=0 freezes omega')
        if omega_max < 0:
            raise ValueError(f'DiGraP: omega_max must be > 0 (paper: 1.0), got {omega_max}')
        if omega_max == 0:
            warnings.warn('DiGraP: omega_max=0 disables the projection; this is the base '
                          'optimizer alone. Use omega_max=1.0 (the paper) to project.',
                          UserWarning, stacklevel=2)
        if not 0.0 <= omega_init <= omega_max:
            raise ValueError(f'DiGraP: omega_init must lie in [0, omega_max={omega_max}], got '
                             f'{omega_init} (the paper starts at 0)')
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f'DiGraP: betas must be two numbers in [0, 1), got {betas}')
        if eps <= 0:
            raise ValueError(f'DiGraP: eps must be > 0, got {eps}')
        if hypergrad_norm not in HYPERGRAD_NORMS:
            raise ValueError(f'DiGraP: hypergrad_norm must be one of {HYPERGRAD_NORMS}, got '
                             f"{hypergrad_norm!r} ('row' = the authors' code)")
        self.mu = float(mu)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.omega_max = float(omega_max)
        self.omega_init = float(omega_init)
        self.trainable = bool(trainable)
        self.hypergrad_norm = hypergrad_norm
        self.store_projection = bool(store_projection)
        #: per-step statistics of the last step: params, dot, sq_dist, conflict, omega
        self.last_stats: Dict[str, object] = {}
        super().__init__(base_optimizer, anchor=anchor, anchor_dtype=anchor_dtype,
                         anchor_device=anchor_device, exclude=exclude,
                         named_parameters=named_parameters)

    def extra_repr(self) -> str:
        return (f'mu={self.mu}, betas={self.betas}, eps={self.eps}, omega_max={self.omega_max}, '
                f'omega_init={self.omega_init}, trainable={self.trainable}, '
                f'hypergrad_norm={self.hypergrad_norm!r}, store_projection={self.store_projection}')

    def _init_state(self, p: Tensor) -> Dict:
        st = self.state[p]
        if 'omega' not in st:
            kw = dict(dtype=torch.float64 if p.dtype == torch.float64 else torch.float32,
                      device=p.device)
            st['omega'] = torch.full((), self.omega_init, **kw)
            st['omega_exp_avg'] = torch.zeros((), **kw)
            st['omega_exp_avg_sq'] = torch.zeros((), **kw)
            if self.store_projection:
                st['prev_proj'] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                st['prev_coef'] = torch.zeros((), **kw)
        return st

    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        states = [self._init_state(p) for p in params]
        anchors = self._anchors(params)
        g32 = [g if g.dtype in _WIDE else g.float() for g in grads]  # f16/bf16 -> f32
        omega, m, v = (torch.stack([st[k] for st in states]) for k in _SCALARS)
        step = self.hyper_step + 1
        train = self.trainable and self.mu > 0 and step > 1
        prev = [st['prev_proj'] for st in states] if self.store_projection else None
        hgrad = None
        if train and prev is not None:  # Norm(g_t, P_{t-1}), before P is overwritten
            hgrad = hypergradient(g32, prev, self.hypergrad_norm)
        if prev is not None and all(b.dtype == g.dtype for b, g in zip(prev, g32)):
            # allocation-free path: d is written into the P buffers, then scaled into P_t
            offsets = proj_out = self.anchor_policy.offsets_into(prev, params, anchors)
        else:
            offsets, _ = self.anchor_policy.offsets(params, anchors)
            proj_out = prev
        if train and prev is None:  # lean mode: P_{t-1} = c_{t-1} d_{t-1} ~ c_{t-1} d_t
            prev_coef = torch.stack([st['prev_coef'] for st in states])
            hgrad = torch.sign(prev_coef) * hypergradient(g32, offsets, self.hypergrad_norm)
        res = digrap_project_(
            g32, offsets, omega, m, v, hgrad, step=step, mu=self.mu, beta1=self.betas[0],
            beta2=self.betas[1], eps=self.eps, omega_max=self.omega_max, proj_out=proj_out)
        for g, g_new in zip(grads, g32):
            if g_new is not g:
                g.copy_(g_new)
        for key, vec in zip(_SCALARS, (res.omega, res.exp_avg, res.exp_avg_sq)):
            torch._foreach_copy_([st[key] for st in states], list(vec.unbind()))
        if prev is None:
            torch._foreach_copy_([st['prev_coef'] for st in states], list(res.proj_coef.unbind()))
        self.last_stats = dict(params=params, omega=res.omega, dot=res.dot,
                               sq_dist=res.sq_dist, conflict=res.conflict)

    def omegas(self) -> Dict[str, float]:
        """{parameter name: omega} for every tensor that has DiGraP state (one host sync).

        Names come from ``named_parameters`` / :meth:`set_param_names`, else ``'param<i>'``.
        """
        return self.scalar_state('omega')
