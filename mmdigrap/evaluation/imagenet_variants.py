"""Deprecated: split into :mod:`mmdigrap.datasets.imagenet_variants` (``ImageNetVariant``,
``load_wnids``), :mod:`mmdigrap.datasets.id_ood` (``ClassSubsetIDOODDataset``),
:mod:`mmdigrap.evaluation.metrics` (``ClassSubsetIDOODAccuracy``, ``ClassSubsetAccuracy``,
``PerSetMetric``, ``mask_scores``) and :mod:`mmdigrap.models.heads` (``CLIPClsHead``).
Importing this module warns; the names still work (``import mmdigrap`` registers them all)."""
import warnings

from .metrics import ClassSubsetAccuracy, ClassSubsetIDOODAccuracy, PerSetMetric, mask_scores  # noqa: F401

warnings.warn('mmdigrap.evaluation.imagenet_variants is deprecated: `import mmdigrap` '
              'registers everything; import the names from mmdigrap.datasets, '
              'mmdigrap.evaluation and mmdigrap.models', DeprecationWarning, stacklevel=2)

__all__ = [
    'ClassSubsetIDOODAccuracy', 'ClassSubsetAccuracy', 'PerSetMetric', 'mask_scores',
    # provided lazily by __getattr__ below:
    'load_wnids', 'ImageNetVariant', 'ClassSubsetIDOODDataset',  # noqa: F822
    'CLIPClsHead',  # noqa: F822
]

_LAZY = dict(load_wnids='datasets', ImageNetVariant='datasets',
             ClassSubsetIDOODDataset='datasets', CLIPClsHead='models')


def __getattr__(name):  # lazy, so that importing mmdigrap.evaluation never imports datasets
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'mmdigrap.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
