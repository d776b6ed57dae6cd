"""Plain per-tensor reference of SPD (GT-RIPL/Selective-Projection-Decay
``adamSPD.py``).

Written from the reference code's structure (``docs/algorithm.md``, "SPD"), in the
style of :mod:`mmdigrap.core.reference`; the batched ``mmdigrap.core.baselines`` is checked
against it.
"""
import torch
import torch.nn.functional as F

from ._adam import adam_direction

__all__ = ['ReferenceAdamSPD']


class ReferenceAdamSPD:
    """AdamSPD (algorithm.md §13.6): Adam candidate, then decay iff -<g, p - p0> < 0."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight=0.5, norm='l2',
                 anchor='pretrained'):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight, self.norm = lr, betas, eps, weight, norm
        self.pre = [p.detach().clone() if anchor == 'pretrained' else torch.zeros_like(p)
                    for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.k = [0] * len(self.params)
        self.decays = 0  # number of (step, tensor) pairs where the weights were pulled back

    def _norm(self, t):
        if self.norm == 'mars':
            return torch.sum(torch.abs(t), dim=tuple(range(1, t.dim())), keepdim=True) + 1e-8
        return torch.norm(t)

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            self.k[i] += 1
            new_p = p - adam_direction(p, g, self.m[i], self.v[i], self.k[i], self.lr,
                                        self.betas, self.eps)
            pre = self.pre[i]
            condition = -torch.sum(torch.mul(g, p - pre))
            if condition < 0.0:
                curr, prev = self._norm(new_p - pre), self._norm(p - pre)
                ratio = F.hardtanh((curr - prev) / curr, 0.0, 1.0)
                if bool((ratio > 0).any()):
                    self.decays += 1
                new_p = new_p - self.weight * ratio * (new_p - pre)
            p.copy_(new_p)
