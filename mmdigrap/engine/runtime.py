"""Runtime fixes that let the unmaintained mmengine 0.10.7 run on torch>=2.6 and on CPU-only hosts.

Both are local workarounds, not upstream fixes (see ``design/openmmlab_install.md`` 2d and 4b):

* :func:`enable_trusted_checkpoint_loading` -- torch 2.6 flipped ``torch.load``'s default to
  ``weights_only=True``. ``mmengine/runner/checkpoint.py`` calls ``torch.load(filename,
  map_location=...)`` at four sites (``load_from_local``, ``load_from_pavi``, ``load_from_ceph``,
  ``load_from_mmcls``), and every Runner checkpoint carries a ``message_hub`` with
  ``mmengine.logging.HistoryBuffer`` and numpy objects, so *every* ``resume`` / ``load_from``
  fails with ``_pickle.UnpicklingError: Weights only load failed ... Unsupported global: GLOBAL
  mmengine.logging.history_buffer.HistoryBuffer``. An allowlist is no way out: it would have to
  include ``builtins.getattr``, which defeats the point of ``weights_only``.
* :func:`setup_cpu_distributed` -- ``--launcher pytorch|slurm|mpi`` on a host without CUDA hits two
  mmengine bugs: ``mmengine/dist/utils.py`` (``_init_dist_pytorch`` / ``_init_dist_slurm`` /
  ``_init_dist_mpi``) calls ``torch.cuda.set_device(local_rank)`` unconditionally (``RuntimeError:
  Found no NVIDIA driver``), and ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DDP,
  which DDP rejects for a CPU module (``ValueError: DistributedDataParallel device_ids and
  output_device arguments only work with single-device/multiple-device GPU modules``).

Neither function patches site-packages, sets environment variables for torch, or changes
``torch.load`` for anybody but mmengine's checkpoint module.
"""
import datetime
import os
import subprocess
import types
import warnings

import torch

__all__ = ['enable_trusted_checkpoint_loading', 'disable_trusted_checkpoint_loading',
           'trusted_checkpoint_loading_enabled', 'setup_cpu_distributed']


# --------------------------------------------------------------------------------------------
# 1. torch>=2.6 weights_only vs. mmengine checkpoints
# --------------------------------------------------------------------------------------------
class _TrustedTorch(types.ModuleType):
    """Stand-in for the ``torch`` module inside ``mmengine.runner.checkpoint`` only.

    Every attribute is forwarded to the real ``torch`` (looked up at call time, so later
    monkeypatches of torch are honoured); only :meth:`load` differs: it defaults
    ``weights_only=False`` unless the caller passes ``weights_only`` explicitly.
    """

    def __init__(self, real_torch):
        super().__init__('torch', real_torch.__doc__)
        self.__dict__['_real_torch'] = real_torch

    def __getattr__(self, name):
        return getattr(self.__dict__['_real_torch'], name)

    def __dir__(self):
        return sorted(set(dir(self.__dict__['_real_torch'])) | {'load'})

    def __repr__(self):
        return f'<mmdigrap trusted-checkpoint proxy for {self.__dict__["_real_torch"]!r}>'

    def load(self, *args, **kwargs):
        """``torch.load`` with ``weights_only=False`` unless the caller says otherwise."""
        kwargs.setdefault('weights_only', False)
        return self.__dict__['_real_torch'].load(*args, **kwargs)


def _checkpoint_module():
    import mmengine.runner.checkpoint as ckpt  # noqa: PLC0415  (lazy: mmengine is optional)
    return ckpt


def trusted_checkpoint_loading_enabled() -> bool:
    """Whether :func:`enable_trusted_checkpoint_loading` is in effect."""
    return isinstance(getattr(_checkpoint_module(), 'torch', None), _TrustedTorch)


