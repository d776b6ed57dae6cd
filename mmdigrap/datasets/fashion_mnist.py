"""Fashion-MNIST from the standard idx files, and corrupted copies of its test split.

The real data ships in the Debian package ``dataset-fashion-mnist`` (60,000 train + 10,000
test 28x28 grey images, 10 classes, MIT licence, files in ``/usr/share/datasets/fashion-mnist``).
Nothing here downloads anything.

Registered in mmpretrain's ``DATASETS``:

* :class:`FashionMNISTIdx`: the train, val (a fixed held-out part of the train file) or test
  split, optionally a seeded class-balanced subset.
* :class:`FashionMNISTCorrupted`: the test split with one corruption of
  :mod:`mmdigrap.datasets.corruptions` at one severity, cached once as a ``.npz``.
* :class:`FashionMNISTIDOOD`: ID test set + a grid of corrupted sets in one dataset (an
  :class:`~mmdigrap.datasets.IDOODConcatDataset`) for the ``IDOODAccuracy`` metric.

Samples reach the pipeline as ``dict(img=HxWx3 uint8 (grey repeated on 3 channels), gt_label=
int, orig_idx=index in the idx file, img_shape=(H, W), ori_shape=(H, W), sample_idx=...)``, so
an ImageNet-style pipeline (``ResizeEdge``/``Resize`` then ``PackInputs``) needs no extra transform;
``channels=1`` gives ``HxW`` like mmpretrain's ``MNIST``.
"""
import gzip
import os
import os.path as osp
import zlib
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.datasets.categories import FASHIONMNIST_CATEGORITES
from mmpretrain.registry import DATASETS

from . import corruptions as C
from ._cache import cached_set, sha256_arrays
from .id_ood import IDOODConcatDataset

__all__ = [
    'FashionMNISTIdx', 'FashionMNISTCorrupted', 'FashionMNISTIDOOD', 'IdxFileError', 'read_idx',
    'load_fashion_mnist', 'balanced_subset_indices', 'DEFAULT_DATA_ROOT'
]

#: Where the Debian package ``dataset-fashion-mnist`` puts the files.
DEFAULT_DATA_ROOT = '/usr/share/datasets/fashion-mnist'

#: split -> (images file stem, labels file stem); ``.gz`` or raw files are both accepted.
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
_MAGIC = {'images': 0x00000803, 'labels': 0x00000801}  # uint8 data, 3 dims / 1 dim
_NUM_CLASSES = len(FASHIONMNIST_CATEGORITES)
#: Seed of the fixed held-out validation part of the train file (independent of ``seed``).
VAL_SEED = 20251129

_HOW_TO_GET = (
    'Get the real data with `sudo apt-get install dataset-fashion-mnist` (it installs '
    f'{DEFAULT_DATA_ROOT}), or set `data_root` to a folder holding the four standard files '
    'train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, '
    't10k-labels-idx1-ubyte (each raw or .gz).')


class IdxFileError(ValueError):
    """An idx file exists but is not a valid Fashion-MNIST idx file (bad magic number,
    truncated, wrong size, labels out of range, or images/labels counts that disagree)."""


def _find_idx_file(data_root: str, stem: str) -> str:
    """Path of ``stem.gz`` or ``stem`` in ``data_root``; FileNotFoundError naming both."""
    candidates = [osp.join(data_root, stem + '.gz'), osp.join(data_root, stem)]
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'Fashion-MNIST file {stem}(.gz) not found: tried {candidates[0]} and '
        f'{candidates[1]}. {_HOW_TO_GET}')


