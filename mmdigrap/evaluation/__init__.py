"""ID + OOD evaluation in one run: a named-set concat dataset and a summary metric.

Importing registers ``IDOODConcatDataset`` (mmpretrain ``DATASETS``) and ``IDOODAccuracy``
(mmpretrain ``METRICS``).
"""
from .id_ood import IDOODAccuracy, IDOODConcatDataset, idood_markdown, summarize_idood

__all__ = ['IDOODAccuracy', 'IDOODConcatDataset', 'idood_markdown', 'summarize_idood']
