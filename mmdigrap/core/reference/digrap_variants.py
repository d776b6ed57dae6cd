"""The plain per-tensor loop of the DiGraP variants (``docs/algorithm.md`` section 14).

Literal on purpose (Python lists, ``.item()``, ``if`` on tensor values), written from the
equations of section 14, not from :mod:`mmdigrap.core.digrap_variants`:
``mmdigrap.optim.DiGraP(project=..., hypergrad_source=...)`` must match it.
"""
import math
from typing import List, Optional

import torch
from torch import Tensor

from .digrap import ReferenceDiGraP

__all__ = ['ReferenceDiGraPVariant']


class ReferenceDiGraPVariant(ReferenceDiGraP):
    """DiGraP with ``project`` in {'gradient', 'update'} and ``hypergrad_source`` in
    {'train', 'val'}; 'gradient' + 'train' is :class:`ReferenceDiGraP`.

    Args:
        base: an already built optimizer over the parameters.
        project: 'gradient' (the paper) or 'update' (section 14.1).
        hypergrad_source: 'train' (the paper) or 'val' (section 14.2: call
            :meth:`set_val_gradients` after each step with the validation-loss gradients at the
            current weights).
        **kwargs: as :class:`ReferenceDiGraP` (mu, betas, eps, omega_max, omega_init,
            trainable, hypergrad_norm, anchor).
    """

    def __init__(self, base: torch.optim.Optimizer, project='gradient', hypergrad_source='train',
                 **kwargs):
        super().__init__(base, **kwargs)
        self.project, self.source = project, hypergrad_source
        self.val_h: List[Optional[float]] = [None] * len(self.params)

    def set_val_gradients(self, grads: List[Optional[Tensor]]):
        """h for the next step: Norm(g_val, P) per tensor, P as stored now."""
        for i, g in enumerate(grads):
            if g is not None and self.T > 1:
                self.val_h[i] = self._h(g, self.P[i])

    def _hyper_step(self, i: int, g: Tensor):
        """omega's Adam step (section 5) with h from the training or the validation gradient."""
        if self.T == 1 or not self.trainable:
            return
        if self.source == 'val':
            h, self.val_h[i] = self.val_h[i], None
            if h is None:
                return
        else:
            h = self._h(g, self.P[i])
        b1, b2 = self.betas
        self.mw[i] = b1 * self.mw[i] + (1 - b1) * h
        self.vw[i] = b2 * self.vw[i] + (1 - b2) * h * h
        mhat = self.mw[i] / (1 - b1 ** self.T)
        vhat = self.vw[i] / (1 - b2 ** self.T)
        self.w[i] = min(max(self.w[i] - self.mu * mhat / (math.sqrt(vhat) + self.eps), 0.0),
                        self.kappa)

    def _offset(self, i: int, p: Tensor) -> Tensor:
        return p - self.anchor[i] if self.anchor[i] is not None else p.clone()

    @torch.no_grad()
    def step(self):
        if self.project == 'gradient':
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                g, d = p.grad, self._offset(i, p)
                s = torch.sum(g * d).item()
                q = torch.sum(d * d).item()
                self._hyper_step(i, g)
                self.P[i] = (s / (q + 1e-8)) * d
                if s < 0:
                    g.sub_(self.w[i] * self.P[i])
            self.base.step()
        else:
            old = {}
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                self._hyper_step(i, p.grad)
                old[i] = (p.detach().clone(), self._offset(i, p))
            self.base.step()
            for i, (theta_old, d) in old.items():
                p = self.params[i]
                delta = p.detach() - theta_old
                r = torch.sum(delta * d).item()
                c = r / (torch.sum(d * d).item() + 1e-8)
                if r > 0:  # the step grows ||theta - theta0||: remove omega of its radial part
                    p.sub_(self.w[i] * c * d)
                    self.P[i] = -c * d  # d theta_t / d omega
                else:
                    self.P[i] = torch.zeros_like(d)
        self.history.append(list(self.w))
        self.T += 1
