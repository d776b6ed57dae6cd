"""Datasets (mmpretrain ``DATASETS``): the embedded Fashion-MNIST data and its corrupted OOD
copies, the ID/OOD concat datasets of a one-run ID + OOD test, and ImageNet's OOD variants.

* :mod:`.fashion_mnist`: ``FashionMNISTIdx``, ``FashionMNISTCorrupted``, ``FashionMNISTIDOOD``;
* :mod:`.id_ood`: ``IDOODConcatDataset``, ``ClassSubsetIDOODDataset``;
* :mod:`.imagenet_variants`: ``ImageNetVariant`` (ImageNet-V2 / -A / -R / -Sketch);
* :mod:`.digits`: ``UCIDigits``, ``OpenCVDigits`` (the digits task: UCI -> OpenCV digits);
* :mod:`.corruptions`: the ImageNet-C corruptions (the ``imagecorruptions`` library);
* :mod:`.data_checks`: missing-data checks (``python -m mmdigrap.datasets.checks CONFIG``).

This package does not import :mod:`mmdigrap.evaluation` (the metrics read the set names and
the ``idood_sets`` / ``class_subsets`` metainfo these datasets write).
"""
from . import corruptions
from .corruptions import CORRUPTIONS, SEVERITY_TABLE, corrupt
from .data_checks import check_config_data, missing_data_paths, require_data_root
from .fashion_mnist import (
                            DEFAULT_DATA_ROOT,
                            FashionMNISTCorrupted,
                            FashionMNISTIDOOD,
                            FashionMNISTIdx,
                            IdxFileError,
                            balanced_subset_indices,
                            load_fashion_mnist,
                            read_idx,
)
from .id_ood import ClassSubsetIDOODDataset, IDOODConcatDataset
from .imagenet_variants import ImageNetVariant, load_wnids

__all__ = [
    'corruptions', 'CORRUPTIONS', 'SEVERITY_TABLE', 'corrupt', 'DEFAULT_DATA_ROOT',
    'FashionMNISTCorrupted', 'FashionMNISTIdx', 'FashionMNISTIDOOD', 'IdxFileError',
    'balanced_subset_indices', 'load_fashion_mnist', 'read_idx', 'IDOODConcatDataset',
    'ClassSubsetIDOODDataset', 'ImageNetVariant', 'load_wnids', 'require_data_root',
    'missing_data_paths', 'check_config_data'
]
from .digits import OpenCVDigits, UCIDigits  # noqa: E402  (UCI -> OpenCV digits task)

__all__ += ['OpenCVDigits', 'UCIDigits']
