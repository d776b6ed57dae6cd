"""Runtime fixes that let the unmaintained mmengine 0.10.7 run on torch>=2.6 and on CPU-only hosts.

Both are local workarounds, not upstream fixes (see ``design/openmmlab_install.md`` 2d and 4b):

* checkpoint loading under torch's safe ``weights_only=True`` -- torch 2.6 made
  ``weights_only=True`` the default of ``torch.load``, and every Runner checkpoint that mmengine
  0.10.7 writes carries a ``message_hub`` with ``mmengine.logging.HistoryBuffer`` objects and
  numpy arrays / scalars / dtypes, so ``resume`` / ``load_from`` fail with ``UnpicklingError ...
  Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``.
  :func:`install_checkpoint_safety` (run by ``import mmdigrap``) keeps ``weights_only=True`` and
  allow-lists exactly those classes (:func:`mmengine_safe_globals`) with
  ``torch.serialization.add_safe_globals``; a checkpoint that needs anything else (an arbitrary
  pickled object, which could run code while it is unpickled) is refused with
  :class:`UntrustedCheckpointError`, which names the file and the opt-in. Full unpickling only
  by explicit opt-in: ``MMDIGRAP_TRUST_CHECKPOINTS=1``, ``tools/train.py --trust-checkpoint``
  or :func:`enable_trusted_checkpoint_loading`; each such load warns, naming the file.
* :func:`setup_cpu_distributed` -- ``--launcher pytorch|slurm|mpi`` on a host without CUDA hits two
  mmengine bugs: ``mmengine/dist/utils.py`` (``_init_dist_pytorch`` / ``_init_dist_slurm`` /
  ``_init_dist_mpi``) calls ``torch.cuda.set_device(local_rank)`` unconditionally (``RuntimeError:
  Found no NVIDIA driver``), and ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DDP,
  which DDP rejects for a CPU module (``ValueError: DistributedDataParallel device_ids and
  output_device arguments only work with single-device/multiple-device GPU modules``).

Neither function patches site-packages or sets environment variables for torch; ``torch.load``
itself is unchanged (only the name ``torch`` inside ``mmengine.runner.checkpoint`` is a proxy).
"""
import datetime
import os
import pickle
import subprocess
import types
import warnings

import torch

__all__ = ['TRUST_ENV', 'UntrustedCheckpointError', 'mmengine_safe_globals',
           'install_checkpoint_safety', 'enable_trusted_checkpoint_loading',
           'disable_trusted_checkpoint_loading', 'trusted_checkpoint_loading_enabled',
           'setup_cpu_distributed']

#: environment variable: ``1`` (or true/yes) = unpickle mmengine checkpoints fully (opt-in)
TRUST_ENV = 'MMDIGRAP_TRUST_CHECKPOINTS'
_TRUE = ('1', 'true', 'yes', 'on')