def read_idx(path: str, kind: str) -> np.ndarray:
    """Read an idx file of uint8 data (gzip-compressed or raw, detected from the content).

    Args:
        path: the file.
        kind: ``'images'`` (magic 2051, 3 dims) or ``'labels'`` (magic 2049, 1 dim).

    Returns:
        ``(N, H, W)`` uint8 for images, ``(N,)`` uint8 for labels (a writeable array that
        owns its memory).

    Raises:
        FileNotFoundError: the file does not exist.
        IdxFileError: bad gzip stream, wrong magic number, or a size that disagrees with the
            header (truncated or padded file). The message names the file.
    """
    if kind not in _MAGIC:
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    if not osp.isfile(path):
        raise FileNotFoundError(f'Fashion-MNIST file not found: {path}. {_HOW_TO_GET}')
    with open(path, 'rb') as f:
        raw = f.read()
    if raw[:2] == b'\x1f\x8b':
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxFileError(f'{path}: corrupt or truncated gzip stream ({e}). '
                               f'{_HOW_TO_GET}') from e
    ndim = 3 if kind == 'images' else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFileError(f'{path}: only {len(raw)} bytes, shorter than the {header}-byte idx '
                           f'header of a {kind} file. {_HOW_TO_GET}')
    magic = int.from_bytes(raw[:4], 'big')
    if magic != _MAGIC[kind]:
        raise IdxFileError(
            f'{path}: wrong magic number {magic:#010x} (expected {_MAGIC[kind]:#010x} for idx '
            f'{kind}); not a Fashion-MNIST {kind} file. {_HOW_TO_GET}')
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = 'truncated' if len(raw) < expected else 'has trailing bytes'
        raise IdxFileError(
            f'{path}: file {what}: header says shape {dims} ({expected} bytes with the header) '
            f'but the data has {len(raw)} bytes. {_HOW_TO_GET}')
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


_SPLIT_CACHE: 'OrderedDict[tuple, Tuple[np.ndarray, np.ndarray]]' = OrderedDict()


def load_fashion_mnist(data_root: str = DEFAULT_DATA_ROOT,
                       split: str = 'train') -> Tuple[np.ndarray, np.ndarray]:
    """Load one split from the idx files in ``data_root``.

    Returns:
        ``(images, labels)``: ``(N, H, W)`` uint8 (H = W = 28 for the real data) and ``(N,)``
        int64 in ``0..9``. Read-only arrays, memoised per file (path, size, mtime) for the
        last two splits loaded, so building several test sets reads the files once.

    Raises:
        ValueError: unknown split.
        FileNotFoundError: a file is missing (the message says how to get it).
        IdxFileError: a file is corrupt, labels are out of range, or the image and label
            files hold different numbers of items (the message names both files).
    """
    if split not in IDX_FILES:
        raise ValueError(f"split must be one of {list(IDX_FILES)}, got {split!r}")
    img_path, lbl_path = (_find_idx_file(data_root, stem) for stem in IDX_FILES[split])
    key = tuple((osp.realpath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns)
                for p in (img_path, lbl_path))
    if key in _SPLIT_CACHE:
        _SPLIT_CACHE.move_to_end(key)
        return _SPLIT_CACHE[key]
    images = read_idx(img_path, 'images')
    labels = read_idx(lbl_path, 'labels')
    if len(images) != len(labels):
        raise IdxFileError(
            f'count mismatch: {img_path} holds {len(images)} images but {lbl_path} holds '
            f'{len(labels)} labels. {_HOW_TO_GET}')
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise IdxFileError(f'{lbl_path}: label {int(labels.max())} out of range 0..'
                           f'{_NUM_CLASSES - 1}. {_HOW_TO_GET}')
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    _SPLIT_CACHE[key] = (images, labels)
    while len(_SPLIT_CACHE) > 2:
        _SPLIT_CACHE.popitem(last=False)
    return images, labels


