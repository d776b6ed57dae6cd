"""What ``tools/train.py``, ``tools/test.py`` and ``tools/wise_ft.py`` share: the common
flags, the work-dir rule, the dataloader defaults of mmpretrain's tools, and building the
Runner.

Kept here (not in one of the tools) so that no tool has to load another tool by file path.
"""
import os
import os.path as osp
from copy import deepcopy
from typing import Mapping, Optional, Sequence

__all__ = ['LOADERS', 'add_common_args', 'set_local_rank_env', 'resolve_work_dir',
           'apply_dataloader_defaults', 'fix_persistent_workers', 'build_runner']

#: The dataloader fields of an mmengine config.
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def add_common_args(parser) -> None:
    """Add mmpretrain's ``--cfg-options``, ``--launcher`` and ``--local_rank`` flags, and
    ``--trust-checkpoint`` (explicit opt-in to full unpickling).

    ``--local-rank`` is accepted too (``torch.distributed.launch`` on torch >= 2.0 passes
    that spelling).
    """
    from mmengine.config import DictAction

    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    from .runtime import TRUST_ENV
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='unpickle the checkpoints this run loads (load_from, --resume, init_cfg) fully '
        '(weights_only=False; can run code hidden in the file: only for files you trust). '
        f'Same as {TRUST_ENV}=1')


def set_local_rank_env(args) -> None:
    """``LOCAL_RANK`` from ``--local_rank`` unless the launcher already set it; the
    ``--trust-checkpoint`` opt-in as its environment variable (so worker processes see it)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if getattr(args, 'trust_checkpoint', False):
        from .runtime import TRUST_ENV
        os.environ[TRUST_ENV] = '1'


def resolve_work_dir(cfg, work_dir: Optional[str], config_path: str) -> str:
    """Set ``cfg.work_dir`` as mmpretrain's tools do: CLI > the config's > the file name.

    ``work_dir`` (the ``--work-dir`` flag) wins; else a ``work_dir`` in the config; else
    ``./work_dirs/<config file stem>``. Returns the value set.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    return cfg.work_dir


def apply_dataloader_defaults(cfg, defaults: Mapping, fields: Sequence[str] = LOADERS,
                              no_pin_memory: bool = False,
                              no_persistent_workers: bool = False) -> None:
    """Give every present dataloader in ``fields`` the keys of ``defaults`` it does not set.

    ``defaults`` is e.g. ``dict(pin_memory=True, persistent_workers=True,
    collate_fn=dict(type='default_collate'))`` (mmpretrain's ``tools/train.py``); the
    ``--no-pin-memory`` / ``--no-persistent-workers`` flags then switch those off.
    """
    from mmengine.config import ConfigDict

    for field in fields:
        if cfg.get(field, None) is None:
            continue
        loader = ConfigDict(deepcopy(dict(defaults)))
        loader.update(cfg[field])
        cfg[field] = loader
        if no_pin_memory:
            loader['pin_memory'] = False
        if no_persistent_workers:
            loader['persistent_workers'] = False


def fix_persistent_workers(cfg, fields: Sequence[str] = LOADERS) -> None:
    """``persistent_workers=False`` for loaders with ``num_workers=0``.

    torch's DataLoader raises ``ValueError: persistent_workers option needs num_workers > 0``
    for that combination, which mmpretrain's default ``persistent_workers=True`` creates for
    every single-process config.
    """
    for field in fields:
        loader = cfg.get(field, None)
        if loader is not None and loader.get('num_workers', 0) == 0 \
                and loader.get('persistent_workers', False):
            loader.persistent_workers = False


def build_runner(cfg, launcher: str = 'none'):
    """The Runner of ``cfg``: ``Runner.from_cfg``, or ``RUNNERS.build`` with ``runner_type``.

    First :func:`~mmdigrap.engine.runtime.setup_cpu_distributed` (a no-op with CUDA or
    ``launcher='none'``), so ``--launcher pytorch|slurm|mpi`` works on a CPU-only host.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .runtime import setup_cpu_distributed

    setup_cpu_distributed(cfg, launcher)
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
