"""Tiny model / dataset / metric / hook for the runtime tests (CPU, a few ms per iteration).

Importable both in the pytest process and in torchrun children (``custom_imports=['_toy']``
with this directory on PYTHONPATH). Everything is registered into mmengine's *root*
registries under names prefixed ``MMDiGraPToy`` (``force=True``: importing the module twice
under different names must not fail), so it resolves from any default scope.
"""
import json
import os.path as osp

import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import DATASETS, HOOKS, METRICS, MODEL_WRAPPERS, MODELS, OPTIM_WRAPPERS
from torch.utils.data import Dataset


def make_mlp(dtype=torch.float64, seed=0):
    """The small test MLP: 2-D weights and 1-D biases / LayerNorm scales (4 tensors of each)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def batches(n, dtype=torch.float64, seed=1):
    """``n`` seeded (x of shape (16, 6), y in 0..2) classification batches."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g, dtype=dtype),
             torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


@MODELS.register_module(name='MMDiGraPToyModel', force=True)
class ToyModel(BaseModel):
    """A 2-layer MLP regressor; deterministic (no dropout), so resume is bit-exact."""

    def __init__(self, in_dim=8, hidden=16, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc1 = torch.nn.Linear(in_dim, hidden)
        self.fc2 = torch.nn.Linear(hidden, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.fc2(torch.tanh(self.fc1(inputs))).squeeze(-1)
        if mode == 'loss':
            return dict(loss=torch.nn.functional.mse_loss(out, labels))
        if mode == 'predict':
            return [dict(pred=p, gt=g) for p, g in zip(out.detach(), labels)]
        return out


@DATASETS.register_module(name='MMDiGraPToyDataset', force=True)
class ToyDataset(Dataset):
    """``num`` samples of a fixed random linear regression problem, generated in memory."""

    def __init__(self, num=64, in_dim=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num, in_dim, generator=g)
        w = torch.randn(in_dim, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(num, generator=g)
        self.metainfo = dict()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


@METRICS.register_module(name='MMDiGraPToyMetric', force=True)
class ToyMetric(BaseMetric):
    """Mean squared error of ``pred`` vs ``gt``."""

    def process(self, data_batch, data_samples):
        for s in data_samples:
            self.results.append(float((s['pred'] - s['gt']) ** 2))

    def compute_metrics(self, results):
        return dict(mse=sum(results) / max(len(results), 1))


@HOOKS.register_module(name='MMDiGraPToyDumpParamsHook', force=True)
class DumpParamsHook(Hook):
    """After the run, every rank saves its parameters and some facts about its setup."""

    priority = 'VERY_LOW'

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        rank = runner.rank
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   osp.join(runner.work_dir, f'params_rank{rank}.pt'))
        import torch.distributed as dist
        info = dict(rank=rank, world_size=runner.world_size,
                    wrapper=type(runner.model).__name__,
                    backend=dist.get_backend() if dist.is_initialized() else None,
                    iter=runner.iter, epoch=runner.epoch)
        with open(osp.join(runner.work_dir, f'info_rank{rank}.json'), 'w') as f:
            json.dump(info, f)


@OPTIM_WRAPPERS.register_module(name='MMDiGraPToyOptimWrapper', force=True)
class ToyOptimWrapper(OptimWrapper):
    """Only for the ``--amp`` name mapping test."""


@OPTIM_WRAPPERS.register_module(name='MMDiGraPToyAmpOptimWrapper', force=True)
class ToyAmpOptimWrapper(AmpOptimWrapper):
    """Only for the ``--amp`` name mapping test (never built)."""


@MODEL_WRAPPERS.register_module(name='MMDiGraPToyModelWrapper', force=True)
class ToyModelWrapper(torch.nn.Module):
    """A DDP-like model wrapper (``.module``, names prefixed ``module.``) without a process
    group, for the parameter-name tests."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
