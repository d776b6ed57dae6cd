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
# The parts shared with tools/train.py live in mmdigrap/engine/launch.py, also this tool's
# config changes and test run (apply_test_args, run_test), which ``tools/train.py --test``
# runs in its own process after training.
import argparse

import mmdigrap  # noqa: F401  (registers modules + safe checkpoint loading)
from mmdigrap.engine.launch import (
    add_common_args,
    add_quick_arg,
    apply_test_args,
    finish_distributed,
    load_config,
    run_test,
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
    """Merge CLI arguments to config (``mmdigrap.engine.launch.apply_test_args``)."""
    return apply_test_args(
        cfg, args.checkpoint, config_path=args.config, work_dir=args.work_dir,
        launcher=args.launcher, amp=args.amp, quick=getattr(args, 'quick', False),
        cfg_options=args.cfg_options, no_pin_memory=args.no_pin_memory, tta=args.tta,
        show=args.show, show_dir=args.show_dir, interval=args.interval,
        wait_time=args.wait_time)


def main():
    args = parse_args()

    if args.out is None and args.out_item is not None:
        raise ValueError('Please use `--out` argument to specify the '
                         'path of the output file before using `--out-item`.')

    # load config
    cfg = load_config(args.config)

    # merge cli arguments to config
    cfg = merge_args(cfg, args)

    # build the runner, warn on an input-size mismatch, (dump results,) test
    run_test(cfg, args.checkpoint, args.launcher, out=args.out, out_item=args.out_item)

    # distributed: every rank done, the process group destroyed before interpreter exit
    finish_distributed()


if __name__ == '__main__':
    main()
