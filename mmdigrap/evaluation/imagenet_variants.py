"""ImageNet + its OOD variants in one run, the CLIP zero-shot head, and per-set metrics.

Everything the CLIP-on-ImageNet setting (``configs/clip_imagenet/``) needs beyond mmpretrain:

* :class:`ImageNetVariant` (mmpretrain ``DATASETS``): ImageNet-V2 / -A / -R / -Sketch read from
  their release folders, with labels in the 1000-way ImageNet index space. IN-A and IN-R have
  200 class folders; the dataset's ``metainfo['class_subset']`` lists the 1000-way indices
  present, so the 1000-way logits can be masked to them (the standard IN-A / IN-R protocol).
* :class:`ClassSubsetIDOODDataset` (``DATASETS``): ``IDOODConcatDataset`` whose ``metainfo``
  also carries ``class_subsets = {set_name: indices or None}``.
* :class:`ClassSubsetIDOODAccuracy` (``METRICS``): ``IDOODAccuracy`` (per-set, ID, mean OOD)
  that masks each sample's scores to its set's class subset before the argmax.
* :class:`ClassSubsetAccuracy` (``METRICS``): mmpretrain's ``Accuracy`` with the same masking,
  for a single test set (``class_subset`` given or taken from the dataset's metainfo).
* :class:`CLIPClsHead` (``MODELS``): the CLIP image head as a classifier head:
  ``fc(normalize(x @ proj))``. ``proj`` is CLIP's visual projection and ``fc`` is the
  zero-shot head (text embeddings x logit scale) written by ``tools/clip_zeroshot_head.py``.
* :class:`PerSetMetric` (mmengine's root ``METRICS``, so mmpretrain / mmdet / mmseg configs all
  find it): runs any metric (``VQAAcc``, ``IoUMetric``, ...) separately on each named set of an
  ``IDOODConcatDataset`` and adds group means (e.g. near-OOD / far-OOD).
"""
import copy
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmpretrain.datasets import BaseDataset
from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
from mmpretrain.evaluation import Accuracy
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import DATASETS, METRICS, MODELS
from torch import nn

from ..datasets.checks import require_data_root
from .id_ood import IDOODAccuracy, IDOODConcatDataset

__all__ = ['load_wnids', 'ImageNetVariant', 'ClassSubsetIDOODDataset',
           'ClassSubsetIDOODAccuracy', 'ClassSubsetAccuracy', 'CLIPClsHead', 'PerSetMetric',
           'mask_scores']

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')

_HINTS = {
    'wnid': 'Expected layout: <data_root>/<wnid>/<image> (ImageNet-A / -R: 200 class folders; '
            'ImageNet-Sketch: 1000).',
    'index': 'Expected layout: <data_root>/<0..999>/<image> (ImageNet-V2 release '
             'imagenetv2-matched-frequency-format-val).',
}


def load_wnids(source: Union[str, Sequence[str]]) -> List[str]:
    """The 1000 ImageNet WordNet ids in label order (label i = ``wnids[i]``).

    Args:
        source: a list of wnids; a text file with one wnid per line (the first token of
            each line is used, so ``synset_words.txt``-style lines work); or a folder whose
            sub-folders are the 1000 wnids (e.g. ``data/imagenet/train`` or the ImageNet-Sketch
            release folder), sorted, which is the standard ImageNet label order.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: not 1000 unique wnids.
    """
    if isinstance(source, (list, tuple)):
        wnids = [str(w) for w in source]
    elif isinstance(source, str) and osp.isdir(source):
        wnids = sorted(d for d in os.listdir(source)
                       if d.startswith('n') and osp.isdir(osp.join(source, d)))
    elif isinstance(source, str) and osp.isfile(source):
        with open(source) as f:
            wnids = [line.split()[0] for line in f if line.strip()]
    else:
        require_data_root(
            str(source), 'The 1000 ImageNet wnids give the label order of ImageNet-A/-R/-Sketch: '
            "set `wnids=` to the ImageNet train folder (data/imagenet/train, 1000 wnid "
            'sub-folders), the ImageNet-Sketch folder, or a text file with one wnid per line.')
        raise AssertionError('unreachable')  # pragma: no cover
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise ValueError(f'expected the 1000 unique ImageNet wnids from {source!r}, got '
                         f'{len(wnids)} ({len(set(wnids))} unique)')
    return wnids


