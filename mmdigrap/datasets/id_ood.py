"""ID + OOD test sets in ONE dataset: every sample carries the name of its set.

* :class:`IDOODConcatDataset` (mmpretrain ``DATASETS``): concatenates named test sets and
  stamps each sample's ``data_samples`` metainfo with ``set_name`` *after* the pipeline, so no
  ``PackInputs(meta_keys=...)`` change is needed. Its ``metainfo`` carries ``id_set`` and
  ``idood_sets`` (name, group, severity, size of every set), which the runner hands to the
  metric (:class:`~mmdigrap.evaluation.IDOODAccuracy`) as ``dataset_meta``.
* :class:`ClassSubsetIDOODDataset` (``DATASETS``): the same, whose ``metainfo`` also carries
  ``class_subsets = {set_name: indices or None}`` (ImageNet-A / -R are scored on their 200
  classes; see :class:`~mmdigrap.evaluation.ClassSubsetIDOODAccuracy`).

Config example (the test split + two corruptions at severities 3 and 5)::

    test_dataloader = dict(
        batch_size=64, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='IDOODConcatDataset', id_set='id', datasets=dict(
            id=dict(type='FashionMNISTIdx', split='test', subset=1000, pipeline=test_pipeline),
            gaussian_noise_s3=dict(type='FashionMNISTCorrupted', corruption='gaussian_noise',
                                   severity=3, subset=1000, pipeline=test_pipeline),
            ...)))
    test_evaluator = dict(type='IDOODAccuracy')

(``FashionMNISTIDOOD`` builds exactly this from a list of corruptions and severities.)
"""
import logging
from typing import Any, List, Mapping, Optional, Sequence, Union

from mmengine.dataset import ConcatDataset
from mmengine.dataset.base_dataset import force_full_init
from mmengine.logging import print_log
from mmpretrain.registry import DATASETS

from ..utils.set_names import parse_set_name

__all__ = ['IDOODConcatDataset', 'ClassSubsetIDOODDataset']


