"""ImageNet-C-style corruptions for small grey images, in pure numpy.

Every corruption has the same signature::

    fn(images, severity=1, rng=None) -> np.ndarray

* ``images``: ``uint8`` array of shape ``(N, H, W)`` (a batch of grey images) or ``(H, W)``
  (one image), values 0-255.
* ``severity``: int in 1..5; it indexes the corruption's row in :data:`SEVERITY_TABLE`.
* ``rng``: a :class:`numpy.random.Generator` for the random corruptions (noise, rotation
  sign); ``None`` means ``np.random.default_rng(0)``. The deterministic corruptions ignore it.
* returns a new ``uint8`` array of the same shape (inputs are never modified). Internally the
  image is taken to ``[0, 1]`` floats, corrupted, clipped to ``[0, 1]`` and rounded back.

Severity table (units in brackets; the tables follow ImageNet-C (Hendrycks & Dietterich,
2019) where a table exists for 224 px, and are rescaled for 28 px where the unit is pixels):

================  ===========================================  ================================
name              parameter per severity 1..5                  meaning
================  ===========================================  ================================
gaussian_noise    sigma 0.08, 0.12, 0.18, 0.26, 0.38           additive N(0, sigma^2) [fraction
                                                               of the 0-1 range] (ImageNet-C)
shot_noise        lambda 60, 25, 12, 5, 3                      Poisson(x * lambda) / lambda
                                                               [photons at full white] (ImNet-C)
impulse_noise     amount 0.03, 0.06, 0.09, 0.17, 0.27          fraction of pixels set to 0 or 1
                                                               (salt and pepper 50/50) (ImNet-C)
gaussian_blur     sigma 0.6, 0.9, 1.2, 1.6, 2.0                Gaussian kernel std [pixels at the
                                                               image's own resolution], edge pad
pixelate          factor 0.6, 0.5, 0.4, 0.3, 0.25              block-average to round(H*factor)
                                                               cells, then blow up (ImageNet-C)
contrast          c 0.4, 0.3, 0.2, 0.1, 0.05                   (x - mean) * c + mean, mean per
                                                               image (ImageNet-C)
rotate            angle 10, 20, 30, 45, 60                     rotation [degrees] about the
                                                               centre, sign +/- drawn per image,
                                                               bilinear, black fill
invert            threshold 192, 144, 96, 48, 0                solarize: pixels >= threshold
                                                               [grey level 0-255] become 255 - x;
                                                               severity 5 is full inversion
================  ===========================================  ================================

Random corruptions draw their noise field once per (seed, corruption), not per severity, when
callers use :func:`corruption_rng` (as :func:`corrupt` and the datasets do): the severities of
one corruption are then nested (severity 5 Gaussian noise is severity 1's noise field, scaled),
so OOD-vs-severity curves are smooth and the mean absolute change from the clean image grows
with severity.

Only numpy is used, so results do not depend on the scipy / opencv version.
"""
import zlib
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'CORRUPTIONS', 'SEVERITY_TABLE', 'CORRUPTIONS_VERSION', 'corrupt', 'corruption_rng',
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'gaussian_blur', 'pixelate', 'contrast',
    'rotate', 'invert', 'available_corruptions'
]

#: Bumped whenever a corruption's output for given inputs changes; part of the cache key.
CORRUPTIONS_VERSION = 1

#: name -> parameter for severities 1..5 (see the module docstring for units).
SEVERITY_TABLE: Dict[str, Tuple[float, ...]] = {
    'gaussian_noise': (0.08, 0.12, 0.18, 0.26, 0.38),
    'shot_noise': (60, 25, 12, 5, 3),
    'impulse_noise': (0.03, 0.06, 0.09, 0.17, 0.27),
    'gaussian_blur': (0.6, 0.9, 1.2, 1.6, 2.0),
    'pixelate': (0.6, 0.5, 0.4, 0.3, 0.25),
    'contrast': (0.4, 0.3, 0.2, 0.1, 0.05),
    'rotate': (10, 20, 30, 45, 60),
    'invert': (192, 144, 96, 48, 0),
}


def _param(name: str, severity: int) -> float:
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise ValueError(f'{name}: severity must be an int in 1..5, got {severity!r}')
    return SEVERITY_TABLE[name][int(severity) - 1]


