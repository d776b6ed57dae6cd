"""ImageNet-C corruptions for small grey images, from the field's library ``imagecorruptions``.

The corruptions are those of Hendrycks & Dietterich (ICLR 2019), run by the maintained fork
``imagecorruptions-imaug`` 1.1.5 (import name ``imagecorruptions``; needs ``numba``; installed
by ``tools/install.sh``), which works on the pinned numpy 2 / scikit-image stack. Only
:func:`rotate` and :func:`invert` are written here, because the library has no such
corruption.

Every corruption has the same signature::

    fn(images, severity=1, rng=None) -> np.ndarray

* ``images``: ``uint8`` array of shape ``(N, H, W)`` (a batch of grey images) or ``(H, W)``
  (one image), values 0-255.
* ``severity``: int in 1..5 (the library's severity; its parameter per severity is listed in
  :data:`SEVERITY_TABLE`).
* ``rng``: a :class:`numpy.random.Generator`; ``None`` means ``np.random.default_rng(0)``.
  One seed per image is drawn from it (whatever the corruption), and the library's random
  draws for that image come from ``numpy.random.seed(seed)`` (the library uses numpy's global
  state; it is saved before and restored after, so callers' global random state is untouched)
  or from its ``seed=`` argument (``impulse_noise``, ``glass_blur``).
* returns a new ``uint8`` array of the same shape (inputs are never modified).

How a grey image goes through the library (:func:`library_corruption`): the library needs
``H, W >= 32`` and 3 channels, so an image whose short side is below :data:`WORK_SIZE` (32 px)
is first enlarged by the smallest integer factor ``k`` that reaches it (pixel replication:
each pixel becomes a ``k x k`` block; 28 px -> 56 px with ``k = 2``), repeated on 3 channels,
corrupted, reduced to its first channel (for a grey input the three channels are equal, except
for the noises, whose per-channel draws are independent: one channel keeps the library's noise
level), and shrunk back by averaging each ``k x k`` block. The library's float output is
rounded to uint8 here (the library's own ``corrupt()`` truncates: a -0.5 grey-level bias).
Replication followed by block averaging is the identity, so a clean image comes back unchanged
and only the corruption differs. Consequences at 28 px: additive noise is averaged over 4
pixels, so its measured
std is sigma / 2; the library's parameters are those of ImageNet-C at 224 px, so relative to a
56 px work image the blurs and the pixelation are much stronger than on ImageNet. Choose
severities by measurement.

Random corruptions draw the same per-image seeds for every severity when callers use
:func:`corruption_rng` (as :func:`corrupt` and the datasets do), so the severities of one
corruption are nested (severity 5 Gaussian noise is severity 1's noise field, scaled).

Severity table: :data:`SEVERITY_TABLE` (copied from the library's source, for the record and
the caches; the library itself is what applies them).

================  ===========================================  ================================
name              parameter per severity 1..5                  meaning
================  ===========================================  ================================
gaussian_noise    sigma 0.08, 0.12, 0.18, 0.26, 0.38           additive N(0, sigma^2) [fraction
                                                               of the 0-1 range]
shot_noise        lambda 60, 25, 12, 5, 3                      Poisson(x * lambda) / lambda
impulse_noise     amount 0.03, 0.06, 0.09, 0.17, 0.27          salt-and-pepper fraction
speckle_noise     sigma 0.15, 0.2, 0.35, 0.45, 0.6             x + x * N(0, sigma^2)
gaussian_blur     sigma 1, 2, 3, 4, 6                          [pixels of the work image]
defocus_blur      (radius, alias blur) (3, .1) .. (10, .5)     disk kernel [px of the work image]
glass_blur        (sigma, max shift, iterations)               blur, local pixel shuffles, blur
motion_blur       (radius, sigma) (10, 3) .. (20, 15)          random angle in [-45, 45] deg
zoom_blur         zoom factors up to 1.11 .. 1.31              mean of zoomed copies
contrast          c 0.4, 0.3, 0.2, 0.1, 0.05                   (x - mean) * c + mean
brightness        +0.1 .. +0.5                                 added to V in HSV
pixelate          factor 0.6, 0.5, 0.4, 0.3, 0.25              box-downsample, nearest up
jpeg_compression  quality 25, 18, 15, 10, 7                    JPEG round trip
elastic_transform alpha 12.5, 16.25, 21.25, 25, 30               random elastic warp
rotate            angle 10, 20, 30, 45, 60                     HAND-WRITTEN (no library
                                                               corruption): rotation [degrees]
                                                               about the centre, sign +/- per
                                                               image, bilinear, black fill
invert            threshold 192, 144, 96, 48, 0                HAND-WRITTEN (no library
                                                               corruption): solarize, pixels
                                                               >= threshold -> 255 - x
================  ===========================================  ================================

The library is imported on first use (it imports numba, ~1 s), so loading cached corrupted
sets does not pay for it.
"""
import zlib
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'CORRUPTIONS', 'SEVERITY_TABLE', 'CORRUPTIONS_VERSION', 'LIBRARY_CORRUPTIONS',
    'RANDOM_CORRUPTIONS', 'WORK_SIZE', 'corrupt', 'corruption_rng', 'library_corruption',
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'speckle_noise', 'gaussian_blur',
    'defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur', 'contrast', 'brightness',
    'pixelate', 'jpeg_compression', 'elastic_transform', 'rotate', 'invert',
    'available_corruptions'
]

