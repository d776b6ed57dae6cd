# Copyright (c) OpenMMLab. All rights reserved.
# Adapted from mmpretrain 1.2.0 tools/train.py for mmdigrap: same flags and behaviour, plus
#   * ``import mmdigrap`` (registers the DiGraP optimizer wrappers / hooks and lets mmengine load
#     its own checkpoints under torch's safe ``weights_only=True``, so --resume works);
#   * ``--trust-checkpoint``: explicit opt-in to full unpickling of the checkpoints this run
#     loads (only for files you trust; each load warns);
#   * ``setup_cpu_distributed`` so ``--launcher pytorch|slurm|mpi`` also works without CUDA
#     (gloo + device_ids=None; mmengine 0.10.7 would call torch.cuda.set_device and crash);
#   * ``--amp`` picks the AMP flavour of the configured wrapper (DiGraPOptimWrapper ->
#     DiGraPAmpOptimWrapper) instead of always AmpOptimWrapper, and bf16 when there is no CUDA;
#     it is applied after ``--cfg-options`` so it sees the finally configured wrapper type;
#   * the ``persistent_workers=True`` default is not applied to loaders with ``num_workers=0``
#     (torch's DataLoader raises ValueError for that combination);
#   * ``--quick`` applies the config's ``quick`` dict of overrides (a small run);
#   * ``--test``: after training, test the last checkpoint in this process, exactly as
#     ``tools/test.py CONFIG <last checkpoint> --work-dir <the same work dir>`` with this run's
#     ``--cfg-options`` (less ``load_from``/``resume``), ``--quick``, ``--no-pin-memory`` and
#     ``--launcher`` would: the same files (``results.json`` of an IDOODAccuracy evaluator, a
#     ``<timestamp>/`` log folder), one process start-up fewer. The test phase's wall and CPU
#     seconds go to ``<work_dir>/test_time.json`` (``run_test_after_training``).
# The parts shared with tools/test.py live in mmdigrap/engine/launch.py.
import argparse
import gc
import warnings

import torch

import mmdigrap  # noqa: F401  (registers modules + safe checkpoint loading)
from mmdigrap.engine.launch import (
    add_common_args,
    add_quick_arg,
    apply_dataloader_defaults,
    apply_quick,
    build_runner,
    finish_distributed,
    fix_persistent_workers,
    load_config,
    resolve_work_dir,
    run_test_after_training,
    set_local_rank_env,
)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training (the AMP flavour of '
        'the configured optimizer wrapper; bfloat16 when CUDA is absent)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='whether not to evaluate the checkpoint during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='whether to auto scale the learning rate according to the '
        'actual batch size and the original batch size.')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='whether to disable the persistent_workers option in dataloaders.'
    )
    parser.add_argument(
        '--test',
        action='store_true',
        help='after training, test the last checkpoint in this process, as tools/test.py '
        'CONFIG <last checkpoint> --work-dir <this work dir> with the same --cfg-options '
        '(less load_from/resume), --quick, --no-pin-memory and --launcher would (the same '
        'files, e.g. results.json); the test\'s wall and CPU seconds go to '
        '<work dir>/test_time.json')
    add_quick_arg(parser)  # --quick: the config's `quick` overrides
    add_common_args(parser)  # --cfg-options, --launcher, --local_rank
    args = parser.parse_args()
    set_local_rank_env(args)

    return args


def _registered_optim_wrappers():
    """{name: class} registered in mmengine's OPTIM_WRAPPERS and all its child (scope)
    registries, each under its plain and its ``scope.``-prefixed name."""
    from mmengine.registry import OPTIM_WRAPPERS
    names, todo = {}, [OPTIM_WRAPPERS]
    while todo:
        reg = todo.pop()
        for k, v in reg.module_dict.items():
            names.setdefault(k, v)
            names[f'{reg.scope}.{k}'] = v
        todo.extend(reg.children.values())
    return names


