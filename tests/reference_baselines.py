"""Plain per-tensor reference implementations of the baselines, written from the spec (section 4)
and the reference repositories' code structure.

Deliberately slow and literal: Python loops over tensors, lists indexed by position, a global
step counter, Python ``if`` on tensor values, a deep copy of the model for TPGM, exactly as the
reference code does it, so the batched implementations in ``mmdigrap.core.baselines`` can be
checked against them.
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _adam_direction(p, g, m, v, k, lr, betas, eps):
    """Update Adam's moments in place and return the step ``d_p`` (theta~ = p - d_p)."""
    b1, b2 = betas
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = v.sqrt() / math.sqrt(1 - b2 ** k) + eps
    return (lr / (1 - b1 ** k)) * m / denom


class ReferenceL2SPAdam:
    """Adam + L2-SP (spec 4.4): g <- g + weight * (p - p0), then a plain Adam step."""

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
            p.sub_(_adam_direction(p, g, self.m[i], self.v[i], self.k[i], self.lr, self.betas,
                                   self.eps))


class ReferenceFTP:
    """FTP (spec 4.5) as GT-RIPL/FTP's AdamP (``base='adam'``) or SGDP (``base='sgd'``).

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
                d_p = _adam_direction(p, g, self.m[i], self.v[i], self.steps[i], self.lr,
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


class ReferenceAdamSPD:
    """AdamSPD (spec 4.6): Adam candidate, then decay iff -<g, p - p0> < 0."""

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
            new_p = p - _adam_direction(p, g, self.m[i], self.v[i], self.k[i], self.lr,
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


class ReferenceTPGM(nn.Module):
    """PotatoTian/TPGM's ``TPGM`` module (spec 4.7): one nn.Parameter radius per tensor.

    The clip before every use is the spec's ``clip(gamma, 1e-8, max(n))``; the ratio is
    ``hardtanh(relu(gamma) / (n + 1e-8), 0, 1)``; MARS rows along dim 0 (elementwise for 1-D).
    """

    def __init__(self, model, norm_mode='l2', exclude_list=()):
        super().__init__()
        self.norm_mode, self.exclude_list = norm_mode, list(exclude_list)
        dtype = next(model.parameters()).dtype
        self.constraints = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, dtype=dtype)) for name, p in model.named_parameters()
             if p.requires_grad and name not in self.exclude_list])
        self.init = True

    def _project_ratio(self, new, anchor, constraint):
        t = new.detach() - anchor.detach()
        if self.norm_mode == 'l2':
            norms = torch.norm(t)
        elif t.dim() >= 2:
            norms = torch.sum(torch.abs(t), dim=tuple(range(1, t.dim())), keepdim=True)
        else:
            norms = torch.abs(t)
        if self.init:
            with torch.no_grad():
                constraint.copy_(norms.min() / 2)
        with torch.no_grad():
            constraint.copy_(torch.minimum(constraint.clamp(min=1e-8), norms.max()))
        return F.hardtanh(F.relu(constraint) / (norms + 1e-8), 0.0, 1.0)

    def apply_constraints(self, new, pre_trained, apply=False):
        it = iter(self.constraints)
        for (name, new_para), anchor_para in zip(new.named_parameters(),
                                                 pre_trained.parameters()):
            if not new_para.requires_grad or name in self.exclude_list:
                continue
            alpha = self._project_ratio(new_para, anchor_para, next(it))
            temp = (new_para.detach() - anchor_para.detach()) * alpha + anchor_para.detach()
            if apply:
                with torch.no_grad():
                    new_para.copy_(temp)
            else:
                new_para.requires_grad = False  # no longer a leaf after the copy
                new_para.copy_(temp)
        self.init = False

    def forward(self, new, pre_trained, x=None, apply=False):
        if apply:
            self.apply_constraints(new, pre_trained, apply=True)
            return None
        new_copy = copy.deepcopy(new)
        new_copy.eval()
        self.apply_constraints(new_copy, pre_trained)
        return new_copy(x)


class ReferenceTPGMTrainer:
    """PotatoTian/TPGM's ``tpgm_trainer``: Adam on the radii over cycled validation batches."""

    def __init__(self, model, val_batches, norm_mode='l2', proj_lr=1e-2, max_iters=1,
                 exclude_list=()):
        self.tpgm = ReferenceTPGM(model, norm_mode, exclude_list)
        self.pre_trained = copy.deepcopy(model)
        self.opt = torch.optim.Adam(self.tpgm.parameters(), lr=proj_lr)
        self.max_iters, self.batches, self.pos = max_iters, list(val_batches), 0

    def tpgm_iters(self, model, apply=False):
        if not apply:
            for _ in range(self.max_iters):
                x, y = self.batches[self.pos % len(self.batches)]
                self.pos += 1
                loss = F.cross_entropy(self.tpgm(model, self.pre_trained, x=x), y)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
        self.tpgm(model, self.pre_trained, apply=True)

    def radii(self):
        return [float(c.detach()) for c in self.tpgm.constraints]
