"""Embedded real data: Fashion-MNIST from the Debian idx files and corrupted OOD copies.

Importing registers ``FashionMNISTIdx``, ``FashionMNISTCorrupted`` and ``FashionMNISTIDOOD``
in mmpretrain's ``DATASETS``, and the digits task's ``UCIDigits`` and ``OpenCVDigits``.
:mod:`.corruptions` holds the ImageNet-C corruptions (the ``imagecorruptions`` library).
"""
from . import corruptions
from .corruptions import CORRUPTIONS, SEVERITY_TABLE, corrupt
from .fashion_mnist import (DEFAULT_DATA_ROOT, FashionMNISTCorrupted, FashionMNISTIdx,
                            FashionMNISTIDOOD, IdxFileError, balanced_subset_indices,
                            load_fashion_mnist, read_idx)

__all__ = [
    'corruptions', 'CORRUPTIONS', 'SEVERITY_TABLE', 'corrupt', 'DEFAULT_DATA_ROOT',
    'FashionMNISTCorrupted', 'FashionMNISTIdx', 'FashionMNISTIDOOD', 'IdxFileError',
    'balanced_subset_indices', 'load_fashion_mnist', 'read_idx'
]
from .digits import OpenCVDigits, UCIDigits  # noqa: E402  (UCI -> OpenCV digits task)

__all__ += ['OpenCVDigits', 'UCIDigits']
