"""The plain per-tensor DiGraP loop that tests and benchmarks compare to.

Written straight from the paper's Algorithm 1 in the authors' style (``docs/algorithm.md``,
"DiGraP"): Python lists indexed by position, a Python ``if`` on each tensor's dot product,
``.item()`` for every scalar (one host sync per tensor on a GPU), and the authors' *global*
hyper-step counter T. Deliberately slow and literal; ``mmdigrap.optim.DiGraP`` must match it
whenever every tensor has a gradient from the first step on (then its per-tensor hyper-step
count equals T).
"""
import math
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['ReferenceDiGraP']


class ReferenceDiGraP:
    """Per-tensor DiGraP gradient transform, then ``base.step()``.

    Args:
        base: an already built optimizer over the parameters (e.g. ``torch.optim.Adam``).
        mu, betas, eps, omega_max, omega_init, trainable, hypergrad_norm, anchor: as for
            :class:`mmdigrap.optim.DiGraP`.

    Attributes:
        history: omegas of every tensor after every step (a list of lists of floats).
    """

    def __init__(self, base: torch.optim.Optimizer, mu=0.5, betas=(0.9, 0.999), eps=1e-8,
                 omega_max=1.0, omega_init=0.0, trainable=True, hypergrad_norm='row',
                 anchor='pretrained'):
        self.base = base
        self.params: List[Tensor] = [p for g in base.param_groups for p in g['params']]
        self.mu, self.betas, self.eps, self.kappa = mu, betas, eps, omega_max
        self.trainable, self.norm = trainable, hypergrad_norm
        self.T = 1
        self.anchor = [p.detach().clone() if anchor == 'pretrained' else None
                       for p in self.params]
        self.P = [torch.zeros_like(p) for p in self.params]
        self.w = [float(omega_init)] * len(self.params)
        self.mw = [0.0] * len(self.params)
        self.vw = [0.0] * len(self.params)
        self.history: List[List[float]] = []

    def _h(self, g: Tensor, P: Tensor) -> float:
        """Norm(g, P): sum of row cosines ('row', 2+ dims) or the whole-tensor cosine."""
        if self.norm == 'row' and g.dim() >= 2:
            return torch.sum(F.normalize(g, dim=1) * F.normalize(P, dim=1)).item()
        return torch.sum(F.normalize(g.reshape(1, -1), dim=1)
                         * F.normalize(P.reshape(1, -1), dim=1)).item()

    def zero_grad(self):
        self.base.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            d = p - self.anchor[i] if self.anchor[i] is not None else p.clone()
            s = torch.sum(g * d).item()
            q = torch.sum(d * d).item()
            Pn = (s / (q + 1e-8)) * d
            if self.T > 1 and self.trainable:
                h = self._h(g, self.P[i])
                self.mw[i] = b1 * self.mw[i] + (1 - b1) * h
                self.vw[i] = b2 * self.vw[i] + (1 - b2) * h * h
                mhat = self.mw[i] / (1 - b1 ** self.T)
                vhat = self.vw[i] / (1 - b2 ** self.T)
                self.w[i] = min(max(self.w[i] - self.mu * mhat / (math.sqrt(vhat) + self.eps),
                                    0.0), self.kappa)
            self.P[i] = Pn
            if s < 0:
                g.sub_(self.w[i] * Pn)
        self.base.step()
        self.history.append(list(self.w))
        self.T += 1

    def state_tensors(self) -> List[Tensor]:
        """The parameter-sized state beyond the base optimizer (anchors and P), for memory
        accounting in ``tools/benchmark/step_bench.py``."""
        return [a for a in self.anchor if a is not None] + self.P
