"""What ``tools/train.py``, ``tools/test.py`` and ``tools/wise_ft.py`` share: the common
flags, loading a config, the ``--quick`` overrides, the work-dir rule, the dataloader defaults
of mmpretrain's tools, building the Runner (with one summary line instead of mmengine's
per-tensor ``requires_grad=False`` warnings), the check that a checkpoint is tested at the
input size it was trained at, and ``tools/test.py``'s config changes and test run
(:func:`apply_test_args`, :func:`run_test`), which ``tools/train.py --test`` also runs in its own
process after training (:func:`run_test_after_training`).

Kept here (not in one of the tools) so that no tool has to load another tool by file path.
"""
import json
import logging
import os
import os.path as osp
import re
import resource
import sys
import time
import warnings
from collections import Counter
from copy import deepcopy
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ['LOADERS', 'QUICK_KEY', 'add_common_args', 'add_quick_arg', 'set_local_rank_env',
           'load_config', 'apply_quick', 'resolve_work_dir', 'apply_dataloader_defaults',
           'fix_persistent_workers', 'build_runner', 'MMEngineLogFilter',
           'install_log_filter', 'input_sizes', 'input_size_mismatch', 'apply_test_args',
           'run_test', 'finish_distributed', 'TEST_TIME_FILE', 'TRAIN_ONLY_KEYS',
           'run_test_after_training']

#: The dataloader fields of an mmengine config.
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: The config field that ``--quick`` applies: ``{dotted key: value}``, as ``--cfg-options``.
QUICK_KEY = 'quick'


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


def add_quick_arg(parser) -> None:
    """Add ``--quick``: apply the config's ``quick`` dict of overrides (see :func:`apply_quick`)."""
    parser.add_argument(
        '--quick', action='store_true',
        help=f'a small run: apply the config\'s `{QUICK_KEY}` dict of overrides (dotted keys as '
        'in --cfg-options, e.g. fewer and smaller images) before --cfg-options; an error if '
        'the config declares none')


def load_config(path: str, **kwargs):
    """``mmengine.config.Config.fromfile(path, **kwargs)``, without setuptools' ``pkg_resources is
    deprecated`` warning.

    mmengine 0.10.7 imports (and reloads) ``pkg_resources`` to resolve a ``package::`` base
    (this project's ``configs/_base_/default_runtime.py`` inherits
    ``mmpretrain::_base_/default_runtime.py``), and setuptools warns each time; the warning is
    about mmengine's code, not the config. It is silenced only while the config is parsed.
    """
    from mmengine.config import Config

    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                                category=UserWarning)
        return Config.fromfile(path, **kwargs)


def _lookup(cfg, dotted: str):
    """``(True, value)`` if the dotted key (list indices as integers) exists in ``cfg`` (a
    ``Config``, ``ConfigDict`` or dict)."""
    node = cfg
    for part in dotted.split('.'):
        if isinstance(node, (list, tuple)) and part.lstrip('-').isdigit():
            i = int(part)
            if not -len(node) <= i < len(node):
                return False, None
            node = node[i]
        elif not isinstance(node, (str, bytes)) and hasattr(node, 'keys') and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def apply_quick(cfg, config_path: str = 'the config') -> Dict[str, Any]:
    """Merge the config's ``quick`` dict into it, as ``--cfg-options`` would; the ``--quick``
    switch of ``tools/train.py`` / ``tools/test.py``.

    A config (usually its dataset or model ``_base_``) declares the overrides that make a small
    run, with the dotted keys of ``--cfg-options``::

        quick = {'train_dataloader.dataset.subset': 64, 'model.backbone.img_size': 56}

    Every key must already exist in the config (so a typo, or a key of another model, is an
    error rather than a silently added, unused field). Returns the applied dict.

    Raises:
        KeyError: the config has no ``quick`` dict, or one of its keys is not in the config.
        TypeError: ``quick`` is not a dict.
    """
    quick = cfg.get(QUICK_KEY, None)
    if quick is None:
        raise KeyError(
            f'--quick: {config_path} declares no `{QUICK_KEY}` dict of overrides. Add one to '
            f'the config or its dataset/model _base_, with the dotted keys of --cfg-options, '
            f"e.g. {QUICK_KEY} = {{'train_dataloader.dataset.subset': 64, "
            f"'train_cfg.max_epochs': 1}} (configs/_base_/datasets/fashion_mnist_idood.py has "
            f'one), or pass the overrides with --cfg-options.')
    if not isinstance(quick, Mapping):
        raise TypeError(f'--quick: `{QUICK_KEY}` in {config_path} must be a dict of '
                        f'{{dotted key: value}}, got {type(quick).__name__}')
    quick = {str(k): v for k, v in quick.items()}
    unknown = [k for k in quick if not _lookup(cfg, k)[0]]
    if unknown:
        raise KeyError(
            f'--quick: key(s) {unknown} of `{QUICK_KEY}` in {config_path} are not in the config '
            f'(a typo, or a key of another model/dataset); fix or remove them.')
    cfg.merge_from_dict(deepcopy(quick))
    return quick