# --------------------------------------------------------------------------------------------
# 1. torch>=2.6 weights_only vs. mmengine checkpoints
# --------------------------------------------------------------------------------------------
class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the ``weights_only`` allow-list.

    Subclass of ``pickle.UnpicklingError`` (what torch raises), so existing handlers still match.
    """


def mmengine_safe_globals() -> list:
    """The globals that mmengine 0.10.7 Runner checkpoints pickle besides tensors and builtins.

    Found by saving real Runner checkpoints (every optimizer wrapper of this package, LR
    schedulers, the message hub) and loading them with ``weights_only=True``:

    * ``mmengine.logging.HistoryBuffer`` (``message_hub.log_scalars``; its state is two numpy
      arrays, an int and its statistics methods, written as ``getattr(HistoryBuffer, 'min')``:
      a restricted ``getattr`` that resolves only those is registered under that name);
    * numpy arrays (``numpy.ndarray`` + ``_reconstruct``), numpy scalars (``scalar``, e.g. the
      ``eta`` in ``message_hub.runtime_info``) and the numeric, bool and string dtypes (the
      ``numpy.dtype`` classes of numpy 2, e.g. ``Float64DType``). ``object`` arrays stay refused
      (``ObjectDType`` is not listed). The numpy-1 names (``numpy.core.multiarray.*``) are
      accepted too, for checkpoints written with numpy 1.

    Returns:
        A list for ``torch.serialization.add_safe_globals``: classes / functions, or
        ``(object, 'module.name')`` pairs where the pickled name differs.
    """
    import numpy as np  # noqa: PLC0415
    from mmengine.logging import HistoryBuffer  # noqa: PLC0415
    try:
        multiarray = np._core.multiarray  # numpy 2
    except AttributeError:  # pragma: no cover  (numpy 1)
        multiarray = np.core.multiarray
    out = [HistoryBuffer, np.ndarray, np.dtype]
    for fn in (multiarray._reconstruct, multiarray.scalar):
        out += [fn, (fn, f'numpy.core.multiarray.{fn.__name__}'),
                (fn, f'numpy._core.multiarray.{fn.__name__}')]
    out.append((_history_buffer_getattr, 'builtins.getattr'))
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25: one class per dtype
    if dtypes is not None:
        for name in ('Bool', 'Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'UInt16', 'UInt32',
                     'UInt64', 'Float16', 'Float32', 'Float64', 'LongDouble', 'Complex64',
                     'Complex128', 'Byte', 'UByte', 'Short', 'UShort', 'Int', 'UInt', 'Long',
                     'ULong', 'LongLong', 'ULongLong', 'Str', 'Bytes'):
            cls = getattr(dtypes, f'{name}DType', None)
            if cls is not None and cls not in out:
                out.append(cls)
    return out


def _history_buffer_getattr(obj, name, *default):
    """``getattr`` as a weights_only checkpoint may use it: only ``HistoryBuffer.<method>``.

    ``HistoryBuffer.__getstate__`` pickles its class-level ``_statistics_methods``
    (``{'min': HistoryBuffer.min, ...}``), and pickle protocol 2 (``torch.save``'s) writes each
    such function as ``getattr(HistoryBuffer, 'min')``. A general ``getattr`` in the allow-list
    would reach any attribute (``__globals__``, modules, ...) and defeat ``weights_only``; this
    one is registered under the pickled name ``builtins.getattr`` and resolves nothing else.

    Raises:
        pickle.UnpicklingError: any other object or attribute.
    """
    from mmengine.logging import HistoryBuffer  # noqa: PLC0415
    attr = HistoryBuffer.__dict__.get(name) if obj is HistoryBuffer else None
    if isinstance(name, str) and not name.startswith('_') and \
            isinstance(attr, (types.FunctionType, classmethod, staticmethod)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}): a weights_only checkpoint may only name the statistics '
        'methods of mmengine.logging.HistoryBuffer this way')


_INSTALLED_GLOBALS = False
_TRUSTED = False  # set by enable_trusted_checkpoint_loading()


def _allow_mmengine_globals() -> None:
    global _INSTALLED_GLOBALS
    if not _INSTALLED_GLOBALS:
        torch.serialization.add_safe_globals(mmengine_safe_globals())
        _INSTALLED_GLOBALS = True


def trusted_checkpoint_loading_enabled() -> bool:
    """Whether mmengine's checkpoint loads unpickle fully (the opt-in is on).

    True after :func:`enable_trusted_checkpoint_loading` or with ``MMDIGRAP_TRUST_CHECKPOINTS=1``
    in the environment (read at each load).
    """
    return _TRUSTED or os.environ.get(TRUST_ENV, '').strip().lower() in _TRUE


def _describe(f) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return getattr(f, 'name', None) or f'<{type(f).__name__}>'


class _CheckpointTorch(types.ModuleType):
    """Stand-in for the ``torch`` module inside ``mmengine.runner.checkpoint`` only.

    Every attribute is forwarded to the real ``torch`` (looked up at call time, so later
    monkeypatches of torch are honoured); only :meth:`load` differs, see there.
    """

    def __init__(self, real_torch):
        super().__init__('torch', real_torch.__doc__)
        self.__dict__['_real_torch'] = real_torch

    def __getattr__(self, name):
        return getattr(self.__dict__['_real_torch'], name)

    def __dir__(self):
        return sorted(set(dir(self.__dict__['_real_torch'])) | {'load'})

    def __repr__(self):
        return f'<mmdigrap checkpoint-safety proxy for {self.__dict__["_real_torch"]!r}>'

    def load(self, f, *args, **kwargs):
        """``torch.load`` for mmengine: ``weights_only=True`` unless the caller or the opt-in says.

        * the caller passes ``weights_only``: exactly that;
        * opt-in on (:func:`trusted_checkpoint_loading_enabled`): ``weights_only=False``, with a
          ``UserWarning`` naming the file;
        * else ``weights_only=True`` (mmengine's own classes are allow-listed, see
          :func:`mmengine_safe_globals`).

        Raises:
            UntrustedCheckpointError: the file needs a global outside the allow-list; the
                message names the file, what torch refused, and the opt-in.
        """
        real = self.__dict__['_real_torch']
        if 'weights_only' in kwargs:
            return real.load(f, *args, **kwargs)
        if trusted_checkpoint_loading_enabled():
            warnings.warn(f'mmdigrap: unpickling checkpoint {_describe(f)} fully '
                          f'(weights_only=False, opted in by {TRUST_ENV}=1 / --trust-checkpoint):'
                          ' a pickled object in it can run arbitrary code; load only files you '
                          'trust', UserWarning, stacklevel=3)
            return real.load(f, *args, weights_only=False, **kwargs)
        try:
            return real.load(f, *args, weights_only=True, **kwargs)
        except pickle.UnpicklingError as err:
            detail = str(err).split('WeightsUnpickler error:', 1)[-1].strip().split('\n')[0]
            detail = detail.split(' Please use', 1)[0].rstrip('.')
            raise UntrustedCheckpointError(
                f'Refusing to unpickle checkpoint {_describe(f)}: it holds objects outside the '
                f"safe weights_only allow-list ({detail}). Unpickling such objects can run "
                'arbitrary code. If you trust the file, opt in to full unpickling with the '
                f'environment variable {TRUST_ENV}=1 or tools/train.py / tools/test.py '
                '--trust-checkpoint (each load then warns).') from err


def _checkpoint_module():
    import mmengine.runner.checkpoint as ckpt  # noqa: PLC0415  (lazy: mmengine is optional)
    return ckpt


def install_checkpoint_safety() -> bool:
    """Make mmengine load its own checkpoints under ``weights_only=True``.

    Run by ``import mmdigrap``.

    What: (1) ``torch.serialization.add_safe_globals(mmengine_safe_globals())``; (2) replaces the
    module-global name ``torch`` inside ``mmengine.runner.checkpoint`` (and nowhere else) with a
    thin proxy whose ``load`` passes ``weights_only=True`` explicitly (or ``False`` under the
    opt-in, with a warning) and turns torch's refusal into :class:`UntrustedCheckpointError`,
    which names the file and the opt-in. ``torch.load`` itself and other modules' view of torch
    are untouched. This covers every checkpoint mmengine reads: ``load_from``, ``resume`` /
    ``--resume`` (also auto-resume), ``init_cfg=dict(type='Pretrained')``, ``tools/wise_ft.py``.

    Why: torch 2.6 made ``weights_only=True`` the default; mmengine 0.10.7 never passes it and
    pickles ``HistoryBuffer`` and numpy objects (design doc 2d). The plugin's own optimizer
    state is plain tensors and numbers and needs nothing extra.

    Idempotent; returns True if this call installed the proxy.
    """
    _allow_mmengine_globals()
    ckpt = _checkpoint_module()
    current = getattr(ckpt, 'torch', None)
    if isinstance(current, _CheckpointTorch):
        return False
    real = current if isinstance(current, types.ModuleType) else torch
    ckpt.torch = _CheckpointTorch(real)
    return True


def enable_trusted_checkpoint_loading() -> bool:
    """Opt in: unpickle mmengine checkpoints fully (``weights_only=False``), with a warning each.

    Only for checkpoints you trust (unpickling can execute arbitrary code): e.g. an old
    checkpoint with a pickled config object. Same as ``MMDIGRAP_TRUST_CHECKPOINTS=1`` or
    ``tools/train.py --trust-checkpoint``. Off by default (``import mmdigrap`` used to switch it
    on for the whole process; it no longer does).

    Returns True if this call switched it on (False: it was already on).
    """
    global _TRUSTED
    install_checkpoint_safety()
    was = _TRUSTED
    _TRUSTED = True
    return not was


def disable_trusted_checkpoint_loading() -> bool:
    """Undo :func:`enable_trusted_checkpoint_loading` (``weights_only=True`` again).

    The environment variable, if set, still wins. Returns True if the opt-in was on.
    """
    global _TRUSTED
    was = _TRUSTED
    _TRUSTED = False
    return was


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

