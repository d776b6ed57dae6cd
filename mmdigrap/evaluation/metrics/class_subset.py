"""Accuracy restricted to a subset of the classes (ImageNet-A / -R with a 1000-way head).

* :func:`mask_scores`: scores with every class outside a subset set to ``-inf``.
* :class:`ClassSubsetIDOODAccuracy` (mmpretrain ``METRICS``): :class:`IDOODAccuracy` (per-set,
  ID, mean OOD) that masks each sample's scores to its set's class subset before the argmax.
* :class:`ClassSubsetAccuracy` (``METRICS``): mmpretrain's ``Accuracy`` with the same masking,
  for a single test set (``class_subset`` given or taken from the dataset's metainfo).

The subsets come from ``dataset_meta`` (filled by
:class:`~mmdigrap.datasets.ClassSubsetIDOODDataset` and
:class:`~mmdigrap.datasets.ImageNetVariant`) or are given explicitly.
"""
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from mmpretrain.evaluation import Accuracy
from mmpretrain.registry import METRICS

from .id_ood import IDOODAccuracy

__all__ = ['mask_scores', 'ClassSubsetIDOODAccuracy', 'ClassSubsetAccuracy']


def mask_scores(score: torch.Tensor, subset: Optional[Sequence[int]]) -> torch.Tensor:
    """``score`` (C,) or (N, C) with every class outside ``subset`` set to ``-inf``."""
    if subset is None:
        return score
    idx = torch.as_tensor(list(subset), dtype=torch.long, device=score.device)
    out = torch.full_like(score, float('-inf'))
    out[..., idx] = score[..., idx]
    return out


def _resolve_subsets(explicit: Optional[Mapping[str, Any]], meta: Optional[dict]) -> dict:
    subsets = dict((meta or {}).get('class_subsets') or {})
    for name, sub in (explicit or {}).items():
        if isinstance(sub, str):  # a file with one index per line
            with open(sub) as f:
                sub = [int(x) for x in f.read().split()]
        subsets[name] = None if sub is None else [int(i) for i in sub]
    return subsets


@METRICS.register_module()
class ClassSubsetIDOODAccuracy(IDOODAccuracy):
    """:class:`~mmdigrap.evaluation.IDOODAccuracy` with per-set class masking.

    For a sample of set ``s`` with a class subset ``K_s`` (ImageNet-A / -R: their 200
    classes), the prediction is ``argmax_{k in K_s} score[k]``; other sets use the plain
    argmax over all classes. This is the standard protocol for IN-A / IN-R with a 1000-way
    head.

    Args:
        class_subsets (dict, optional): ``{set_name: indices | path to a file of indices |
            None}``; overrides / adds to ``dataset_meta['class_subsets']`` (filled by
            :class:`~mmdigrap.datasets.ClassSubsetIDOODDataset` from
            :class:`~mmdigrap.datasets.ImageNetVariant`).
        **kwargs: as :class:`~mmdigrap.evaluation.IDOODAccuracy`.
    """

    def __init__(self, class_subsets: Optional[Mapping[str, Any]] = None, **kwargs):
        super().__init__(**kwargs)
        self.class_subsets = class_subsets
        self._subsets: Optional[dict] = None

    def _subset_of(self, set_name: Optional[str]):
        if self._subsets is None:
            self._subsets = _resolve_subsets(self.class_subsets, self.dataset_meta)
        key = set_name if set_name is not None else self._id_name()
        return self._subsets.get(key)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            subset = self._subset_of(ds.get('set_name'))
            if subset is None or 'pred_score' not in ds:
                if subset is not None:
                    raise KeyError(f"set {ds.get('set_name')!r} has a class subset, which needs "
                                   'pred_score in the outputs')
                super().process(data_batch, [ds])
                continue
            score = torch.as_tensor(ds['pred_score']).detach().float().cpu().reshape(-1)
            pred = int(mask_scores(score, subset).argmax())
            gt = int(np.asarray(torch.as_tensor(ds['gt_label']).cpu()).reshape(-1)[0])
            self.results.append((ds.get('set_name'), pred, gt))


@METRICS.register_module()
class ClassSubsetAccuracy(Accuracy):
    """mmpretrain's ``Accuracy`` computed on the scores masked to a class subset.

    Args:
        class_subset (Sequence[int] | str, optional): the class indices that count (or a file
            with one per line). ``None``: ``dataset_meta['class_subset']`` (set by
            :class:`~mmdigrap.datasets.ImageNetVariant`), and no masking if that is absent too.
        **kwargs: as mmpretrain's ``Accuracy`` (``topk``, ``thrs``, ...).
    """

    def __init__(self, class_subset: Union[Sequence[int], str, None] = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(class_subset, str):
            with open(class_subset) as f:
                class_subset = [int(x) for x in f.read().split()]
        self.class_subset = None if class_subset is None else [int(i) for i in class_subset]

    def process(self, data_batch, data_samples: Sequence[dict]):
        subset = self.class_subset
        if subset is None:
            subset = (self.dataset_meta or {}).get('class_subset')
        for ds in data_samples:
            if subset is None or 'pred_score' not in ds:
                super().process(data_batch, [ds])
                continue
            self.results.append(dict(pred_score=mask_scores(ds['pred_score'].cpu(), subset),
                                     gt_label=ds['gt_label'].cpu()))