def amp_optim_wrapper_type(wrapper_type):
    """The AMP flavour of an optimizer-wrapper type.

    ``'OptimWrapper'`` -> ``'AmpOptimWrapper'``, ``'DiGraPOptimWrapper'`` ->
    ``'DiGraPAmpOptimWrapper'``; in general 'OptimWrapper' in the name is replaced with
    'AmpOptimWrapper' if such a type is registered (a scope prefix is kept). Otherwise the type
    is returned unchanged with a warning. Class objects (pure-python configs) map to the
    registered class of the AMP name.
    """
    registered = _registered_optim_wrappers()
    is_cls = isinstance(wrapper_type, type)
    name = str(wrapper_type)
    if is_cls:  # the name it is registered under (may differ from the class name)
        name = next((k for k, v in registered.items() if v is wrapper_type and '.' not in k),
                    wrapper_type.__name__)
    base = name.rsplit('.', 1)[-1]
    if 'AmpOptimWrapper' in base:
        return wrapper_type
    if 'OptimWrapper' in base:
        amp = name[:len(name) - len(base)] + base.replace('OptimWrapper', 'AmpOptimWrapper', 1)
        if amp in registered:
            return registered[amp] if is_cls else amp
    warnings.warn(f'--amp: no AMP flavour of optimizer wrapper {name!r} is registered; '
                  f'keeping {name!r} (mixed precision is NOT enabled by the wrapper)')
    return wrapper_type


def merge_args(cfg, args):
    """Merge CLI arguments to config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    resolve_work_dir(cfg, args.work_dir, args.config)

    # resume training
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # enable auto scale learning rate
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    # set dataloader args
    apply_dataloader_defaults(
        cfg, dict(pin_memory=True, persistent_workers=True,
                  collate_fn=dict(type='default_collate')),
        no_pin_memory=args.no_pin_memory, no_persistent_workers=args.no_persistent_workers)

    # a small run: the config's `quick` overrides, before --cfg-options (which win)
    if getattr(args, 'quick', False):
        apply_quick(cfg, args.config)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # enable automatic-mixed-precision training. Unlike mmpretrain this runs after
    # --cfg-options, so the AMP flavour is taken of the wrapper that is finally configured
    # (`--amp --cfg-options optim_wrapper.type=DiGraPOptimWrapper` -> DiGraPAmpOptimWrapper).
    if args.amp is True:
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        cfg.optim_wrapper.type = amp_optim_wrapper_type(wrapper_type)
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if not torch.cuda.is_available():
            dtype = cfg.optim_wrapper.get('dtype', None)
            if dtype not in (None, 'bfloat16', torch.bfloat16):
                warnings.warn(f'--amp without CUDA: using dtype bfloat16 instead of the '
                              f'configured {dtype!r}')
            cfg.optim_wrapper.dtype = 'bfloat16'
            if cfg.optim_wrapper.type in ('AmpOptimWrapper', 'mmengine.AmpOptimWrapper'):
                warnings.warn('--amp: mmengine\'s AmpOptimWrapper requires a GPU; on the '
                              'CPU use a wrapper with CPU bf16 support, e.g. '
                              'DiGraPAmpOptimWrapper')

    # torch's DataLoader raises "persistent_workers option needs num_workers > 0"
    fix_persistent_workers(cfg)

    return cfg


def train(cfg, args):
    """Build the Runner, train, and with ``--test`` test the last checkpoint in this process.
    The Runner lives only in this function (see ``finish_distributed`` in ``main``)."""
    # build the runner (Runner.from_cfg, or RUNNERS.build with runner_type); on a CPU-only
    # host with --launcher pytorch/slurm/mpi: gloo process group and a CPU DDP wrapper first
    runner = build_runner(cfg, args.launcher)

    # start training
    runner.train()

    # --test: the last checkpoint, tested as tools/test.py would, in this process
    if getattr(args, 'test', False):
        stamp, final_iter = runner.timestamp, runner.iter
        del runner  # the test builds its own Runner from the config file
        gc.collect()
        run_test_after_training(
            args.config, cfg.work_dir, launcher=args.launcher,
            quick=getattr(args, 'quick', False), cfg_options=args.cfg_options,
            no_pin_memory=args.no_pin_memory, final_iter=final_iter, after_timestamp=stamp)


def main():
    args = parse_args()

    # load config
    cfg = load_config(args.config)

    # merge cli arguments to config
    cfg = merge_args(cfg, args)

    train(cfg, args)

    # distributed: every rank done, the process group destroyed before interpreter exit
    finish_distributed()


if __name__ == '__main__':
    main()