def enable_trusted_checkpoint_loading() -> bool:
    """Let mmengine load its own checkpoints again on torch>=2.6 (``weights_only`` default).

    What: replaces the module-global name ``torch`` inside ``mmengine.runner.checkpoint`` (and
    nowhere else) with a thin proxy module whose ``load`` defaults ``weights_only=False``; all
    other attributes forward to the real torch. ``torch.load`` itself, other modules' view of
    torch, and the ``TORCH_FORCE_*`` environment variables are left untouched. A caller that
    passes ``weights_only=...`` explicitly still gets exactly what it asked for.

    Why: torch 2.6 made ``weights_only=True`` the default, and mmengine 0.10.7 (unmaintained)
    never passes it, so resume and ``load_from`` of any Runner checkpoint raise
    ``UnpicklingError ... HistoryBuffer was not an allowed global`` (design doc, section 2d).

    Trust implication: the checkpoints that mmengine loads -- the files and URLs the user names
    in ``load_from`` / ``resume`` / ``--resume`` / ``init_cfg=dict(type='Pretrained', ...)``, and
    the latest checkpoint in the work dir for auto-resume -- are unpickled fully, exactly as with
    torch<2.6 and as mmengine was written to do. Unpickling can execute arbitrary code, so only
    load checkpoints you trust. (``mmengine.utils.dl_utils.hub.load_url``, used for ``http(s)://``
    checkpoints, is deliberately not covered and keeps torch's safe default.)

    Idempotent; returns True if this call installed the proxy, False if it was already there.
    Does nothing on torch<2.6 except install the (then harmless) proxy.
    """
    ckpt = _checkpoint_module()
    current = getattr(ckpt, 'torch', None)
    if isinstance(current, _TrustedTorch):
        return False
    if current is not torch:  # somebody else replaced it: wrap what they put there
        real = current if isinstance(current, types.ModuleType) else torch
    else:
        real = torch
    ckpt.torch = _TrustedTorch(real)
    return True


def disable_trusted_checkpoint_loading() -> bool:
    """Undo :func:`enable_trusted_checkpoint_loading` (restore torch's own defaults for mmengine).

    Returns True if the proxy was removed. Mainly for tests and for users who want torch's
    ``weights_only=True`` behaviour back after ``import mmdigrap``.
    """
    ckpt = _checkpoint_module()
    current = getattr(ckpt, 'torch', None)
    if not isinstance(current, _TrustedTorch):
        return False
    ckpt.torch = current.__dict__['_real_torch']
    return True


# --------------------------------------------------------------------------------------------
# 2. distributed launch on a host without CUDA
# --------------------------------------------------------------------------------------------
def _cfg_get(cfg, key, default=None):
    try:
        return cfg.get(key, default)
    except AttributeError:
        return getattr(cfg, key, default)


def _env_from_slurm(port=None):
    """Set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT as mmengine's
    ``_init_dist_slurm`` does."""
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    local_rank_env = os.environ.get('SLURM_LOCALID')
    if local_rank_env is not None:
        local_rank = int(local_rank_env)
    else:  # mmengine uses proc_id % num_gpus; on CPU assume one task per node slot
        ntasks_per_node = int(os.environ.get('SLURM_NTASKS_PER_NODE', '1').split('(')[0] or 1)
        local_rank = proc_id % max(ntasks_per_node, 1)
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    else:
        os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1').strip()
        os.environ['MASTER_ADDR'] = addr
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['LOCAL_RANK'] = str(local_rank)
    os.environ['RANK'] = str(proc_id)


def _env_from_mpi():
    """Set RANK/WORLD_SIZE/LOCAL_RANK like mmengine's ``_init_dist_mpi`` (OpenMPI variables)."""
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        raise KeyError('The environment variable MASTER_ADDR is not set')
    os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
    os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']


def _cpu_wrapper_cfg(model_wrapper_cfg):
    """Make an existing ``model_wrapper_cfg`` safe for CPU DDP (``device_ids=None``).

    ``Runner.wrap_model`` injects ``device_ids=[LOCAL_RANK]`` as a *default* arg for any
    ``DistributedDataParallel`` subclass; a value in the config wins over that default, so
    ``device_ids=None`` is added when the config does not set it. Non-DDP wrappers (FSDP,
    DeepSpeed, ...) are left alone.
    """
    from mmengine.registry import MODEL_WRAPPERS  # noqa: PLC0415
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415
    wtype = model_wrapper_cfg.get('type', 'MMDistributedDataParallel')
    if isinstance(wtype, str):
        try:
            wtype = MODEL_WRAPPERS.get(wtype)
        except Exception:  # noqa: BLE001  (unknown scope etc.: leave the cfg alone)
            wtype = None
    if isinstance(wtype, type) and issubclass(wtype, DistributedDataParallel):
        model_wrapper_cfg.setdefault('device_ids', None)
    return model_wrapper_cfg


