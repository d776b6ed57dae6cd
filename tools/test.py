# Copyright (c) OpenMMLab. All rights reserved.
# Adapted from mmpretrain 1.2.0 tools/test.py for mmdigrap: same flags and behaviour, plus
#   * ``import mmdigrap`` (registers mmdigrap's modules and lets mmengine load its own
#     checkpoints under torch's safe ``weights_only=True``); ``--trust-checkpoint`` opts in to
#     full unpickling (only for files you trust);
#   * ``setup_cpu_distributed`` so ``--launcher pytorch|slurm|mpi`` also works without CUDA
#     (gloo + device_ids=None; mmengine 0.10.7 would call torch.cuda.set_device and crash);
#   * ``persistent_workers`` is switched off for a test loader with ``num_workers=0``;
#   * ``--quick`` applies the config's ``quick`` dict of overrides (to test a --quick run);
#   * a WARNING when the checkpoint was trained at another input size (``meta['cfg']``).
# The parts shared with tools/train.py live in mmdigrap/engine/launch.py.
import argparse
import sys
from copy import deepcopy

import mmengine
from mmengine.config import ConfigDict
from mmengine.evaluator import DumpResults

import mmdigrap  # noqa: F401  (registers modules + safe checkpoint loading)
from mmdigrap.engine.launch import (
    add_common_args,
    add_quick_arg,
    apply_dataloader_defaults,
    apply_quick,
    build_runner,
    fix_persistent_workers,
    input_size_mismatch,
    load_config,
    resolve_work_dir,
    set_local_rank_env,
)


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMPreTrain test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', help='the file to output results.')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='To output whether metrics or predictions. '
        'Defaults to output predictions.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision test')
    parser.add_argument(
        '--show-dir',
        help='directory where the visualization images will be saved.')
    parser.add_argument(
        '--show',
        action='store_true',
        help='whether to display the prediction results in a window.')
    parser.add_argument(
        '--interval',
        type=int,
        default=1,
        help='visualize per interval samples.')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='display time of every window. (second)')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='Whether to enable the Test-Time-Aug (TTA). If the config file '
        'has `tta_pipeline` and `tta_model` fields, use them to determine the '
        'TTA transforms and how to merge the TTA results. Otherwise, use flip '
        'TTA by averaging classification score.')
    add_quick_arg(parser)  # --quick: the config's `quick` overrides (test a --quick run)
    add_common_args(parser)  # --cfg-options, --launcher, --local_rank
    args = parser.parse_args()
    set_local_rank_env(args)
    return args


def merge_args(cfg, args):
    """Merge CLI arguments to config."""
    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    resolve_work_dir(cfg, args.work_dir, args.config)

    cfg.load_from = args.checkpoint

    # enable automatic-mixed-precision test
    if args.amp:
        cfg.test_cfg.fp16 = True

    # -------------------- visualization --------------------
    if args.show or (args.show_dir is not None):
        assert 'visualization' in cfg.default_hooks, \
            'VisualizationHook is not set in the `default_hooks` field of ' \
            'config. Please set `visualization=dict(type="VisualizationHook")`'

        cfg.default_hooks.visualization.enable = True
        cfg.default_hooks.visualization.show = args.show
        cfg.default_hooks.visualization.wait_time = args.wait_time
        cfg.default_hooks.visualization.out_dir = args.show_dir
        cfg.default_hooks.visualization.interval = args.interval

    # -------------------- TTA related args --------------------
    if args.tta:
        if 'tta_model' not in cfg:
            cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        if 'tta_pipeline' not in cfg:
            test_pipeline = cfg.test_dataloader.dataset.pipeline
            cfg.tta_pipeline = deepcopy(test_pipeline)
            flip_tta = dict(
                type='TestTimeAug',
                transforms=[
                    [
                        dict(type='RandomFlip', prob=1.),
                        dict(type='RandomFlip', prob=0.)
                    ],
                    [test_pipeline[-1]],
                ])
            cfg.tta_pipeline[-1] = flip_tta
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline

    # ----------------- Default dataloader args -----------------
    apply_dataloader_defaults(
        cfg, dict(pin_memory=True, collate_fn=dict(type='default_collate')),
        fields=('test_dataloader', ), no_pin_memory=args.no_pin_memory)

    # a small run: the config's `quick` overrides, before --cfg-options (which win)
    if getattr(args, 'quick', False):
        apply_quick(cfg, args.config)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # the CHECKPOINT argument is what is evaluated, whatever --cfg-options says
    if cfg.load_from != args.checkpoint:
        print(f'tools/test.py: ignoring load_from={cfg.load_from!r} from --cfg-options; '
              f'evaluating the CHECKPOINT argument {args.checkpoint!r}', file=sys.stderr)
        cfg.load_from = args.checkpoint
    fix_persistent_workers(cfg, ('test_dataloader', ))

    return cfg


def main():
    args = parse_args()

    if args.out is None and args.out_item is not None:
        raise ValueError('Please use `--out` argument to specify the '
                         'path of the output file before using `--out-item`.')

    # load config
    cfg = load_config(args.config)

    # merge cli arguments to config
    cfg = merge_args(cfg, args)

    # build the runner (Runner.from_cfg, or RUNNERS.build with runner_type); on a CPU-only
    # host with --launcher pytorch/slurm/mpi: gloo process group and a CPU DDP wrapper first
    runner = build_runner(cfg, args.launcher)

    # a checkpoint trained at another input size is evaluated at this config's size: say so
    mismatch = input_size_mismatch(cfg, args.checkpoint)
    if mismatch:
        runner.logger.warning(mismatch)

    if args.out and args.out_item in ['pred', None]:
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))

    # start testing
    metrics = runner.test()

    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)


if __name__ == '__main__':
    main()