def apply_dataloader_defaults(cfg, defaults: Mapping, fields: Sequence[str] = LOADERS,
                              no_pin_memory: bool = False,
                              no_persistent_workers: bool = False) -> None:
    """Give every present dataloader in ``fields`` the keys of ``defaults`` it does not set.

    ``defaults`` is e.g. ``dict(pin_memory=True, persistent_workers=True,
    collate_fn=dict(type='default_collate'))`` (mmpretrain's ``tools/train.py``); the
    ``--no-pin-memory`` / ``--no-persistent-workers`` flags then switch those off. A default
    ``pin_memory=True`` becomes False where no accelerator is present (torch would warn "no
    accelerator is found" for every loader; pinned memory only serves copies to a device); a
    loader's own ``pin_memory`` is kept.
    """
    from mmengine.config import ConfigDict

    if defaults.get('pin_memory', False) and not _has_accelerator():
        defaults = dict(defaults, pin_memory=False)
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


def _has_accelerator() -> bool:
    import torch

    acc = getattr(torch, 'accelerator', None)
    if acc is not None and hasattr(acc, 'is_available'):
        return bool(acc.is_available())
    return torch.cuda.is_available()


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
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    install_log_filter(runner)
    return runner


# ------------------------------------------------------------------------------ log noise
_SKIPPED = re.compile(r'^(?P<name>\S+) is skipped since its requires_grad=False$')
#: mmengine's own deprecation notices, logged at every run by its CheckpointHook / LoggerHook
#: (they build a FileClient for backward compatibility whatever the config says).
_MMENGINE_DEPRECATIONS = ('"FileClient" will be deprecated in future',
                          '"HardDiskBackend" is the alias of "LocalBackend"')