def _to_float(images: np.ndarray) -> Tuple[np.ndarray, bool]:
    """uint8 (N,H,W) or (H,W) -> float32 (N,H,W) in [0,1], and whether a batch dim was added."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f'images must be uint8, got {images.dtype}')
    if images.ndim == 2:
        return images[None].astype(np.float32) / 255.0, True
    if images.ndim != 3:
        raise ValueError(f'images must have shape (N, H, W) or (H, W), got {images.shape}')
    return images.astype(np.float32) / 255.0, False


def _to_uint8(x: np.ndarray, squeeze: bool) -> np.ndarray:
    out = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out[0] if squeeze else out


def _rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
    return np.random.default_rng(0) if rng is None else rng


def gaussian_noise(images: np.ndarray, severity: int = 1,
                   rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Additive Gaussian noise, ``x + N(0, sigma^2)`` on the 0-1 scale, clipped.

    sigma per severity: 0.08, 0.12, 0.18, 0.26, 0.38 (ImageNet-C).
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    sigma = _param('gaussian_noise', severity)
    x, squeeze = _to_float(images)
    noise = _rng(rng).standard_normal(x.shape, dtype=np.float32)
    return _to_uint8(x + sigma * noise, squeeze)


def shot_noise(images: np.ndarray, severity: int = 1,
               rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Poisson (photon) noise: ``Poisson(x * lam) / lam`` on the 0-1 scale.

    lam per severity: 60, 25, 12, 5, 3 (ImageNet-C); smaller lam means more noise.
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    lam = _param('shot_noise', severity)
    x, squeeze = _to_float(images)
    return _to_uint8(_rng(rng).poisson(x * lam).astype(np.float32) / lam, squeeze)


def impulse_noise(images: np.ndarray, severity: int = 1,
                  rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Salt-and-pepper noise: a fraction ``amount`` of pixels is set to 0 or 255 (50/50).

    amount per severity: 0.03, 0.06, 0.09, 0.17, 0.27 (ImageNet-C). One uniform draw ``u`` per
    pixel: ``u < amount/2`` -> white, ``amount/2 <= u < amount`` -> black.
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    amount = _param('impulse_noise', severity)
    x, squeeze = _to_float(images)
    u = _rng(rng).random(x.shape, dtype=np.float32)
    x = np.where(u < amount / 2, 1.0, np.where(u < amount, 0.0, x))
    return _to_uint8(x, squeeze)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(4.0 * sigma + 0.5)  # scipy.ndimage's default truncate=4
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma)**2)
    return (k / k.sum()).astype(np.float32)


def gaussian_blur(images: np.ndarray, severity: int = 1,
                  rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Separable Gaussian blur with edge (nearest) padding; ``rng`` is unused.

    sigma [pixels] per severity: 0.6, 0.9, 1.2, 1.6, 2.0; kernel radius ``int(4 sigma + 0.5)``.
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    sigma = _param('gaussian_blur', severity)
    x, squeeze = _to_float(images)
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    _, H, W = x.shape
    p = np.pad(x, ((0, 0), (r, r), (0, 0)), mode='edge')
    x = sum(k[i] * p[:, i:i + H, :] for i in range(len(k)))
    p = np.pad(x, ((0, 0), (0, 0), (r, r)), mode='edge')
    x = sum(k[i] * p[:, :, i:i + W] for i in range(len(k)))
    return _to_uint8(x, squeeze)


def _block_matrix(n: int, cells: int) -> np.ndarray:
    """(n, cells) one-hot map of pixel i to cell floor(i * cells / n)."""
    A = np.zeros((n, cells), np.float32)
    A[np.arange(n), (np.arange(n) * cells) // n] = 1.0
    return A


def pixelate(images: np.ndarray, severity: int = 1,
             rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Block-average to ``round(H * f) x round(W * f)`` cells, then expand each cell back.

    f per severity: 0.6, 0.5, 0.4, 0.3, 0.25 (ImageNet-C); at 28 px that is 17, 14, 11, 8,
    7 cells. ``rng`` is unused. Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape out.
    """
    f = _param('pixelate', severity)
    x, squeeze = _to_float(images)
    _, H, W = x.shape
    Ah = _block_matrix(H, max(1, int(round(H * f))))
    Aw = _block_matrix(W, max(1, int(round(W * f))))
    Dh = (Ah / Ah.sum(0)).T  # (cells, H): average over the pixels of a cell
    Dw = (Aw / Aw.sum(0)).T
    small = Dh @ x @ Dw.T  # (N, ch, cw)
    return _to_uint8(Ah @ small @ Aw.T, squeeze)


def contrast(images: np.ndarray, severity: int = 1,
             rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Contrast reduction ``(x - mean) * c + mean``, mean over each image; ``rng`` unused.

    c per severity: 0.4, 0.3, 0.2, 0.1, 0.05 (ImageNet-C).
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    c = _param('contrast', severity)
    x, squeeze = _to_float(images)
    m = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8((x - m) * c + m, squeeze)


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

    angle [degrees] per severity: 10, 20, 30, 45, 60. Rotation about the image centre,
    bilinear interpolation, black (0) fill outside the source.
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    angle = _param('rotate', severity)
    x, squeeze = _to_float(images)
    sign = np.where(_rng(rng).random(x.shape[0]) < 0.5, -1.0, 1.0)
    return _to_uint8(_rotate_bilinear(x, sign * angle), squeeze)


def invert(images: np.ndarray, severity: int = 1,
           rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Solarize: grey levels ``>= threshold`` become ``255 - x``; ``rng`` unused.

    threshold [grey level] per severity: 192, 144, 96, 48, 0; severity 5 inverts every pixel
    (a full negative, black background becomes white).
    Shapes: ``(N, H, W)`` or ``(H, W)`` uint8 in, same shape uint8 out.
    """
    t = _param('invert', severity)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f'images must be uint8, got {images.dtype}')
    if images.ndim not in (2, 3):
        raise ValueError(f'images must have shape (N, H, W) or (H, W), got {images.shape}')
    return np.where(images >= t, 255 - images, images).astype(np.uint8)


#: name -> function(images, severity, rng) -> images.
CORRUPTIONS: Dict[str, Callable[..., np.ndarray]] = {
    'gaussian_noise': gaussian_noise,
    'shot_noise': shot_noise,
    'impulse_noise': impulse_noise,
    'gaussian_blur': gaussian_blur,
    'pixelate': pixelate,
    'contrast': contrast,
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
