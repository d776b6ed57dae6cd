"""``python -m mmdigrap.datasets.checks CONFIG``: what a config expects on disk and is missing.

Prints every missing data folder/file of the train/val/test dataloaders
(:func:`~mmdigrap.datasets.data_checks.missing_data_paths`) and every missing checkpoint
(``load_from``, ``init_cfg=dict(type='Pretrained', checkpoint=...)``) and tokenizer folder
(:func:`~mmdigrap.datasets.data_checks.missing_model_paths`); exit status 1 if anything is
missing, 0 otherwise. Nothing is built or loaded. Example::

    python -m mmdigrap.datasets.checks \
        configs/domainnet/vit-b16-clip_digrap_8xb32-10e_domainnet-real.py \
        --cfg-options load_from=/weights/clip-vit-b16_domainnet-zeroshot.pth

The checks themselves live in :mod:`mmdigrap.datasets.data_checks` (this module re-exports
them, so ``from mmdigrap.datasets.checks import check_config_data`` keeps working). The package
never imports this module, so ``python -m`` runs it without Python's "found in sys.modules"
``RuntimeWarning``.
"""
import argparse
import sys

from .data_checks import (
    DATASET_DOCS,
    check_config_data,
    missing_data_paths,
    missing_model_paths,
    require_data_root,
)

__all__ = ['DATASET_DOCS', 'require_data_root', 'missing_data_paths', 'check_config_data',
           'missing_model_paths', 'main']


def main(argv=None) -> int:
    from mmengine.config import DictAction

    from mmdigrap.engine.launch import load_config  # the CLI only (datasets/ needs no engine)
    parser = argparse.ArgumentParser(
        description='List the data folders/files, checkpoints and tokenizer folders a config '
                    'expects and which are missing.')
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    parser.add_argument('--loaders', nargs='+',
                        default=['train_dataloader', 'val_dataloader', 'test_dataloader'])
    args = parser.parse_args(argv)
    cfg = load_config(args.config, import_custom_modules=False)
    cfg.merge_from_dict(args.cfg_options)
    missing = missing_data_paths(cfg, args.loaders)
    weights = missing_model_paths(cfg)
    if not missing and not weights:
        print(f'OK: every data path, checkpoint and tokenizer of {args.config} exists.')
        return 0
    for desc, path, kind in missing + weights:
        print(f'MISSING {kind:6s} {path}   ({desc})')
    if missing:
        print(f'See {DATASET_DOCS} for each data set and its layout.')
    if weights:
        print('See docs/settings.md for where each setting\'s weights come from; point the '
              "config at another file with --cfg-options (e.g. 'load_from=/path/to/ckpt.pth' or "
              "'model.backbone.init_cfg.checkpoint=/path/to/ckpt.pth').")
    return 1


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
