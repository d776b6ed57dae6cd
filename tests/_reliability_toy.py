"""Hooks for ``tests/test_reliability.py`` (importable in torchrun / train.py children).

Registered in mmengine's *root* HOOKS registry under ``MMDiGraPRel*`` names (``force=True``,
so importing the module twice under different names does not fail). A config uses them with
``custom_imports=dict(imports=['_toy', '_reliability_toy', 'mmdigrap'])`` and this directory on
``PYTHONPATH``.
"""
import os
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

#: environment variable read by :class:`CrashHook`: ``os._exit(1)`` after that many iterations
CRASH_ENV = 'MMDIGRAP_TEST_CRASH_AT_ITER'


def _cpu_clone(obj):
    """Deep copy of a (nested) state dict with every tensor cloned onto the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_clone(v) for v in obj)
    return obj


@HOOKS.register_module(name='MMDiGraPRelDumpStateHook', force=True)
class DumpStateHook(Hook):
    """After the run, every rank writes ``state_rank<r>.pt`` into the work dir.

    Content: ``params`` (model state_dict), ``optim`` (the optimizer wrapper's state_dict:
    base optimizer state + DiGraP ``projection`` state with omegas, hyper-moments, prev_proj,
    anchors and ``hyper_step``), ``omegas`` ({name: float}), ``iter``, ``rank``, ``world_size``,
    ``model_wrapper`` (class name of ``runner.model``).
    """

    priority = 'VERY_LOW'

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        ow = runner.optim_wrapper
        omegas = ow.omegas() if hasattr(ow, 'omegas') else {}
        torch.save(dict(params=_cpu_clone(model.state_dict()), optim=_cpu_clone(ow.state_dict()),
                        omegas=omegas, iter=runner.iter, rank=runner.rank,
                        world_size=runner.world_size,
                        model_wrapper=type(runner.model).__name__),
                   osp.join(runner.work_dir, f'state_rank{runner.rank}.pt'))


@HOOKS.register_module(name='MMDiGraPRelCrashHook', force=True)
class CrashHook(Hook):
    """Simulates a hard crash (``os._exit(1)``: no cleanup, no final checkpoint).

    When the environment variable ``MMDIGRAP_TEST_CRASH_AT_ITER=K`` is set, the process dies
    right after training iteration K (1-based) completed, after every other hook of that
    iteration (priority LOWEST, so a CheckpointHook due at K would already have written).
    """

    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        at = os.environ.get(CRASH_ENV)
        if at and runner.iter + 1 == int(at):
            os._exit(1)
