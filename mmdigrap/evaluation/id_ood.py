"""Deprecated: moved to :mod:`mmdigrap.datasets.id_ood` (``IDOODConcatDataset``) and
:mod:`mmdigrap.evaluation.metrics.id_ood` (``IDOODAccuracy``, ``summarize_idood``,
``idood_markdown``). Importing this module warns; the names still work."""
import warnings

from .metrics.id_ood import IDOODAccuracy, idood_markdown, summarize_idood  # noqa: F401

warnings.warn('mmdigrap.evaluation.id_ood is deprecated: import IDOODConcatDataset from '
              'mmdigrap.datasets and IDOODAccuracy / summarize_idood / idood_markdown from '
              'mmdigrap.evaluation', DeprecationWarning, stacklevel=2)

__all__ = ['IDOODConcatDataset',  # noqa: F822  (IDOODConcatDataset: lazy, __getattr__)
           'IDOODAccuracy', 'summarize_idood', 'idood_markdown']


def __getattr__(name):  # lazy, so that importing mmdigrap.evaluation never imports datasets
    if name == 'IDOODConcatDataset':
        from ..datasets.id_ood import IDOODConcatDataset
        return IDOODConcatDataset
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