class MMEngineLogFilter(logging.Filter):
    """A ``logging.Filter`` for the Runner's logger that removes mmengine's per-run noise.

    * ``<param> is skipped since its requires_grad=False`` (one WARNING per frozen tensor from
      ``DefaultOptimWrapperConstructor.add_params``; 174 for a linear probe of ViT-S) is
      dropped and the names are collected in :attr:`frozen`; :meth:`summary` turns them into
      one line.
    * mmengine's ``FileClient`` / ``HardDiskBackend`` deprecation notices, which its own hooks
      trigger at every run whatever the config says, are dropped.

    Everything else passes.
    """

    def __init__(self):
        super().__init__('mmdigrap')
        self.frozen: List[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        m = _SKIPPED.match(msg)
        if m:
            self.frozen.append(m['name'])
            return False
        return not msg.startswith(_MMENGINE_DEPRECATIONS)

    def summary(self, start: int = 0) -> Optional[str]:
        """One line for the frozen tensors collected since index ``start`` (None if none):
        their number, per top-level module, and the first and the last name."""
        names = self.frozen[start:]
        if not names:
            return None
        per = Counter(n.split('.', 1)[0] for n in names)
        where = ', '.join(f'{k}: {v}' for k, v in per.items())
        span = names[0] if len(names) == 1 else f'{names[0]} ... {names[-1]}'
        return (f'{len(names)} parameter tensors have requires_grad=False and are not given to '
                f'the optimizer (frozen; {where}): {span}')


def install_log_filter(runner) -> MMEngineLogFilter:
    """Put an :class:`MMEngineLogFilter` on ``runner.logger`` (once) and log its summary of
    frozen tensors as one WARNING right after ``runner.build_optim_wrapper`` has run.

    Returns the filter (also ``runner._mmdigrap_log_filter``).
    """
    flt = getattr(runner, '_mmdigrap_log_filter', None)
    if flt is not None:
        return flt
    flt = MMEngineLogFilter()
    runner.logger.addFilter(flt)
    runner._mmdigrap_log_filter = flt
    build = runner.build_optim_wrapper

    def build_optim_wrapper(*args, **kwargs):
        start = len(flt.frozen)
        out = build(*args, **kwargs)
        line = flt.summary(start)
        if line:
            runner.logger.warning(line)
        return out

    runner.build_optim_wrapper = build_optim_wrapper
    return flt


# ------------------------------------------------------------------------------ input size
#: transform keys that set the size of the image that reaches the model
_SIZE_KEYS = ('scale', 'crop_size', 'size', 'img_scale')


def _walk(obj, path: str):
    """(dotted path, dict) of every dict inside ``obj`` (lists by index)."""
    if isinstance(obj, Mapping):
        yield path, obj
        for k, v in obj.items():
            yield from _walk(v, f'{path}.{k}' if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f'{path}.{i}')


def input_sizes(cfg, loaders: Sequence[str] = ('test_dataloader', )) -> Dict[str, Any]:
    """``{dotted key: value}`` of what sets the input size in ``cfg``: every ``img_size``
    inside ``model`` (e.g. ``model.backbone.img_size``) and every resize/crop size
    (``scale``, ``crop_size``, ``size``, ``img_scale``) of a ``pipeline`` transform in the
    ``loaders``' datasets. Values are as written in the config (int, tuple, ...)."""
    sizes = {}
    for path, d in _walk(cfg.get('model', None), 'model'):
        if 'img_size' in d:
            sizes[f'{path}.img_size'] = d['img_size']
    for loader in loaders:
        for path, d in _walk(cfg.get(loader, None), loader):
            if not path.split('.')[-2:-1] == ['pipeline'] or 'type' not in d:
                continue
            for k in _SIZE_KEYS:
                if k in d:
                    sizes[f'{path}.{k}'] = d[k]
    return sizes


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _cli(v) -> str:
    """``v`` as a ``--cfg-options`` value (no spaces)."""
    return repr(_as_list(v)).replace(' ', '')


def input_size_mismatch(cfg, checkpoint: str) -> Optional[str]:
    """A warning text if ``checkpoint`` was trained at another input size than ``cfg`` uses.

    Compares :func:`input_sizes` of the training config that mmengine saved in the checkpoint
    (``meta['cfg']``) with those of ``cfg``, key by key (keys present in both). Returns None
    when they agree, or when the checkpoint records no config (e.g. a converted pre-trained
    file) or cannot be read (the Runner then reports the real error). The checkpoint is loaded
    as the Runner loads it (``mmengine.runner.checkpoint._load_checkpoint``, on the CPU).
    """
    from mmengine.config import Config
    from mmengine.runner.checkpoint import _load_checkpoint

    try:
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
        text = ckpt.get('meta', {}).get('cfg') if isinstance(ckpt, dict) else None
        del ckpt
        if not isinstance(text, str):
            return None
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                                    category=UserWarning)
            trained = Config.fromstring(text, '.py')
    except Exception:  # noqa: BLE001  (the Runner loads it again and says what is wrong)
        return None
    old, new = input_sizes(trained), input_sizes(cfg)
    diff = [(k, old[k], new[k]) for k in old if k in new and _as_list(old[k]) != _as_list(new[k])]
    if not diff:
        return None
    lines = '; '.join(f'{k}: {a!r} when trained, {b!r} here' for k, a, b in diff)
    return (f'{checkpoint} was trained at another input size than this config tests at: '
            f'{lines}. The model is evaluated at the size of this config (mmpretrain resizes '
            f'a ViT\'s position embedding) and its accuracy differs from the trained size\'s. '
            f'To test as trained, pass the same size options as the training run (e.g. '
            f'--quick, or --cfg-options {diff[0][0]}={_cli(diff[0][1])}).')