#: Bumped whenever a corruption's output for given inputs changes; part of the cache key.
#: 2: the library (imagecorruptions-imaug 1.1.5) replaced the numpy kernels.
CORRUPTIONS_VERSION = 2

#: Minimum short side [px] of the image the library sees (its own minimum); smaller images are
#: enlarged by an integer factor (pixel replication) and block-averaged back afterwards.
WORK_SIZE = 32

#: name -> parameter for severities 1..5 (scalars, or lists for multi-parameter ones), as in
#: imagecorruptions-imaug 1.1.5 (library corruptions) or in this module (rotate, invert).
SEVERITY_TABLE: Dict[str, tuple] = {
    'gaussian_noise': (0.08, 0.12, 0.18, 0.26, 0.38),
    'shot_noise': (60, 25, 12, 5, 3),
    'impulse_noise': (0.03, 0.06, 0.09, 0.17, 0.27),
    'speckle_noise': (0.15, 0.2, 0.35, 0.45, 0.6),
    'gaussian_blur': (1, 2, 3, 4, 6),
    'defocus_blur': ([3, 0.1], [4, 0.5], [6, 0.5], [8, 0.5], [10, 0.5]),
    'glass_blur': ([0.7, 1, 2], [0.9, 2, 1], [1, 2, 3], [1.1, 3, 2], [1.5, 4, 2]),
    'motion_blur': ([10, 3], [15, 5], [15, 8], [15, 12], [20, 15]),
    'zoom_blur': (1.11, 1.16, 1.21, 1.26, 1.31),
    'contrast': (0.4, 0.3, 0.2, 0.1, 0.05),
    'brightness': (0.1, 0.2, 0.3, 0.4, 0.5),
    'pixelate': (0.6, 0.5, 0.4, 0.3, 0.25),
    'jpeg_compression': (25, 18, 15, 10, 7),
    'elastic_transform': (12.5, 16.25, 21.25, 25.0, 30.0),  # alpha [px of displacement gain]
    'rotate': (10, 20, 30, 45, 60),
    'invert': (192, 144, 96, 48, 0),
}

#: Corruptions run by the library (the others are hand-written here).
LIBRARY_CORRUPTIONS: Tuple[str, ...] = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'speckle_noise', 'gaussian_blur',
    'defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur', 'contrast', 'brightness',
    'pixelate', 'jpeg_compression', 'elastic_transform')
#: Corruptions whose output depends on the seed.
RANDOM_CORRUPTIONS = frozenset({'gaussian_noise', 'shot_noise', 'impulse_noise',
                                'speckle_noise', 'glass_blur', 'motion_blur',
                                'elastic_transform', 'rotate'})
_TAKES_SEED = frozenset({'impulse_noise', 'glass_blur'})