def setup_cpu_distributed(cfg, launcher: str) -> bool:
    """Make ``--launcher pytorch|slurm|mpi`` work on a host without CUDA (gloo backend).

    What, when ``launcher != 'none'`` and ``not torch.cuda.is_available()``:

    1. initialise the default process group with ``backend='gloo'`` from the launcher's
       environment (``RANK``/``WORLD_SIZE``/``MASTER_*`` from torchrun; derived from ``SLURM_*``
       or ``OMPI_COMM_WORLD_*`` like mmengine's ``_init_dist_slurm`` / ``_init_dist_mpi``).
       ``timeout`` (seconds) and slurm ``port`` from ``cfg.env_cfg.dist_cfg`` are honoured. This
       happens *before* the Runner is built, so ``Runner.setup_env`` sees an initialised group
       and skips mmengine's ``init_dist``, which would call ``torch.cuda.set_device`` and crash;
    2. ``cfg.env_cfg.dist_cfg.backend = 'gloo'`` (what is actually in use, for the logs);
    3. ``cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
       broadcast_buffers=False)`` unless the config sets ``model_wrapper_cfg``; if it does and the
       wrapper is a DDP subclass, ``device_ids=None`` is added when absent (else
       ``Runner.wrap_model`` would inject ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU
       modules).

    Why: mmengine 0.10.7 bugs, design doc section 4b. No site-packages patch is needed.

    No-op (returns False) when ``launcher == 'none'`` or CUDA is available, so GPU runs go
    through mmengine's own ``init_dist`` unchanged. Returns True when it configured CPU DDP.
    """
    if launcher in (None, 'none') or torch.cuda.is_available():
        return False
    import torch.distributed as torch_dist  # noqa: PLC0415

    env_cfg = _cfg_get(cfg, 'env_cfg')
    if env_cfg is None:
        cfg['env_cfg'] = dict(dist_cfg=dict(backend='gloo'))
        env_cfg = cfg['env_cfg']
    dist_cfg = env_cfg.get('dist_cfg')
    if dist_cfg is None:
        env_cfg['dist_cfg'] = dict(backend='gloo')
        dist_cfg = env_cfg['dist_cfg']
    requested = dist_cfg.get('backend', 'nccl')
    if requested not in ('gloo', 'nccl'):
        warnings.warn(f'setup_cpu_distributed: no CUDA, using backend gloo instead of the '
                      f'configured {requested!r}')
    dist_cfg['backend'] = 'gloo'

    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dict(dist_cfg).items() if k not in ('backend', 'port')}
        if kwargs.get('timeout') is not None and not isinstance(kwargs['timeout'],
                                                                datetime.timedelta):
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        if launcher == 'slurm':
            _env_from_slurm(dist_cfg.get('port'))
        elif launcher == 'mpi':
            _env_from_mpi()
        elif launcher != 'pytorch':
            raise ValueError(f'Invalid launcher type: {launcher}')
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
                   if k not in os.environ]
        if missing:
            raise RuntimeError(f'--launcher {launcher} needs the environment variables '
                               f'{missing}; start the job with tools/dist_train.sh '
                               f'(torchrun) or tools/slurm_train.sh')
        import torch.multiprocessing as mp  # noqa: PLC0415
        if mp.get_start_method(allow_none=True) is None:  # as mmengine's init_dist does
            mp.set_start_method('spawn')
        torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                      world_size=int(os.environ['WORLD_SIZE']), **kwargs)

    wrapper = _cfg_get(cfg, 'model_wrapper_cfg')
    if wrapper is None:
        cfg['model_wrapper_cfg'] = dict(type='MMDistributedDataParallel', device_ids=None,
                                        broadcast_buffers=False)
    else:
        _cpu_wrapper_cfg(wrapper)
    return True

