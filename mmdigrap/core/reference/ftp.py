"""Plain per-tensor reference of FTP (GT-RIPL/FTP ``util/FTP.py``: AdamP, SGDP).

Written from the reference code's structure (``docs/algorithm.md``, "FTP"), in the
style of :mod:`mmdigrap.core.reference`; the batched ``mmdigrap.core.baselines`` is checked
against it.
"""
import torch
import torch.nn.functional as F

from ._adam import adam_direction

__all__ = ['ReferenceFTP']


class ReferenceFTP:
    """FTP (algorithm.md §13.5) as GT-RIPL/FTP's AdamP (``base='adam'``) or SGDP (``base='sgd'``).

    One global t, lists indexed by j (the position among tensors with a gradient), gamma = 1e-8
    at t = 1, ``torch.sum(dim=())`` for 1-D tensors (= the whole tensor).
    """

    def __init__(self, params, base='adam', lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, momentum=0.9, nesterov=True, k=1.0, mu=1e-2,
                 anchor='pretrained', exclude=()):
        self.params = list(params)
        self.base, self.lr, self.betas, self.eps, self.wd = base, lr, betas, eps, weight_decay
        self.momentum, self.nesterov = momentum, nesterov
        self.kk, self.mu = k, mu
        self.exclude = set(exclude)  # indices into params
        self.pre = [p.detach().clone() if anchor == 'pretrained' else torch.zeros_like(p)
                    for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.buf = [None] * len(self.params)
        self.steps = [0] * len(self.params)
        self.t = 1
        self.gamma_buff, self.first_m, self.second_m = [], [], []
        self.prev_c, self.prev_scale = [], []
        self.history = []  # gammas after every step

    @staticmethod
    def _mars(t):
        return torch.sum(torch.abs(t), dim=tuple(range(1, t.dim())), keepdim=True) + 1e-8

    @staticmethod
    def _dot(a, b, scale):
        return torch.sum(a * b, dim=tuple(range(1, a.dim())), keepdim=True) * scale

    def _adam_util(self, j, prev, grad):
        b1, b2 = 0.9, 0.999
        self.first_m[j] = b1 * self.first_m[j] + (1 - b1) * grad
        self.second_m[j] = b2 * self.second_m[j] + (1 - b2) * grad ** 2
        fm = self.first_m[j] / (1 - b1 ** self.t)
        sm = self.second_m[j] / (1 - b2 ** self.t)
        return prev - self.mu * fm / (torch.sqrt(torch.as_tensor(sm)) + 1e-8)

    @torch.no_grad()
    def step(self):
        j = 0
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.base == 'adam':
                self.steps[i] += 1
                d_p = adam_direction(p, g, self.m[i], self.v[i], self.steps[i], self.lr,
                                      self.betas, self.eps) + self.lr * self.wd * p
            else:
                d = g + self.wd * p if self.wd else g
                if self.buf[i] is None:
                    self.buf[i] = d.clone()
                else:
                    self.buf[i].mul_(self.momentum).add_(d)
                d = d + self.momentum * self.buf[i] if self.nesterov else self.buf[i]
                d_p = self.lr * d
            if i in self.exclude:
                p.sub_(d_p)
                continue
            c_t = (p - d_p) - self.pre[i]
            norms = self._mars(c_t)
            if self.t == 1:
                gamma = torch.tensor(1e-8, dtype=p.dtype)
                self.first_m.append(0.0)
                self.second_m.append(0.0)
                self.gamma_buff.append(gamma)
                self.prev_c.append(0.0)
                self.prev_scale.append(0.0)
            else:
                gamma_grad = torch.sum(self._dot(g, self.prev_c[j], self.prev_scale[j]))
                if gamma_grad > 0:
                    gamma_grad = gamma_grad * self.kk
                gamma = self._adam_util(j, self.gamma_buff[j], gamma_grad)
                gamma = F.hardtanh(gamma, 1e-8, float(norms.max()))
            denom = 1 / norms
            ratio = gamma * denom
            new_p = self.pre[i] + F.hardtanh(ratio, 0.0, 1.0) * c_t
            self.gamma_buff[j], self.prev_c[j], self.prev_scale[j] = gamma, c_t, denom
            j += 1
            p.copy_(new_p)
        self.history.append([float(w) for w in self.gamma_buff])
        self.t += 1
