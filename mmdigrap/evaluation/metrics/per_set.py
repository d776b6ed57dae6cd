"""Any metric, run separately on every named set of an ID/OOD test run.

:class:`PerSetMetric` is registered in mmengine's root ``METRICS``, so mmpretrain / mmdet /
mmseg configs all find it: it runs ``VQAAcc``, ``IoUMetric``, ... on each set of an
:class:`~mmdigrap.datasets.IDOODConcatDataset` and adds group means (e.g. near-OOD / far-OOD).
"""
import copy
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS as MMENGINE_METRICS

__all__ = ['PerSetMetric']


@MMENGINE_METRICS.register_module()
class PerSetMetric(BaseMetric):
    """Run one metric separately on every named set of an ``IDOODConcatDataset``.

    The set of a sample is its ``set_name`` metainfo (stamped by ``IDOODConcatDataset``);
    samples without one count as ``id_set`` (or ``'all'``). One instance of ``metric`` is
    built per set (with the current default scope, so ``VQAAcc``, mmseg's ``IoUMetric``, ...
    all work) and its ``compute_metrics`` runs on that set's results only.

    Returned keys (after the prefix, by default the inner metric's, e.g. ``VQA/``):
    ``<set>/<key>`` for every set and every key of the inner metric; ``<group>/<key>`` =
    unweighted mean over the sets of each group in ``groups``; and, when the ID set was
    evaluated, ``ood_mean/<key>`` = unweighted mean over all other sets.

    Args:
        metric: config of the inner metric, e.g. ``dict(type='VQAAcc')``.
        sets: set order for the output (others follow in order of appearance).
        id_set: name of the in-distribution set (default: ``dataset_meta['id_set']``).
        groups: ``{group: [set names]}``, e.g. ``dict(near_ood=[...], far_ood=[...])``.
        collect_device, prefix: as mmengine's ``BaseMetric``.
    """

    def __init__(self, metric: dict, sets: Optional[Sequence[str]] = None,
                 id_set: Optional[str] = None,
                 groups: Optional[Mapping[str, Sequence[str]]] = None,
                 collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        if not isinstance(metric, dict) or 'type' not in metric:
            raise TypeError(f'PerSetMetric: metric must be a config dict with a type, got '
                            f'{metric!r}')
        if prefix is None:  # the inner metric's prefix: 'VQA/vizwiz/acc', 'accuracy/a/top1'
            with MMENGINE_METRICS.switch_scope_and_registry(None) as registry:
                inner_cls = registry.get(metric['type'])
            prefix = getattr(inner_cls, 'default_prefix', None) or 'per_set'
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metric_cfg = dict(metric)
        self.sets = list(sets or [])
        self.id_set = id_set
        self.groups = {str(g): list(v) for g, v in (groups or {}).items()}
        self._inner: Dict[str, BaseMetric] = {}

    def _id_name(self) -> str:
        if self.id_set is not None:
            return self.id_set
        return (self.dataset_meta or {}).get('id_set') or 'all'

    def _metric(self, name: str) -> BaseMetric:
        if name not in self._inner:
            m = MMENGINE_METRICS.build(copy.deepcopy(self.metric_cfg))
            if self.dataset_meta is not None:
                m.dataset_meta = self.dataset_meta
            self._inner[name] = m
        return self._inner[name]

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        by_set: 'OrderedDict[str, list]' = OrderedDict()
        for ds in data_samples:
            name = ds.get('set_name') or self._id_name()
            by_set.setdefault(name, []).append(ds)
        for name, samples in by_set.items():
            m = self._metric(name)
            n0 = len(m.results)
            m.process(data_batch, samples)
            self.results.extend((name, r) for r in m.results[n0:])
            del m.results[n0:]

    def compute_metrics(self, results: list) -> Dict[str, float]:
        per_set: 'OrderedDict[str, list]' = OrderedDict((s, []) for s in self.sets)
        for name, r in results:
            per_set.setdefault(name, []).append(r)
        out: Dict[str, float] = OrderedDict()
        values: Dict[str, Dict[str, float]] = {}
        for name, rs in per_set.items():
            if not rs:
                continue
            res = self._metric(name).compute_metrics(rs)
            values[name] = {k: v for k, v in res.items() if _is_number(v)}
            for k, v in res.items():
                out[f'{name}/{k}'] = v
        for group, names in self.groups.items():
            out.update(_mean_over(group, [values[n] for n in names if n in values]))
        id_name = self._id_name()
        ood = [v for n, v in values.items() if n != id_name]
        if id_name in values and ood:
            out.update(_mean_over('ood_mean', ood))
        return out


def _is_number(v) -> bool:
    if isinstance(v, (int, float, np.floating, np.integer)):
        return True
    return isinstance(v, torch.Tensor) and v.numel() == 1


def _mean_over(prefix: str, dicts: List[Dict[str, float]]) -> Dict[str, float]:
    if not dicts:
        return {}
    keys = [k for k in dicts[0] if all(k in d for d in dicts)]
    return {f'{prefix}/{k}': float(np.mean([float(d[k]) for d in dicts])) for k in keys}
