"""Plain per-tensor reference of L2-SP (Li et al., ICML 2018).

Written from the reference code's structure (``docs/algorithm.md``, "L2-SP"), in the
style of :mod:`mmdigrap.core.reference`; the batched ``mmdigrap.core.baselines`` is checked
against it.
"""
import torch

from ._adam import adam_direction

__all__ = ['ReferenceL2SPAdam']


class ReferenceL2SPAdam:
    """Adam + L2-SP (algorithm.md §13.4): g <- g + weight * (p - p0), then a plain Adam step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight=0.01,
                 anchor='pretrained'):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight = lr, betas, eps, weight
        self.anchor = [p.detach().clone() if anchor == 'pretrained' else torch.zeros_like(p)
                       for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.k = [0] * len(self.params)

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad + self.weight * (p - self.anchor[i])
            self.k[i] += 1
            p.sub_(adam_direction(p, g, self.m[i], self.v[i], self.k[i], self.lr, self.betas,
                                   self.eps))
