"""ImageNet's OOD test sets (V2, A, R, Sketch) with labels in the 1000-way ImageNet space.

* :class:`ImageNetVariant` (mmpretrain ``DATASETS``): a variant read from its release folder.
  IN-A and IN-R have 200 class folders; with ``mask_to_present=True`` the dataset's
  ``metainfo['class_subset']`` lists the 1000-way indices present, so the 1000-way logits can
  be masked to them (the standard IN-A / IN-R protocol, done by
  :class:`~mmdigrap.evaluation.ClassSubsetIDOODAccuracy`).
* :func:`load_wnids`: the 1000 WordNet ids in ImageNet label order.

Combine them with :class:`~mmdigrap.datasets.ClassSubsetIDOODDataset` for ImageNet + its
variants in one test run (``configs/clip_imagenet/``).
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

from mmpretrain.datasets import BaseDataset
from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
from mmpretrain.registry import DATASETS

from .data_checks import require_data_root

__all__ = ['IMG_EXTENSIONS', 'load_wnids', 'ImageNetVariant']

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
            :class:`~mmdigrap.evaluation.ClassSubsetIDOODAccuracy` masks the logits to them.
            Set it for ImageNet-A and -R (200 classes each); leave it False for V2 / Sketch,
            which are scored on all 1000 classes.
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