def _check_severity(name: str, severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise ValueError(f'{name}: severity must be an int in 1..5, got {severity!r}')
    return int(severity)


def _param(name: str, severity: int):
    return SEVERITY_TABLE[name][_check_severity(name, severity) - 1]


def _as_batch(images: np.ndarray) -> Tuple[np.ndarray, bool]:
    """uint8 (N,H,W) or (H,W) -> uint8 (N,H,W), and whether a batch dim was added."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f'images must be uint8, got {images.dtype}')
    if images.ndim == 2:
        return images[None], True
    if images.ndim != 3:
        raise ValueError(f'images must have shape (N, H, W) or (H, W), got {images.shape}')
    return images, False


def _rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
    return np.random.default_rng(0) if rng is None else rng


_LIB = None


def _library():
    """The ``imagecorruptions`` module (imported once, on first use)."""
    global _LIB
    if _LIB is None:
        try:
            import imagecorruptions
        except ImportError as e:
            raise ImportError(
                'the corruptions need the library imagecorruptions: install the maintained '
                'fork with `pip install imagecorruptions-imaug==1.1.5` (tools/install.sh does; '
                f'it needs numba) ({e})') from e
        _LIB = imagecorruptions
    return _LIB


def library_corruption(images: np.ndarray, name: str, severity: int = 1,
                       rng: Optional[np.random.Generator] = None,
                       work_size: int = WORK_SIZE) -> np.ndarray:
    """Run the library corruption ``name`` on grey images (see the module docstring).

    Args:
        images: uint8 ``(N, H, W)`` or ``(H, W)``.
        name: a name in :data:`LIBRARY_CORRUPTIONS` (any name ``imagecorruptions`` knows works).
        severity: 1..5.
        rng: source of the per-image seeds (``None``: ``default_rng(0)``).
        work_size: the short side [px] is enlarged to at least this (by an integer factor,
            pixel replication) before the library runs; >= 32, the library's minimum.

    Returns:
        uint8 array of the input's shape.

    Raises:
        ValueError: severity not in 1..5, a bad shape, or ``work_size`` < 32.
        TypeError: ``images`` not uint8.
        ImportError: the library is not installed (the message says how to install it).
    """
    severity = _check_severity(name, severity)
    if work_size < 32:
        raise ValueError(f'work_size must be >= 32 (the library\'s minimum), got {work_size}')
    from PIL import Image
    x, squeeze = _as_batch(images)
    lib = _library()
    if name not in lib.corruption_dict:
        raise KeyError(f'imagecorruptions has no corruption {name!r}; it has '
                       f'{sorted(lib.corruption_dict)}')
    fn = lib.corruption_dict[name]
    n, h, w = x.shape
    k = max(1, -(-int(work_size) // min(h, w)))  # ceil: smallest integer factor reaching it
    seeds = _rng(rng).integers(0, 2**31 - 1, size=n)
    out = np.empty_like(x)
    state = np.random.get_state()
    try:
        for i in range(n):
            img = np.repeat(np.repeat(x[i], k, axis=0), k, axis=1) if k > 1 else x[i]
            np.random.seed(int(seeds[i]))
            kw = dict(seed=int(seeds[i])) if name in _TAKES_SEED else {}
            rgb = Image.fromarray(np.ascontiguousarray(np.stack((img, ) * 3, axis=-1)))
            g = np.asarray(fn(rgb, severity, **kw), dtype=np.float64)[..., 0]
            if k > 1:
                g = g.reshape(h, k, w, k).mean(axis=(1, 3))
            out[i] = np.rint(np.clip(g, 0, 255))
    finally:
        np.random.set_state(state)
    return out[0] if squeeze else out


def _make_library_fn(name: str) -> Callable[..., np.ndarray]:
    def fn(images: np.ndarray, severity: int = 1,
           rng: Optional[np.random.Generator] = None) -> np.ndarray:
        return library_corruption(images, name, severity, rng)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f'``imagecorruptions`` corruption ``{name}`` on grey images (enlarged to >= '
                  f'{WORK_SIZE} px and back, see the module docstring); parameter per severity '
                  f'{SEVERITY_TABLE[name]}. Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, '
                  'same shape uint8 out.')
    return fn


gaussian_noise = _make_library_fn('gaussian_noise')
shot_noise = _make_library_fn('shot_noise')
impulse_noise = _make_library_fn('impulse_noise')
speckle_noise = _make_library_fn('speckle_noise')
gaussian_blur = _make_library_fn('gaussian_blur')
defocus_blur = _make_library_fn('defocus_blur')
glass_blur = _make_library_fn('glass_blur')
motion_blur = _make_library_fn('motion_blur')
zoom_blur = _make_library_fn('zoom_blur')
contrast = _make_library_fn('contrast')
brightness = _make_library_fn('brightness')
pixelate = _make_library_fn('pixelate')
jpeg_compression = _make_library_fn('jpeg_compression')
elastic_transform = _make_library_fn('elastic_transform')


def _rotate_bilinear(x: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Rotate each image of ``x`` (N,H,W float) by its angle about the centre, zero fill."""
    N, H, W = x.shape
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    th = np.deg2rad(np.asarray(angles_deg, np.float64))[:, None, None]
    c, s = np.cos(th), np.sin(th)
    dx, dy = xx - cx, yy - cy
    # inverse map: the output pixel p samples the input at R(-theta) (p - centre) + centre
    sx = c * dx + s * dy + cx
    sy = -s * dx + c * dy + cy
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    wx, wy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    n = np.arange(N)[:, None, None]
    out = np.zeros_like(x)
    for oy, ox, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                      (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yi, xi = y0 + oy, x0 + ox
        valid = (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W)
        v = x[n, np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)]
        out += np.where(valid, w * v, 0.0)
    return out


def rotate(images: np.ndarray, severity: int = 1,
           rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Rotate each image by ``+angle`` or ``-angle`` (sign drawn from ``rng`` per image).

    Hand-written (pure numpy) because ``imagecorruptions`` has no rotation. angle [degrees]
    per severity: 10, 20, 30, 45, 60. Rotation about the image centre at the image's own
    resolution, bilinear interpolation, black (0) fill outside the source.
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    angle = _param('rotate', severity)
    x, squeeze = _as_batch(images)
    sign = np.where(_rng(rng).random(x.shape[0]) < 0.5, -1.0, 1.0)
    out = _rotate_bilinear(x.astype(np.float32) / 255.0, sign * angle)
    out = np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out[0] if squeeze else out


def invert(images: np.ndarray, severity: int = 1,
           rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Solarize: grey levels ``>= threshold`` become ``255 - x``; ``rng`` unused.

    Hand-written because ``imagecorruptions`` has no inversion. threshold [grey level] per
    severity: 192, 144, 96, 48, 0; severity 5 inverts every pixel (a full negative, black
    background becomes white).
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    t = _param('invert', severity)
    x, squeeze = _as_batch(images)
    out = np.where(x >= t, 255 - x, x).astype(np.uint8)
    return out[0] if squeeze else out


#: name -> function(images, severity, rng) -> images.
CORRUPTIONS: Dict[str, Callable[..., np.ndarray]] = {
    'gaussian_noise': gaussian_noise,
    'shot_noise': shot_noise,
    'impulse_noise': impulse_noise,
    'speckle_noise': speckle_noise,
    'gaussian_blur': gaussian_blur,
    'defocus_blur': defocus_blur,
    'glass_blur': glass_blur,
    'motion_blur': motion_blur,
    'zoom_blur': zoom_blur,
    'pixelate': pixelate,
    'contrast': contrast,
    'brightness': brightness,
    'jpeg_compression': jpeg_compression,
    'elastic_transform': elastic_transform,
    'rotate': rotate,
    'invert': invert,
}


def corruption_rng(name: str, seed: int = 0) -> np.random.Generator:
    """The generator used for corruption ``name`` with ``seed``.

    Seeded from ``(seed, crc32(name))`` so that it is stable across processes (unlike
    Python's salted ``hash``) and different corruptions get independent streams, while the
    severities of one corruption share the same draws (nested severities).
    """
    return np.random.default_rng([int(seed), zlib.crc32(name.encode('utf-8'))])


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) deterministically from ``seed``.

    Args:
        images: uint8 ``(N, H, W)`` or ``(H, W)``.
        name: a key of :data:`CORRUPTIONS`.
        severity: 1..5.
        seed: the same seed gives byte-identical output.

    Returns:
        uint8 array of the same shape.

    Raises:
        KeyError: unknown ``name`` (the message lists the known ones).
        ValueError: ``severity`` not in 1..5, or a bad shape.
        TypeError: ``images`` not uint8.
    """
    if name not in CORRUPTIONS:
        raise KeyError(f'unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}')
    return CORRUPTIONS[name](images, severity, corruption_rng(name, seed))


def available_corruptions() -> Sequence[str]:
    """Names of the implemented corruptions, in the order of :data:`CORRUPTIONS`."""
    return tuple(CORRUPTIONS)
