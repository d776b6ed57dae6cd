"""Evaluation: the metrics of an ID + OOD test run (:mod:`.metrics`).

Importing registers ``IDOODAccuracy``, ``ClassSubsetIDOODAccuracy`` and ``ClassSubsetAccuracy``
(mmpretrain ``METRICS``) and ``PerSetMetric`` (mmengine's root ``METRICS``). The datasets that
stamp each sample with its set name live in :mod:`mmdigrap.datasets`; this package does not
import them.
"""
import warnings

from .metrics import (
    ClassSubsetAccuracy,
    ClassSubsetIDOODAccuracy,
    IDOODAccuracy,
    PerSetMetric,
    idood_markdown,
    mask_scores,
    summarize_idood,
)

__all__ = [
    'IDOODAccuracy', 'idood_markdown', 'summarize_idood', 'ClassSubsetAccuracy',
    'ClassSubsetIDOODAccuracy', 'mask_scores', 'PerSetMetric'
]

#: Names that moved to :mod:`mmdigrap.datasets`; still reachable here, with a warning.
_MOVED_TO_DATASETS = ('IDOODConcatDataset', 'ClassSubsetIDOODDataset', 'ImageNetVariant',
                      'load_wnids')


def __getattr__(name):
    if name in _MOVED_TO_DATASETS:
        warnings.warn(f'mmdigrap.evaluation.{name} moved to mmdigrap.datasets.{name}; the old '
                      'name will be removed', DeprecationWarning, stacklevel=2)
        from .. import datasets
        return getattr(datasets, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
