"""Plain per-tensor reference implementations written straight from the spec.

Deliberately slow and literal (Python ``if`` on each tensor's dot product, as the authors'
code does) so the batched implementations in ``mmdigrap.core`` can be checked against them.
Also used by ``tools/benchmark/step_bench.py`` as the "loop" baseline.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_mlp(dtype=torch.float64, seed=0):
    """The small test MLP: 2-D weights and 1-D biases / LayerNorm scales (4 tensors of each)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def batches(n, dtype=torch.float64, seed=1):
    """``n`` seeded (x of shape (16, 6), y in 0..2) classification batches."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g, dtype=dtype),
             torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


class ReferenceDiGraPAdam:
    """DiGraP + Adam (no weight decay), digrap_spec.md section 1.10, one tensor at a time."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, mu=0.5, omega_max=1.0,
                 omega_init=0.0, hypergrad_norm='row', anchor='pretrained', trainable=True):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.mu, self.kappa, self.norm = mu, omega_max, hypergrad_norm
        self.trainable = trainable
        self.T = 1
        self.anchor = [p.detach().clone() if anchor == 'pretrained' else None
                       for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.k = [0] * len(self.params)
        self.w = [float(omega_init)] * len(self.params)
        self.mw = [0.0] * len(self.params)
        self.vw = [0.0] * len(self.params)
        self.P = [torch.zeros_like(p) for p in self.params]
        self.history = []

    def _h(self, g, P):
        if self.norm == 'row' and g.dim() >= 2:
            return torch.sum(F.normalize(g, dim=1) * F.normalize(P, dim=1)).item()
        return torch.sum(F.normalize(g.reshape(1, -1), dim=1)
                         * F.normalize(P.reshape(1, -1), dim=1)).item()

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.clone()
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
                self.w[i] = min(max(self.w[i] - self.mu * mhat / (math.sqrt(vhat) + 1e-8), 0.0),
                                self.kappa)
            self.P[i] = Pn
            if s < 0:
                g = g - self.w[i] * Pn
            self.k[i] += 1
            self.m[i].mul_(b1).add_(g, alpha=1 - b1)
            self.v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
            mhat = self.m[i] / (1 - b1 ** self.k[i])
            vhat = self.v[i] / (1 - b2 ** self.k[i])
            p.sub_(self.lr * mhat / (vhat.sqrt() + self.eps))
        self.history.append(list(self.w))
        self.T += 1
