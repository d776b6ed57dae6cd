"""The shared corrupted-set cache (mmdigrap.datasets._cache)."""
import json
import os.path as osp

import numpy as np
import pytest

from mmdigrap.datasets._cache import cached_set, read_cached_set, sha256_arrays


def _set(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 4, 4), dtype=np.uint8),
            np.arange(n, dtype=np.int64) % 3, np.arange(10, 10 + n))


class Builder:
    def __init__(self, seed=0):
        self.calls, self.seed = 0, seed

    def __call__(self):
        self.calls += 1
        return _set(self.seed)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'sub' / 'x_s1_all_seed0.npz')


def test_sha256_arrays_sees_dtype_shape_and_bytes():
    a = np.arange(6, dtype=np.uint8)
    assert sha256_arrays(a) == sha256_arrays(a.copy())
    assert len(sha256_arrays(a)) == 64
    assert sha256_arrays(a) != sha256_arrays(a.astype(np.int64))
    assert sha256_arrays(a) != sha256_arrays(a.reshape(2, 3))
    assert sha256_arrays(a, a) != sha256_arrays(a)
    b = a.copy()
    b[0] ^= 1
    assert sha256_arrays(a) != sha256_arrays(b)


def test_round_trip_and_meta(path):
    expected = dict(format='t', corruption='defocus_blur', param=(3, 0.1), seed=0)
    build = Builder()
    (images, labels, idx), hit = cached_set(path, expected, build,
                                            extra_meta=dict(numpy_version='x'))
    assert hit is False and build.calls == 1 and osp.isfile(path)
    assert idx.dtype == np.int64 and labels.flags.c_contiguous
    meta = json.load(open(path[:-4] + '.json'))
    assert list(meta) == ['format', 'corruption', 'param', 'seed', 'images_sha256',
                          'num_images', 'numpy_version']
    assert meta['param'] == [3, 0.1] and meta['num_images'] == 6
    assert meta['images_sha256'] == sha256_arrays(images, labels, idx)
    # the tuple parameter equals the stored list: a hit, same arrays, no rebuild
    (i2, l2, x2), hit = cached_set(path, expected, build)
    assert hit is True and build.calls == 1
    assert np.array_equal(i2, images) and np.array_equal(l2, labels) and np.array_equal(x2, idx)
    assert i2.dtype == np.uint8 and x2.dtype == np.int64


def test_stale_meta_rebuilds(path):
    build = Builder()
    cached_set(path, dict(severity=1), build)
    assert read_cached_set(path, dict(severity=2)) is None
    new = Builder(seed=1)
    (images, _, _), hit = cached_set(path, dict(severity=2), new)
    assert hit is False and new.calls == 1
    assert np.array_equal(images, _set(1)[0])
    assert json.load(open(path[:-4] + '.json'))['severity'] == 2
    assert cached_set(path, dict(severity=2), new)[1] is True and new.calls == 1


def test_damaged_file_rebuilds(path):
    build = Builder()
    cached_set(path, dict(a=1), build)
    with open(path, 'wb') as f:
        f.write(b'not a zip')
    assert read_cached_set(path, dict(a=1)) is None
    (images, _, _), hit = cached_set(path, dict(a=1), build)
    assert hit is False and build.calls == 2 and np.array_equal(images, _set(0)[0])
    assert cached_set(path, dict(a=1), build)[1] is True


def test_checksum_mismatch_rebuilds(path):
    build = Builder()
    (images, labels, idx), _ = cached_set(path, dict(a=1), build)
    with np.load(path) as z:
        meta = str(z['meta'])
    tampered = images.copy()
    tampered[0, 0, 0] ^= 1
    np.savez_compressed(path, images=tampered, labels=labels, orig_idx=idx,
                        meta=np.array(meta))
    assert read_cached_set(path, dict(a=1)) is None
    assert cached_set(path, dict(a=1), build)[1] is False and build.calls == 2
    assert read_cached_set(path, dict(a=1))[0][0, 0, 0] == images[0, 0, 0]


def test_missing_file_is_a_miss(tmp_path):
    assert read_cached_set(str(tmp_path / 'none.npz'), {}) is None