@DATASETS.register_module()
class IDOODConcatDataset(ConcatDataset):
    """Concatenation of named test sets; every sample carries its set's name.

    Args:
        datasets (dict | Sequence): ``{set_name: dataset or config}`` (insertion order is kept),
            or a sequence of datasets/configs with ``set_names`` (or a ``set_name`` attribute on
            each built dataset). Configs are built with mmpretrain's ``DATASETS``.
        set_names (Sequence[str], optional): names for a sequence ``datasets``.
        id_set (str, optional): name of the in-distribution set; must be one of the names.
            ``None``: every set is OOD.
        groups (dict, optional): ``{set_name: group}`` for the per-group means. By default
            the group is the dataset's ``corruption`` attribute, else the ``<group>_s<k>``
            pattern of the name, else the name itself.
        lazy_init (bool): as in mmengine's ``ConcatDataset``.

    Only the ``classes`` of the sets must agree (the label indices are shared); other
    metainfo keys may differ. ``metainfo`` is the first set's plus ``id_set`` and
    ``idood_sets`` (a list of ``dict(name, group, severity, size)``; ``size`` is ``None``
    until the dataset is fully initialised).

    ``dataset[i]`` is the sub-dataset's output with ``set_name`` added to its
    ``data_samples`` metainfo (or, for a pipeline that returns a plain dict without
    ``data_samples``, as a ``set_name`` key).

    Raises:
        ValueError: duplicate / missing names, ``id_set`` not among the names, or sets whose
            ``classes`` differ.
    """

    def __init__(self,
                 datasets: Union[Mapping[str, Any], Sequence[Any]],
                 set_names: Optional[Sequence[str]] = None,
                 id_set: Optional[str] = 'id',
                 groups: Optional[Mapping[str, str]] = None,
                 lazy_init: bool = False):
        if isinstance(datasets, Mapping):
            if set_names is not None:
                raise ValueError('give set_names only with a sequence of datasets')
            set_names, datasets = list(datasets.keys()), list(datasets.values())
        datasets = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        if set_names is None:
            set_names = [getattr(d, 'set_name', None) for d in datasets]
            if None in set_names:
                raise ValueError('IDOODConcatDataset needs a name per set: pass datasets as '
                                 'a dict {name: dataset} or give set_names')
        set_names = [str(n) for n in set_names]
        if len(set_names) != len(datasets):
            raise ValueError(f'{len(set_names)} set_names for {len(datasets)} datasets')
        if len(set(set_names)) != len(set_names):
            raise ValueError(f'duplicate set names in {set_names}')
        if id_set is not None and id_set not in set_names:
            raise ValueError(f'id_set={id_set!r} is not one of the sets {set_names}')
        classes = [d.metainfo.get('classes') for d in datasets]
        for name, c in zip(set_names, classes):
            if c is not None and classes[0] is not None and tuple(c) != tuple(classes[0]):
                raise ValueError(f'set {name!r} has classes {c}, but set {set_names[0]!r} has '
                                 f'{classes[0]}; ID/OOD sets must share label indices')
        keys = set()
        for d in datasets:
            keys |= set(d.metainfo.keys())
        self.set_names: List[str] = set_names
        self.id_set = id_set
        groups = dict(groups or {})
        self._set_infos = []
        for name, d in zip(set_names, datasets):
            g_guess, s_guess = parse_set_name(name)
            group = groups.get(name, getattr(d, 'corruption', None) or g_guess)
            severity = getattr(d, 'severity', None)
            self._set_infos.append(
                dict(name=name, group=group,
                     severity=severity if severity is not None else s_guess))
        super().__init__(datasets, lazy_init=lazy_init,
                         ignore_keys=sorted(k for k in keys if k != 'classes'))

    @property
    def metainfo(self) -> dict:
        meta = super().metainfo
        sizes = ([len(d) for d in self.datasets] if self._fully_initialized else
                 [None] * len(self.datasets))
        meta['id_set'] = self.id_set
        meta['idood_sets'] = [dict(info, size=n) for info, n in zip(self._set_infos, sizes)]
        return meta

    @force_full_init
    def set_name_of(self, idx: int) -> str:
        """Name of the set that global index ``idx`` falls in."""
        return self.set_names[self._get_ori_dataset_idx(idx)[0]]

    @force_full_init
    def get_data_info(self, idx: int) -> dict:
        dataset_idx, sample_idx = self._get_ori_dataset_idx(idx)
        info = self.datasets[dataset_idx].get_data_info(sample_idx)
        info['set_name'] = self.set_names[dataset_idx]
        return info

    def __getitem__(self, idx):
        if not self._fully_initialized:
            print_log('Please call `full_init` method manually to accelerate the speed.',
                      logger='current', level=logging.WARNING)
            self.full_init()
        dataset_idx, sample_idx = self._get_ori_dataset_idx(idx)
        out = self.datasets[dataset_idx][sample_idx]
        name = self.set_names[dataset_idx]
        if isinstance(out, dict):
            ds = out.get('data_samples')
            if ds is not None and hasattr(ds, 'set_metainfo'):
                ds.set_metainfo(dict(set_name=name))
            else:
                out['set_name'] = name
        return out


@DATASETS.register_module()
class ClassSubsetIDOODDataset(IDOODConcatDataset):
    """``IDOODConcatDataset`` whose ``metainfo['class_subsets']`` maps each set name to its
    sub-dataset's ``metainfo['class_subset']`` (None for sets scored on all classes).

    Use it with :class:`~mmdigrap.evaluation.ClassSubsetIDOODAccuracy` for ImageNet + V2/A/R/Sketch.
    """

    @property
    def metainfo(self) -> dict:
        meta = super().metainfo
        meta['class_subsets'] = {
            name: (list(d.metainfo['class_subset'])
                   if d.metainfo.get('class_subset') is not None else None)
            for name, d in zip(self.set_names, self.datasets)}
        return meta