# ------------------------------------------------------------------------------ testing
def apply_test_args(cfg, checkpoint: str, *, config_path: str,
                    work_dir: Optional[str] = None, launcher: str = 'none', amp: bool = False,
                    quick: bool = False, cfg_options: Optional[Mapping] = None,
                    no_pin_memory: bool = False, tta: bool = False, show: bool = False,
                    show_dir: Optional[str] = None, interval: int = 1, wait_time: float = 2.0):
    """Apply ``tools/test.py``'s changes to ``cfg`` (a freshly loaded config) in place; returns it.

    In this order, as mmpretrain 1.2.0's ``tools/test.py``: ``launcher``; the work dir
    (:func:`resolve_work_dir`: ``work_dir`` > the config's > ``./work_dirs/<stem>``);
    ``load_from = checkpoint``; ``amp`` -> ``test_cfg.fp16``; the visualization hook (``show``,
    ``show_dir``, ``interval``, ``wait_time``); ``tta`` (the config's ``tta_model`` /
    ``tta_pipeline``, else flip TTA averaging the scores); the test loader's defaults
    ``pin_memory`` (off without an accelerator or with ``no_pin_memory``) and
    ``collate_fn=default_collate``; the config's ``quick`` overrides (``quick``); then
    ``cfg_options``. ``checkpoint`` is what is evaluated whatever ``cfg_options`` says (a
    ``load_from`` there is ignored with a note on stderr). Last, ``persistent_workers`` is
    switched off for a test loader with ``num_workers=0``.

    Raises:
        AssertionError: ``show``/``show_dir`` without a ``visualization`` default hook.
        KeyError, TypeError: from :func:`apply_quick`.
    """
    from mmengine.config import ConfigDict

    cfg.launcher = launcher
    resolve_work_dir(cfg, work_dir, config_path)
    cfg.load_from = checkpoint

    # enable automatic-mixed-precision test
    if amp:
        cfg.test_cfg.fp16 = True

    # -------------------- visualization --------------------
    if show or (show_dir is not None):
        assert 'visualization' in cfg.default_hooks, \
            'VisualizationHook is not set in the `default_hooks` field of ' \
            'config. Please set `visualization=dict(type="VisualizationHook")`'

        cfg.default_hooks.visualization.enable = True
        cfg.default_hooks.visualization.show = show
        cfg.default_hooks.visualization.wait_time = wait_time
        cfg.default_hooks.visualization.out_dir = show_dir
        cfg.default_hooks.visualization.interval = interval

    # -------------------- TTA related args --------------------
    if tta:
        if 'tta_model' not in cfg:
            cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        if 'tta_pipeline' not in cfg:
            test_pipeline = cfg.test_dataloader.dataset.pipeline
            cfg.tta_pipeline = deepcopy(test_pipeline)
            flip_tta = dict(
                type='TestTimeAug',
                transforms=[
                    [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                    [test_pipeline[-1]],
                ])
            cfg.tta_pipeline[-1] = flip_tta
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline

    # ----------------- Default dataloader args -----------------
    apply_dataloader_defaults(
        cfg, dict(pin_memory=True, collate_fn=dict(type='default_collate')),
        fields=('test_dataloader', ), no_pin_memory=no_pin_memory)

    # a small run: the config's `quick` overrides, before --cfg-options (which win)
    if quick:
        apply_quick(cfg, config_path)

    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    # the CHECKPOINT argument is what is evaluated, whatever --cfg-options says
    if cfg.load_from != checkpoint:
        print(f'tools/test.py: ignoring load_from={cfg.load_from!r} from --cfg-options; '
              f'evaluating the CHECKPOINT argument {checkpoint!r}', file=sys.stderr)
        cfg.load_from = checkpoint
    fix_persistent_workers(cfg, ('test_dataloader', ))
    return cfg


def run_test(cfg, checkpoint: str, launcher: str = 'none', out: Optional[str] = None,
             out_item: Optional[str] = None) -> Dict[str, float]:
    """``tools/test.py`` once its config is made (:func:`apply_test_args`): build the Runner
    (:func:`build_runner`), log a WARNING when ``checkpoint`` was trained at another input
    size (:func:`input_size_mismatch`), dump the predictions to ``out`` (``out_item`` 'pred'
    or None) and run ``runner.test()``; with ``out_item='metrics'`` the metrics go to ``out``.

    Returns the test metrics (``{name: value}``, e.g. ``idood/id`` in %). An IDOODAccuracy
    test evaluator writes ``<work_dir>/results.json`` and ``results.md`` itself.

    Raises:
        ValueError: ``out_item`` without ``out``.
    """
    import mmengine
    from mmengine.evaluator import DumpResults

    if out is None and out_item is not None:
        raise ValueError('Please use `--out` argument to specify the '
                         'path of the output file before using `--out-item`.')
    # the Runner (Runner.from_cfg, or RUNNERS.build with runner_type); on a CPU-only host
    # with --launcher pytorch/slurm/mpi: gloo process group and a CPU DDP wrapper first
    runner = build_runner(cfg, launcher)

    # a checkpoint trained at another input size is evaluated at this config's size: say so
    mismatch = input_size_mismatch(cfg, checkpoint)
    if mismatch:
        runner.logger.warning(mismatch)

    if out and out_item in ['pred', None]:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))

    metrics = runner.test()

    if out and out_item == 'metrics':
        mmengine.dump(metrics, out)
    return metrics


