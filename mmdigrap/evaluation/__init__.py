"""ID + OOD evaluation in one run: a named-set concat dataset and a summary metric.

Importing registers ``IDOODConcatDataset`` (mmpretrain ``DATASETS``) and ``IDOODAccuracy``
(mmpretrain ``METRICS``), and the ImageNet-variant / per-set metrics of
:mod:`.imagenet_variants` used by the paper-scale configs.
"""
from . import imagenet_variants  # noqa: F401  (ImageNet-variant datasets/metrics, PerSetMetric)
from .id_ood import IDOODAccuracy, IDOODConcatDataset, idood_markdown, summarize_idood

__all__ = ['IDOODAccuracy', 'IDOODConcatDataset', 'idood_markdown', 'summarize_idood']