@DATASETS.register_module()
class ImageNetVariant(BaseDataset):
    """An ImageNet OOD test set (V2, A, R, Sketch, ...) with 1000-way ImageNet labels.

    Args:
        data_root: the release folder of the variant.
        layout: ``'wnid'`` (class folders named by WordNet id: ImageNet-A, -R, -Sketch) or
            ``'index'`` (class folders named ``0``..``999``: ImageNet-V2).
        wnids: the 1000 wnids in label order, for ``layout='wnid'`` (see :func:`load_wnids`);
            default ``'data/imagenet/train'``. Ignored for ``layout='index'``.
        mask_to_present: put ``class_subset`` (the sorted 1000-way indices that have a folder)
            in ``metainfo`` when fewer than 1000 classes are present, so
            :class:`ClassSubsetIDOODAccuracy` masks the logits to them. Set it for
            ImageNet-A and -R (200 classes each); leave it False for V2 / Sketch, which are
            scored on all 1000 classes.
        name: a name for messages (e.g. ``'imagenet-a'``).
        **kwargs: passed to mmpretrain's ``BaseDataset`` (``pipeline``, ``test_mode``,
            ``indices``...). ``classes`` defaults to mmpretrain's ``IMAGENET_CATEGORIES`` so that
            the label space matches mmpretrain's ``ImageNet``.

    Raises:
        FileNotFoundError: ``data_root`` (or the ``wnids`` source) is missing; the message
            names the folder and the layout expected.
        ValueError: an unknown class folder, or no image at all.
    """

    def __init__(self, data_root: str, layout: str = 'wnid',
                 wnids: Union[str, Sequence[str]] = 'data/imagenet/train',
                 mask_to_present: bool = False, name: Optional[str] = None, **kwargs):
        if layout not in _HINTS:
            raise ValueError(f"layout must be 'wnid' or 'index', got {layout!r}")
        self.layout = layout
        self.wnids_source = wnids
        self.mask_to_present = mask_to_present
        self.name = name or osp.basename(osp.normpath(data_root))
        kwargs.setdefault('classes', list(IMAGENET_CATEGORIES))
        kwargs.setdefault('test_mode', True)
        super().__init__(ann_file='', data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = require_data_root(self.data_root, f'{self.name}: {_HINTS[self.layout]}')
        folders = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
        if self.layout == 'index':
            to_label = {}
            for d in folders:
                if not d.isdigit() or not 0 <= int(d) < 1000:
                    raise ValueError(f'{self.name}: class folder {d!r} in {root} is not 0..999 '
                                     f'({_HINTS["index"]})')
                to_label[d] = int(d)
        else:
            index = {w: i for i, w in enumerate(load_wnids(self.wnids_source))}
            unknown = [d for d in folders if d not in index]
            if unknown:
                raise ValueError(f'{self.name}: class folders {unknown[:5]} in {root} are not '
                                 f'ImageNet wnids ({_HINTS["wnid"]})')
            to_label = {d: index[d] for d in folders}
        data_list = []
        for d in folders:
            folder = osp.join(root, d)
            for fname in sorted(os.listdir(folder)):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    data_list.append(dict(img_path=osp.join(folder, fname),
                                          gt_label=to_label[d]))
        if not data_list:
            raise ValueError(f'{self.name}: no image found under {root} ({_HINTS[self.layout]})')
        present = sorted(set(to_label.values()))
        self._class_subset = (present if self.mask_to_present and len(present) < 1000 else None)
        return data_list

    def full_init(self):
        super().full_init()
        self._metainfo['class_subset'] = getattr(self, '_class_subset', None)

    @property
    def class_subset(self) -> Optional[List[int]]:
        """Sorted 1000-way indices present (None: all classes, no masking)."""
        if not self._fully_initialized:
            self.full_init()
        return self._class_subset


@DATASETS.register_module()
class ClassSubsetIDOODDataset(IDOODConcatDataset):
    """``IDOODConcatDataset`` whose ``metainfo['class_subsets']`` maps each set name to its
    sub-dataset's ``metainfo['class_subset']`` (None for sets scored on all classes).

    Use it with :class:`ClassSubsetIDOODAccuracy` for ImageNet + V2/A/R/Sketch.
    """

    @property
    def metainfo(self) -> dict:
        meta = super().metainfo
        meta['class_subsets'] = {
            name: (list(d.metainfo['class_subset'])
                   if d.metainfo.get('class_subset') is not None else None)
            for name, d in zip(self.set_names, self.datasets)}
        return meta


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
            :class:`ClassSubsetIDOODDataset` from :class:`ImageNetVariant`).
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
            :class:`ImageNetVariant`), and no masking if that is absent too.
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


@MODELS.register_module()
class CLIPClsHead(ClsHead):
    """CLIP's image head as a classifier: ``logits = fc(normalize(x @ proj))``.

    With ``proj`` = CLIP's visual projection (``visual_proj.proj`` in mmpretrain's converted
    checkpoints) and ``fc.weight`` = logit_scale x the L2-normalised class text embeddings
    (``tools/clip_zeroshot_head.py``), the untrained classifier *is* CLIP zero-shot
    (the WiSE-FT / FLYP / FTP / TPGM starting point for CLIP ViT-B/16 on ImageNet).

    Args:
        num_classes: number of classes.
        in_channels: backbone feature size (768 for ViT-B).
        proj_channels: CLIP embedding size (512 for ViT-B/16); ``None`` drops the projection.
        normalize: L2-normalise the projected feature (CLIP does).
        bias: give ``fc`` a bias (zero in the zero-shot head).
        **kwargs: ``loss``, ``topk``, ``cal_acc``, ``init_cfg`` of mmpretrain's ``ClsHead``.

    Parameters (checkpoint keys under ``head.``): ``proj`` (in_channels x proj_channels),
    ``fc.weight`` (num_classes x proj_channels), ``fc.bias``.
    """

    def __init__(self, num_classes: int, in_channels: int = 768,
                 proj_channels: Optional[int] = 512, normalize: bool = True, bias: bool = True,
                 init_cfg: Optional[dict] = dict(type='Normal', layer='Linear', std=0.01),
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be a positive integer')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.normalize = normalize
        if proj_channels:
            self.proj = nn.Parameter(in_channels ** -0.5 * torch.randn(in_channels, proj_channels))
        else:
            self.register_parameter('proj', None)
        self.fc = nn.Linear(proj_channels or in_channels, num_classes, bias=bias)

    def pre_logits(self, feats) -> torch.Tensor:
        x = feats[-1] if isinstance(feats, (list, tuple)) else feats
        if isinstance(x, (list, tuple)):  # ViT out_type='cls_token' with extra outputs
            x = x[-1]
        if self.proj is not None:
            x = x @ self.proj
        if self.normalize:
            x = F.normalize(x, dim=-1)
        return x

    def forward(self, feats) -> torch.Tensor:
        return self.fc(self.pre_logits(feats))


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
