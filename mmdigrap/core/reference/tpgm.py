"""Plain per-tensor reference of TPGM (PotatoTian/TPGM ``utils/tpgm.py``).

Written from the reference code's structure (``docs/algorithm.md``, "TPGM"), deep copy of the
model included, in the style of :mod:`mmdigrap.core.reference`; the batched
``mmdigrap.core.baselines`` is checked against it.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['ReferenceTPGM', 'ReferenceTPGMTrainer']


class ReferenceTPGM(nn.Module):
    """PotatoTian/TPGM's ``TPGM`` module (algorithm.md §13.7): one nn.Parameter radius per tensor.

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
