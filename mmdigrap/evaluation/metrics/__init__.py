"""Metrics (mmpretrain / mmengine ``METRICS``): ID/OOD accuracy, class-subset accuracy, and
any metric per named test set."""
from .class_subset import ClassSubsetAccuracy, ClassSubsetIDOODAccuracy, mask_scores
from .id_ood import IDOODAccuracy, idood_markdown, summarize_idood
from .per_set import PerSetMetric

__all__ = [
    'IDOODAccuracy', 'idood_markdown', 'summarize_idood', 'ClassSubsetAccuracy',
    'ClassSubsetIDOODAccuracy', 'mask_scores', 'PerSetMetric'
]
