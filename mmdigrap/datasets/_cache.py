"""The on-disk cache of a corrupted image set, shared by ``FashionMNISTCorrupted`` and
``OpenCVDigits``.

One set is one ``.npz`` file holding ``images`` (uint8, ``(M, H, W)``), ``labels`` (int64,
``(M,)``), ``orig_idx`` (int64, ``(M,)``, index in the source array) and ``meta`` (a JSON
string), plus a human-readable ``.json`` copy of ``meta`` next to it (same stem). ``meta`` is the
caller's *expected* dict (what the set depends on: corruption, severity, parameter, source
checksum, ...) plus ``images_sha256`` (:func:`sha256_arrays` of images, labels, orig_idx),
``num_images`` and the caller's extra keys. A file is reused only when every expected key
matches (compared after a JSON round trip, so tuples equal lists) and its arrays match
``images_sha256``; otherwise it is rebuilt. Writes are atomic (temporary file +
``os.replace``), so concurrent builders never leave a half-written cache.
"""
import hashlib
import json
import os
import os.path as osp
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from mmengine.logging import print_log

__all__ = ['sha256_arrays', 'read_cached_set', 'write_cached_set', 'cached_set']

ImageSet = Tuple[np.ndarray, np.ndarray, np.ndarray]  # images, labels, orig_idx


def sha256_arrays(*arrays: np.ndarray) -> str:
    """Hex sha256 of the arrays' dtypes, shapes and C-order bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def read_cached_set(path: str, expected: Dict) -> Optional[ImageSet]:
    """``(images, labels, orig_idx)`` from the cache file ``path`` if it is valid, else None.

    None (with a log line saying why) when the file is missing, unreadable or truncated, was
    built with other ``expected`` values, or its arrays do not match ``images_sha256``.
    """
    if not osp.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z['meta']))
            images, labels, idx = z['images'], z['labels'], z['orig_idx']
    except Exception as e:  # unreadable / truncated file: rebuild
        print_log(f'{path}: unreadable cache ({e!r}), rebuilding', logger='current')
        return None
    if any(meta.get(k) != v for k, v in json.loads(json.dumps(expected)).items()):
        print_log(f'{path}: cache built with other parameters or another source, rebuilding',
                  logger='current')
        return None
    if meta.get('images_sha256') != sha256_arrays(images, labels, idx):
        print_log(f'{path}: cache content does not match its checksum, rebuilding',
                  logger='current')
        return None
    return images, labels, idx


def write_cached_set(path: str, images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
                     meta: Dict) -> None:
    """Write ``path`` (``.npz``) and its ``.json`` sidecar atomically; creates the folder."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
        np.savez_compressed(f, images=images, labels=labels, orig_idx=idx,
                            meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)
    tmp = f'{path[:-4]}.json.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, path[:-4] + '.json')


def cached_set(path: str, expected: Dict, build: Callable[[], ImageSet],
               extra_meta: Optional[Dict] = None) -> Tuple[ImageSet, bool]:
    """The set cached at ``path`` if valid for ``expected``, else ``build()`` it and cache it.

    Args:
        path: the ``.npz`` file.
        expected: what the set depends on (JSON-serialisable); stored in ``meta``.
        build: ``() -> (images, labels, orig_idx)``, called on a miss; labels are made
            C-contiguous and orig_idx int64 before they are stored.
        extra_meta: more keys stored in ``meta`` after ``num_images`` (not checked on read).

    Returns:
        ``((images, labels, orig_idx), hit)``; ``hit`` is True when the cache was reused.
    """
    cached = read_cached_set(path, expected)
    if cached is not None:
        return cached, True
    t0 = time.perf_counter()
    images, labels, idx = build()
    labels, idx = np.ascontiguousarray(labels), np.asarray(idx, np.int64)
    meta = dict(expected, images_sha256=sha256_arrays(images, labels, idx),
                num_images=int(len(images)), **(extra_meta or {}))
    write_cached_set(path, images, labels, idx, meta)
    print_log(f'built {path} ({len(images)} images) in {time.perf_counter() - t0:.2f} s',
              logger='current')
    return (images, labels, idx), False