def finish_distributed() -> None:
    """End a ``tools/train.py`` / ``tools/test.py`` run started with ``--launcher
    pytorch/slurm/mpi``: wait for every rank (barrier), collect the run's objects (a Runner has
    reference cycles, and its DDP model holds the process group), then destroy the default
    process group, which joins gloo's worker threads while the interpreter is still alive.
    A no-op when no process group is initialised. Call it after the Runner is out of scope.

    Why: a gloo worker thread frees a finished collective (its tensors are Python objects) by
    itself, which takes the GIL. When that happens after the main thread has begun interpreter
    finalization, the thread is ended inside a C++ destructor and the rank aborts after all its
    work is done ("terminate called without an active exception", SIGABRT). Seen under load in
    ``tests/test_launchers.py``; the core dump's backtrace is ``ProcessGroupGloo::runLoop ->
    ~AsyncAllgatherWork -> TensorImpl::decref_pyobject -> take_gil -> pthread_exit ->
    std::terminate``. PyTorch's documented remedy is this call at the end of ``main``
    (``torch.distributed.destroy_process_group``, "Shutdown" in its distributed docs; an
    automatic atexit version, pytorch/pytorch#179291, was withdrawn).
    """
    import gc

    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    gc.collect()
    dist.destroy_process_group()


#: The file ``tools/train.py --test`` writes into the work dir: the test phase's time.
TEST_TIME_FILE = 'test_time.json'
#: ``--cfg-options`` keys that configure the start of training, not the test:
#: :func:`run_test_after_training` leaves them out (``load_from`` is the start checkpoint).
TRAIN_ONLY_KEYS = ('load_from', 'resume')


