"""Real handwritten digits that ship in packages: the UCI digits (ID) and the OpenCV digits (OOD).

* **UCI digits** (ID): scikit-learn's ``load_digits()``, 1797 8x8 images with 17 grey levels
  (0-16), 10 classes (the UCI "optdigits" test set, 43 writers; BSD via scikit-learn, UCI CC
  BY 4.0). :func:`uci_to_mnist` puts them in the MNIST format: grey levels scaled to 0-255,
  the 8x8 image resized to 20x20 (bilinear, ``cv2.INTER_LINEAR``) and placed in the centre of
  a black 28x28 canvas (4-pixel border), like an MNIST digit in its 20x20 box.
  A FIXED stratified split (:func:`uci_split_indices`, seed :data:`SPLIT_SEED`, independent
  of the run's seed): train 1000, val 300, test 497 images (per class about 55.6% / 16.7% /
  27.7%); the three are disjoint and cover all 1797.
* **OpenCV digits** (OOD): ``digits.png`` of OpenCV's samples, 5000 20x20 MNIST digits (500
  per class, labels in row blocks: ``np.repeat(arange(10), 500)``), placed in the centre of a
  28x28 canvas. A natural writer/scanner shift back to the pre-training domain of the MNIST
  CNN (the file is an MNIST subset). It ships in Debian's ``opencv-doc``
  (``/usr/share/doc/opencv-doc/examples/data/digits.png``); ``tools/install.sh`` extracts
  only that file from the ``.deb`` to ``~/.cache/mmdigrap/opencv-doc/digits.png`` (see
  :func:`find_opencv_digits`). Corrupted copies (:mod:`.corruptions`, i.e. the
  ``imagecorruptions`` library, plus the hand-written rotation) are cached under
  ``cache_dir`` (default ``data/opencv_digits_c``) as ``.npz`` files with a JSON sidecar.

Registered in mmpretrain's ``DATASETS``: :class:`UCIDigits` and :class:`OpenCVDigits`.
Samples reach the pipeline as ``dict(img=(28, 28) uint8 (or (28, 28, 3) with channels=3),
gt_label=int, orig_idx=index in the source array, img_shape=(28, 28), ori_shape=(28, 28))``,
so ``[dict(type='PackInputs')]`` gives the ``(1, 28, 28)`` uint8 input the MNIST CNN takes
(its data preprocessor normalises). Nothing here downloads anything.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmpretrain.registry import DATASETS

from . import corruptions as C
from ._cache import cached_set, sha256_arrays
from .fashion_mnist import GreyArrayDataset, balanced_subset_indices, check_subset

__all__ = [
    'UCIDigits', 'OpenCVDigits', 'DIGIT_CLASSES', 'SPLIT_SIZES', 'SPLIT_SEED',
    'OPENCV_DIGITS_CANDIDATES', 'load_uci_digits', 'uci_to_mnist', 'uci_split_indices',
    'find_opencv_digits', 'load_opencv_digits', 'place_in_canvas'
]

DIGIT_CLASSES = tuple(str(i) for i in range(10))
#: The fixed ID split sizes (train + val + test = 1797).
SPLIT_SIZES = dict(train=1000, val=300, test=497)
#: Seed of the fixed stratified ID split (not the run's seed).
SPLIT_SEED = 20251201
#: Environment variable naming ``digits.png`` explicitly.
OPENCV_DIGITS_ENV = 'MMDIGRAP_OPENCV_DIGITS'
#: Where ``digits.png`` is looked for, in order (after ``$MMDIGRAP_OPENCV_DIGITS``).
OPENCV_DIGITS_CANDIDATES = (
    '/usr/share/doc/opencv-doc/examples/data/digits.png',  # apt-get install opencv-doc
    '~/.cache/mmdigrap/opencv-doc/digits.png',  # tools/install.sh (only this file)
)
_HOW_TO_GET = (
    'Run `bash tools/install.sh` (it extracts digits.png from Debian\'s opencv-doc .deb into '
    '~/.cache/mmdigrap/opencv-doc/), or `apt-get install opencv-doc`, or set '
    f'${OPENCV_DIGITS_ENV} / the dataset\'s digits_file to the path of digits.png.')


def place_in_canvas(images: np.ndarray, canvas: int = 28) -> np.ndarray:
    """Centre ``(N, h, w)`` uint8 images on a black ``canvas x canvas`` background.

    Raises:
        ValueError: an image larger than the canvas.
    """
    n, h, w = images.shape
    if h > canvas or w > canvas:
        raise ValueError(f'images of {h}x{w} px do not fit a {canvas}x{canvas} canvas')
    out = np.zeros((n, canvas, canvas), np.uint8)
    top, left = (canvas - h) // 2, (canvas - w) // 2
    out[:, top:top + h, left:left + w] = images
    return out


def load_uci_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 UCI digits: ``(1797, 8, 8)`` uint8 in 0..16 and ``(1797,)`` int64."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)


def uci_to_mnist(images: np.ndarray, box: int = 20, canvas: int = 28) -> np.ndarray:
    """UCI 8x8 digits (0-16 grey levels) -> MNIST-like ``(N, canvas, canvas)`` uint8.

    Grey levels are scaled by 255/16, each image is resized to ``box x box`` with bilinear
    interpolation (``cv2.INTER_LINEAR``, half-pixel centres), rounded, and centred on a
    black canvas.
    """
    import cv2
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f'expected (N, 8, 8) UCI digits, got {images.shape}')
    x = images.astype(np.float32) * (255.0 / 16.0)
    big = np.stack([cv2.resize(im, (box, box), interpolation=cv2.INTER_LINEAR) for im in x])
    return place_in_canvas(np.rint(np.clip(big, 0, 255)).astype(np.uint8), canvas)


def uci_split_indices(labels: np.ndarray, sizes: Dict[str, int] = None,
                      seed: int = SPLIT_SEED) -> Dict[str, np.ndarray]:
    """Fixed stratified split of ``labels`` into ``{'train', 'val', 'test'}`` index arrays.

    ``test`` is drawn first, then ``val`` from the rest, each with scikit-learn's stratified
    ``train_test_split(random_state=seed)``; ``train`` is what remains. Indices are sorted;
    the three sets are disjoint and cover ``range(len(labels))``.

    Raises:
        ValueError: sizes that do not add up to ``len(labels)``.
    """
    from sklearn.model_selection import train_test_split
    sizes = dict(SPLIT_SIZES if sizes is None else sizes)
    if set(sizes) != {'train', 'val', 'test'} or sum(sizes.values()) != len(labels):
        raise ValueError(f'sizes must give train/val/test adding up to {len(labels)}, '
                         f'got {sizes}')
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=sizes['test'], stratify=labels,
                                  random_state=seed)
    train, val = train_test_split(rest, test_size=sizes['val'], stratify=labels[rest],
                                  random_state=seed)
    return dict(train=np.sort(train), val=np.sort(val), test=np.sort(test))


def find_opencv_digits(path: Optional[str] = None) -> str:
    """Path of OpenCV's ``digits.png``: ``path``, else ``$MMDIGRAP_OPENCV_DIGITS``, else the
    first existing file of :data:`OPENCV_DIGITS_CANDIDATES`.

    Raises:
        FileNotFoundError: none exists (the message says how to get the file).
    """
    tried = []
    for p in ([path] if path else []) + [os.environ.get(OPENCV_DIGITS_ENV)] + list(
            OPENCV_DIGITS_CANDIDATES):
        if not p:
            continue
        p = osp.expanduser(p)
        if osp.isfile(p):
            return p
        tried.append(p)
        if path and p == osp.expanduser(path):
            break  # an explicit path that does not exist is an error, not a fallback
    raise FileNotFoundError(f'OpenCV digits.png not found (tried {tried}). {_HOW_TO_GET}')


_CV_CACHE: Dict[tuple, Tuple[np.ndarray, np.ndarray]] = {}


def load_opencv_digits(path: Optional[str] = None,
                       canvas: int = 28) -> Tuple[np.ndarray, np.ndarray]:
    """The 5000 OpenCV digits: ``(5000, canvas, canvas)`` uint8 and ``(5000,)`` int64 labels.

    ``digits.png`` is a 1000x2000 grey mosaic of 50 x 100 cells of 20x20; cell ``(r, c)`` is
    image ``100 r + c`` and its label is ``r // 5`` (500 per class). Read-only arrays, memoised
    per (file, size, mtime).

    Raises:
        FileNotFoundError: the file is missing (see :func:`find_opencv_digits`).
        ValueError: the image is not a 1000x2000 mosaic.
    """
    from PIL import Image
    path = find_opencv_digits(path)
    st = os.stat(path)
    key = (osp.realpath(path), st.st_size, st.st_mtime_ns, canvas)
    if key in _CV_CACHE:
        return _CV_CACHE[key]
    with Image.open(path) as im:
        a = np.asarray(im.convert('L'))
    if a.shape != (1000, 2000):
        raise ValueError(f'{path}: expected the 1000x2000 OpenCV digits mosaic, got {a.shape}')
    cells = a.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(-1, 20, 20)
    images = place_in_canvas(cells, canvas)
    labels = np.repeat(np.arange(10, dtype=np.int64), 500)
    images.setflags(write=False)
    labels.setflags(write=False)
    _CV_CACHE[key] = (images, labels)
    return images, labels


class _GreyDigits(GreyArrayDataset):
    """The digits' common part: 10 digit classes, 1 channel by default, plain (unserialised)
    data lists."""
    METAINFO = {'classes': DIGIT_CLASSES}

    def __init__(self, channels: int = 1, **kwargs):
        # mmengine's serialisation runs gc.collect() per set (slow with torch loaded); the
        # sets are small, so keep the plain lists.
        kwargs.setdefault('serialize_data', False)
        super().__init__(channels=channels, **kwargs)


@DATASETS.register_module()
class UCIDigits(_GreyDigits):
    """scikit-learn's UCI digits in MNIST format (28x28, digit in the central 20x20 box).

    Args:
        split (str): ``'train'`` (1000), ``'val'`` (300), ``'test'`` (497) or ``'all'``
            (1797): the fixed stratified split of :func:`uci_split_indices`.
        subset (int, optional): keep a seeded class-balanced subset of this many images of
            the split (``balanced_subset_indices``); ``None`` keeps the whole split.
        seed (int): seed of the subset choice (not of the split, which is fixed).
        channels (int): 1 (default) gives ``img`` as ``(28, 28)`` uint8; 3 repeats the grey.
        pipeline, test_mode, lazy_init, ...: as in :class:`mmpretrain.datasets.BaseDataset`
            (``serialize_data`` defaults to False).

    Data infos: ``img``, ``gt_label`` (0..9), ``orig_idx`` (index in ``load_digits()``).

    Raises:
        ValueError: unknown split or channels, a bad subset.
    """

    def __init__(self, split: str = 'train', subset: Optional[int] = None, seed: int = 0,
                 **kwargs):
        if split not in ('train', 'val', 'test', 'all'):
            raise ValueError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
        self.split = split
        self.subset = check_subset(subset)
        self.seed = int(seed)
        super().__init__(**kwargs)

    def _images_labels(self):
        images8, labels = load_uci_digits()
        pool = (np.arange(len(labels)) if self.split == 'all' else
                uci_split_indices(labels)[self.split])
        idx = pool[balanced_subset_indices(labels[pool], self.subset, self.seed)]
        return uci_to_mnist(images8[idx]), labels[idx], idx

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split} (fixed, seed {SPLIT_SEED})',
                f'Subset: \t{self.subset} (seed {self.seed})']


@DATASETS.register_module()
class OpenCVDigits(_GreyDigits):
    """OpenCV's 5000 MNIST digits (28x28), clean or with one corruption (cached).

    Args:
        corruption (str, optional): ``None`` (clean) or a name of
            :data:`~mmdigrap.datasets.corruptions.CORRUPTIONS` (library corruptions, plus
            the hand-written ``rotate`` / ``invert``).
        severity (int, optional): 1..5, required with ``corruption``.
        subset (int, optional), seed (int): a seeded class-balanced subset
            (``balanced_subset_indices``), the same source images in every set with the same
            ``(subset, seed)``; ``seed`` also seeds the corruption.
        cache_dir (str): where corrupted sets are cached
            (``opencv_<corruption>_s<severity>_<all|n<subset>>_seed<seed>.npz`` + ``.json``);
            a cache is reused only when its meta (corruption, severity, parameter,
            :data:`~mmdigrap.datasets.corruptions.CORRUPTIONS_VERSION`, subset, seed, source
            checksum) and its image checksum match; writes are atomic.
        digits_file (str, optional): path of ``digits.png`` (default: see
            :func:`find_opencv_digits`).
        channels (int), pipeline, ...: as in :class:`UCIDigits`.

    Attributes:
        set_name (str): ``'opencv'`` (clean) or ``'<corruption>_s<severity>'``, the name
            ``IDOODConcatDataset`` uses. ``cache_file`` / ``cache_hit``: the cache path (None
            when clean) and whether the last load reused it.

    Raises:
        KeyError: unknown corruption. ValueError: bad severity / subset / channels.
        FileNotFoundError: ``digits.png`` missing (the message says how to get it).
    """

    def __init__(self, corruption: Optional[str] = None, severity: Optional[int] = None,
                 subset: Optional[int] = None, seed: int = 0,
                 cache_dir: str = 'data/opencv_digits_c', digits_file: Optional[str] = None,
                 **kwargs):
        if corruption is not None:
            if corruption not in C.CORRUPTIONS:
                raise KeyError(f'unknown corruption {corruption!r}; known: '
                               f'{list(C.CORRUPTIONS)}')
            if isinstance(severity, bool) or severity is None or int(severity) != severity \
                    or not 1 <= severity <= 5:
                raise ValueError(f'severity must be an int in 1..5 with corruption='
                                 f'{corruption!r}, got {severity!r}')
        elif severity is not None:
            raise ValueError('severity given without a corruption')
        self.corruption = corruption
        self.severity = None if severity is None else int(severity)
        self.subset = check_subset(subset)
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.digits_file = digits_file
        self.set_name = 'opencv' if corruption is None else f'{corruption}_s{self.severity}'
        self.cache_hit = False
        super().__init__(**kwargs)

    @property
    def cache_file(self) -> Optional[str]:
        if self.corruption is None:
            return None
        n = 'all' if self.subset is None else f'n{self.subset}'
        return osp.join(self.cache_dir, f'opencv_{self.set_name}_{n}_seed{self.seed}.npz')

    def _images_labels(self):
        images, labels = load_opencv_digits(self.digits_file)
        idx = balanced_subset_indices(labels, self.subset, self.seed)
        if self.corruption is None:
            return images[idx], labels[idx], idx
        expected = dict(
            format='mmdigrap.opencv_digits_corrupted',
            corruptions_version=C.CORRUPTIONS_VERSION,
            corruption=self.corruption, severity=self.severity,
            param=C.SEVERITY_TABLE[self.corruption][self.severity - 1],
            work_size=C.WORK_SIZE, subset=self.subset, seed=self.seed,
            source_sha256=sha256_arrays(images, labels))
        out, self.cache_hit = cached_set(
            self.cache_file, expected,
            lambda: (C.corrupt(images[idx], self.corruption, self.severity, self.seed),
                     labels[idx], idx))
        return out

    def extra_repr(self) -> List[str]:
        out = [f'Subset: \t{self.subset} (seed {self.seed})']
        if self.corruption is not None:
            out += [f'Corruption: \t{self.corruption} severity {self.severity}',
                    f'Cache: \t{self.cache_file}']
        return out