def balanced_subset_indices(labels: np.ndarray, subset: Optional[int],
                            seed: int = 0) -> np.ndarray:
    """Indices of a seeded class-balanced subset of ``labels``, sorted ascending.

    Each of the K classes present gets ``subset // K`` items; the ``subset % K`` leftover
    items go to classes picked by the seeded generator. Within a class the items are a seeded
    random choice. ``subset=None`` returns ``arange(len(labels))``. The same ``(labels,
    subset, seed)`` always gives the same indices, so the ID test subset and each corrupted
    copy hold the same source images.

    Raises:
        ValueError: ``subset`` < 1, or a class has fewer items than its share.
    """
    n = len(labels)
    if subset is None:
        return np.arange(n)
    subset = int(subset)
    if subset < 1:
        raise ValueError(f'subset must be a positive int or None, got {subset}')
    if subset >= n:
        if subset > n:
            raise ValueError(f'subset={subset} is larger than the split ({n} items)')
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    k = len(classes)
    share = np.full(k, subset // k)
    share[rng.permutation(k)[:subset % k]] += 1
    chosen = []
    for c, m in zip(classes, share):
        idx = np.flatnonzero(labels == c)
        if m > len(idx):
            raise ValueError(f'subset={subset}: class {c} has {len(idx)} items, fewer than '
                             f'its share {m}')
        chosen.append(rng.permutation(idx)[:m])
    return np.sort(np.concatenate(chosen))


def check_subset(subset) -> Optional[int]:
    """``subset`` as an int, or None.

    Raises:
        ValueError: not an int (a bool or a fractional number included) and not None.
    """
    if subset is not None and (isinstance(subset, bool) or int(subset) != subset):
        raise ValueError(f'subset must be an int or None, got {subset!r}')
    return None if subset is None else int(subset)


class GreyArrayDataset(BaseDataset):
    """Base of the in-memory grey-image datasets (Fashion-MNIST, the digits).

    Subclasses implement :meth:`_images_labels`; every data info is ``dict(img=(H, W) uint8,
    gt_label=int, orig_idx=int)``, and :meth:`prepare_data` adds ``img_shape`` /
    ``ori_shape`` and, with ``channels=3``, repeats the grey image to ``(H, W, 3)``.

    Args:
        channels (int): 1 (``img`` is ``(H, W)``) or 3 (``(H, W, 3)``).
        **kwargs: as in :class:`mmpretrain.datasets.BaseDataset` (no ``ann_file``;
            ``data_prefix`` defaults to ``''``).

    Raises:
        ValueError: ``channels`` not 1 or 3.
    """

    def __init__(self, channels: int = 3, **kwargs):
        if channels not in (1, 3):
            raise ValueError(f'channels must be 1 or 3, got {channels}')
        self.channels = channels
        kwargs.setdefault('data_prefix', '')
        super().__init__(ann_file='', **kwargs)

    def _images_labels(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images (M, H, W) uint8, labels (M,) int64, orig_idx (M,)) of this dataset."""
        raise NotImplementedError

    def load_data_list(self) -> List[dict]:
        images, labels, idx = self._images_labels()
        return [
            dict(img=img, gt_label=int(lbl), orig_idx=int(i))
            for img, lbl, i in zip(images, labels, idx)
        ]

    def prepare_data(self, idx: int):
        data_info = self.get_data_info(idx)
        img = data_info['img']
        if self.channels == 3:
            img = np.repeat(img[:, :, None], 3, axis=2)
        data_info['img'] = img
        data_info['img_shape'] = data_info['ori_shape'] = img.shape[:2]
        return self.pipeline(data_info)


@DATASETS.register_module()
class FashionMNISTIdx(GreyArrayDataset):
    """Fashion-MNIST read from the standard idx files (no download).

    Args:
        data_root (str): folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
            each raw or ``.gz``. Defaults to the Debian package's folder
            ``/usr/share/datasets/fashion-mnist``.
        split (str): ``'train'`` (the 60,000 images of the train file, or 60,000 - ``val_size``
            with ``exclude_val=True``), ``'val'`` (``val_size`` images of the train file,
            a fixed class-balanced choice seeded by :data:`VAL_SEED`), or ``'test'`` (10,000).
        subset (int, optional): keep a seeded class-balanced subset of this many images of the
            split (see :func:`balanced_subset_indices`); ``None`` keeps the whole split.
        seed (int): seed of the subset choice.
        val_size (int): size of the ``'val'`` split; 5000 by default (500 per class).
        exclude_val (bool): with ``split='train'``, leave out the ``'val'`` images, so a
            train subset and the val split never share an image.
        channels (int): 3 (default) gives ``img`` as ``(H, W, 3)`` uint8 with the grey value
            repeated, ready for an ImageNet backbone; 1 gives ``(H, W)`` uint8.
        pipeline, test_mode, lazy_init, metainfo, indices, serialize_data, ...: as in
            :class:`mmpretrain.datasets.BaseDataset`.

    Each data info holds ``img``, ``gt_label`` (int, 0..9), ``orig_idx`` (index in the idx
    file), ``img_shape`` and ``ori_shape`` (``(28, 28)``). ``CLASSES`` are the 10
    Fashion-MNIST names.

    Raises:
        FileNotFoundError: an idx file is missing (message: which file, how to get it).
        IdxFileError: an idx file is corrupt (message names the file).
    """
    METAINFO = {'classes': FASHIONMNIST_CATEGORITES}

    def __init__(self,
                 data_root: str = DEFAULT_DATA_ROOT,
                 split: str = 'train',
                 subset: Optional[int] = None,
                 seed: int = 0,
                 channels: int = 3,
                 val_size: int = 5000,
                 exclude_val: bool = False,
                 **kwargs):
        if split not in ('train', 'val', 'test'):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.split = split
        self.subset = check_subset(subset)
        self.seed = int(seed)
        self.val_size = int(val_size)
        self.exclude_val = bool(exclude_val)
        super().__init__(channels=channels, data_root=data_root, **kwargs)

    def _source(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(all images, all labels of the idx file, indices of the kept images)."""
        images, labels = load_fashion_mnist(self.data_root,
                                            'test' if self.split == 'test' else 'train')
        pool = np.arange(len(labels))
        if self.split == 'val' or (self.split == 'train' and self.exclude_val):
            val = balanced_subset_indices(labels, self.val_size, VAL_SEED)
            pool = val if self.split == 'val' else np.setdiff1d(pool, val)
        return images, labels, pool[balanced_subset_indices(labels[pool], self.subset,
                                                            self.seed)]

    def _images_labels(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        images, labels, idx = self._source()
        return images[idx], labels[idx], idx

    def extra_repr(self) -> List[str]:
        return [
            f'Data root: \t{self.data_root}',
            f'Split: \t{self.split}' + (' (without val)' if self.exclude_val else ''),
            f'Subset: \t{self.subset} (seed {self.seed})'
        ]


@DATASETS.register_module()
class FashionMNISTCorrupted(FashionMNISTIdx):
    """A Fashion-MNIST split (the real TEST split by default) with one corruption applied.

    The corrupted images are computed once and cached in ``cache_dir`` as
    ``<split>_<corruption>_s<severity>_<all|n<subset>>_seed<seed>.npz`` holding ``images``
    (uint8, ``(M, 28, 28)``), ``labels`` (int64), ``orig_idx`` (index in the idx file) and
    ``meta`` (a JSON string: corruption, severity, its parameter, split, subset, seed,
    :data:`~mmdigrap.datasets.corruptions.CORRUPTIONS_VERSION`, the sha256 of the clean
    source split and of the corrupted images), plus a human-readable ``.json`` copy of
    ``meta`` next to it. A later run reuses the file when its meta matches (same parameters,
    same source checksum, images intact) and rebuilds it otherwise. Writes are atomic, so
    concurrent builders cannot leave a half-written cache.

    The subset is chosen exactly as in :class:`FashionMNISTIdx` with the same ``subset`` and
    ``seed``, so the ID set and every corrupted set hold the same source images.

    Args:
        data_root (str): folder of the idx files (the clean source is always read, to check
            its checksum against the cache).
        corruption (str): a name in :data:`~mmdigrap.datasets.corruptions.CORRUPTIONS`
            (``gaussian_noise``, ``shot_noise``, ``impulse_noise``, ``gaussian_blur``,
            ``pixelate``, ``contrast``, ``rotate``, ``invert``).
        severity (int): 1..5.
        cache_dir (str): cache folder, created if needed (relative paths are relative to the
            current directory).
        subset (int, optional), seed (int): as in :class:`FashionMNISTIdx`; ``seed`` also
            seeds the corruption's random draws.
        split (str): defaults to ``'test'``.
        **kwargs: as in :class:`FashionMNISTIdx`.

    Attributes:
        set_name (str): ``'<corruption>_s<severity>'``, used by ``IDOODConcatDataset``.
        cache_file (str), cache_hit (bool): the cache path and whether the last load reused it.
    """

    def __init__(self,
                 data_root: str = DEFAULT_DATA_ROOT,
                 corruption: str = 'gaussian_noise',
                 severity: int = 3,
                 cache_dir: str = 'data/fashion_mnist_c',
                 subset: Optional[int] = None,
                 seed: int = 0,
                 split: str = 'test',
                 **kwargs):
        if corruption not in C.CORRUPTIONS:
            raise KeyError(f'unknown corruption {corruption!r}; known: {list(C.CORRUPTIONS)}')
        if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
            raise ValueError(f'severity must be an int in 1..5, got {severity!r}')
        self.corruption = corruption
        self.severity = int(severity)
        self.cache_dir = cache_dir
        self.set_name = f'{corruption}_s{self.severity}'
        self.cache_hit = False
        super().__init__(
            data_root=data_root, split=split, subset=subset, seed=seed, **kwargs)

    @property
    def cache_file(self) -> str:
        n = 'all' if self.subset is None else f'n{self.subset}'
        split = self.split
        if split == 'val' or (split == 'train' and self.exclude_val):
            split += f'{self.val_size}' + ('x' if split == 'train' else '')
        return osp.join(self.cache_dir, f'{split}_{self.set_name}_{n}_seed{self.seed}.npz')

    def _expected_meta(self, source_sha: str) -> dict:
        return dict(
            format='mmdigrap.fashion_mnist_corrupted',
            corruptions_version=C.CORRUPTIONS_VERSION,
            corruption=self.corruption,
            severity=self.severity,
            param=C.SEVERITY_TABLE[self.corruption][self.severity - 1],
            split=self.split,
            val_size=self.val_size if self.split != 'test' else None,
            exclude_val=self.exclude_val if self.split == 'train' else None,
            subset=self.subset,
            seed=self.seed,
            source_sha256=source_sha)

    def _images_labels(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        all_images, all_labels, idx = self._source()
        expected = self._expected_meta(sha256_arrays(all_images, all_labels))
        out, self.cache_hit = cached_set(
            self.cache_file, expected,
            lambda: (C.corrupt(all_images[idx], self.corruption, self.severity, self.seed),
                     all_labels[idx], idx),
            extra_meta=dict(numpy_version=np.__version__))
        return out

    def extra_repr(self) -> List[str]:
        return super().extra_repr() + [
            f'Corruption: \t{self.corruption} severity {self.severity}',
            f'Cache: \t{self.cache_file}'
        ]


#: The corruptions of the default ID/OOD benchmark.
DEFAULT_CORRUPTIONS = ('gaussian_noise', 'gaussian_blur', 'contrast', 'rotate', 'invert')


@DATASETS.register_module()
class FashionMNISTIDOOD(IDOODConcatDataset):
    """Fashion-MNIST ID test set + corrupted copies, as one dataset for ``IDOODAccuracy``.

    Builds ``{id_set: FashionMNISTIdx(split=split, ...)}`` followed by one
    :class:`FashionMNISTCorrupted` per ``(corruption, severity)``, named
    ``<corruption>_s<severity>``, in the order corruptions x severities. Length is
    ``(1 + len(corruptions) * len(severities)) * M`` with ``M = subset or 10000``.

    Args:
        data_root (str): folder of the idx files.
        corruptions (Sequence[str]): corruption names (see
            :mod:`mmdigrap.datasets.corruptions`).
        severities (Sequence[int]): severities in 1..5.
        subset (int, optional), seed (int): class-balanced subset of the test split, the same
            images in every set; ``seed`` also seeds the corruptions.
        cache_dir (str): cache of the corrupted sets.
        pipeline (Sequence): the test pipeline, shared by all sets.
        id_set (str): name of the clean set. Defaults to ``'id'``.
        split (str): source split, ``'test'`` by default.
        lazy_init (bool): as in mmengine's ``ConcatDataset``.
        **kwargs: passed to every sub-dataset (e.g. ``channels``); ``test_mode`` defaults to
            True and ``serialize_data`` to False (faster to build, the sets are small).
    """

    def __init__(self,
                 data_root: str = DEFAULT_DATA_ROOT,
                 corruptions: Sequence[str] = DEFAULT_CORRUPTIONS,
                 severities: Sequence[int] = (1, 2, 3, 4, 5),
                 subset: Optional[int] = None,
                 seed: int = 0,
                 cache_dir: str = 'data/fashion_mnist_c',
                 pipeline: Sequence = (),
                 id_set: str = 'id',
                 split: str = 'test',
                 lazy_init: bool = False,
                 **kwargs):
        if isinstance(corruptions, str):
            corruptions = [corruptions]
        if isinstance(severities, int):
            severities = [severities]
        kwargs.setdefault('test_mode', True)
        # mmengine's serialisation runs gc.collect() per set (~0.4 s each with torch loaded);
        # the sets are small, so keep the plain lists.
        kwargs.setdefault('serialize_data', False)
        common = dict(data_root=data_root, subset=subset, seed=seed, split=split,
                      pipeline=pipeline, lazy_init=lazy_init, **kwargs)
        datasets: Dict[str, BaseDataset] = {id_set: FashionMNISTIdx(**common)}
        for c in corruptions:
            for s in severities:
                ds = FashionMNISTCorrupted(
                    corruption=c, severity=s, cache_dir=cache_dir, **common)
                if ds.set_name in datasets:
                    raise ValueError(f'duplicate set {ds.set_name}')
                datasets[ds.set_name] = ds
        super().__init__(datasets=datasets, id_set=id_set, lazy_init=lazy_init)