def _wait_past(timestamp: Optional[str]) -> None:
    """Sleep until ``time.strftime('%Y%m%d_%H%M%S')`` differs from ``timestamp``.

    mmengine names a Runner's log folder, logger, message hub and visualizer after the second
    it was built in; a test Runner built in the training Runner's second would share them.
    """
    while timestamp is not None and time.strftime('%Y%m%d_%H%M%S') == timestamp:
        time.sleep(0.05)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_test_after_training(config_path: str, work_dir: str, *, launcher: str = 'none',
                            quick: bool = False, cfg_options: Optional[Mapping] = None,
                            no_pin_memory: bool = False, final_iter: Optional[int] = None,
                            after_timestamp: Optional[str] = None) -> Dict[str, Any]:
    """Test the last checkpoint of the training run in ``work_dir``, in this process, exactly as
    ``tools/test.py CONFIG <last checkpoint> --work-dir WORK_DIR [--quick] [--no-pin-memory]
    [--launcher L] [--cfg-options ...]`` would; the ``--test`` of ``tools/train.py``.

    The config is loaded again from ``config_path`` (nothing of the training run's changes
    carries over) and given :func:`apply_test_args`'s changes; ``cfg_options`` are the training
    run's, less :data:`TRAIN_ONLY_KEYS` (``load_from`` is the *start* checkpoint of training;
    the test loads the last one). A new Runner is built (:func:`run_test`) and loads the
    checkpoint named in ``<work_dir>/last_checkpoint``, so exactly the saved weights are
    evaluated, and writes the same files as ``tools/test.py`` (an IDOODAccuracy evaluator:
    ``<work_dir>/results.json`` and ``results.md``; mmengine: ``<work_dir>/<timestamp>/``).

    The phase's cost, from loading the config to the end of the test, is written (main
    process) to ``<work_dir>/test_time.json`` (:data:`TEST_TIME_FILE`)::

        {"wall_s": 12.3, "cpu_s": 11.9, "checkpoint": "<path>", "metrics": {...}}

    ``wall_s``: ``time.perf_counter`` seconds; ``cpu_s``: ``time.process_time`` (user + system
    CPU of all threads of this process) plus the CPU of child processes (dataloader workers)
    reaped during the phase.

    Args:
        config_path, work_dir: the training run's config file and work dir (``cfg.work_dir``).
        launcher, quick, cfg_options, no_pin_memory: the training run's flags.
        final_iter: the training run's last iteration (``runner.iter``); a ``UserWarning``
            when the last checkpoint was saved at another one (then the test does not see the
            final weights, as ``tools/test.py`` on that checkpoint would not).
        after_timestamp: the training Runner's ``timestamp``; the test Runner is built in a
            later second (see :func:`_wait_past`).

    Returns:
        The dict written to ``test_time.json``.

    Raises:
        FileNotFoundError: the training run saved no checkpoint (no ``last_checkpoint``, or
            the file it names is gone).
    """
    from mmengine.dist import barrier, is_main_process
    from mmengine.runner.checkpoint import _load_checkpoint

    barrier()  # distributed: every rank reads last_checkpoint after rank 0 has written it
    last = osp.join(work_dir, 'last_checkpoint')
    ckpt = None
    if osp.isfile(last):
        with open(last) as f:
            ckpt = f.read().strip()
    if not ckpt or not osp.isfile(ckpt):
        raise FileNotFoundError(
            f'--test: no last checkpoint of the training run in {work_dir!r} ({last!r} is '
            f'missing or names no file); the config needs a CheckpointHook (save_last=True)')
    if final_iter is not None:
        saved = _load_checkpoint(ckpt, map_location='cpu').get('meta', {}).get('iter')
        if saved is not None and saved != final_iter:
            warnings.warn(f'--test: the last checkpoint {ckpt} was saved at iteration {saved}, '
                          f'training ended at {final_iter}: testing the checkpoint, not the '
                          f'final weights (set default_hooks.checkpoint.save_last=True)')
    _wait_past(after_timestamp)
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu_s()

    opts = None if cfg_options is None else \
        {k: v for k, v in cfg_options.items() if k not in TRAIN_ONLY_KEYS}
    cfg = apply_test_args(load_config(config_path), ckpt, config_path=config_path,
                          work_dir=work_dir, launcher=launcher, quick=quick, cfg_options=opts,
                          no_pin_memory=no_pin_memory)
    metrics = run_test(cfg, ckpt, launcher)

    info = dict(wall_s=time.perf_counter() - t0,
                cpu_s=time.process_time() - c0 + _children_cpu_s() - k0,
                checkpoint=ckpt, metrics=_jsonable(metrics))
    if is_main_process():
        path = osp.join(work_dir, TEST_TIME_FILE)
        with open(path, 'w') as f:
            json.dump(info, f, indent=2)
            f.write('\n')
    return info


def _jsonable(metrics: Mapping) -> Dict[str, Any]:
    """``metrics`` with numpy / torch scalars as Python numbers (others as ``str``)."""
    out = {}
    for k, v in metrics.items():
        if hasattr(v, 'item') and getattr(v, 'ndim', None) == 0:
            v = v.item()
        out[str(k)] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out
