"""Fashion-MNIST idx datasets and corrupted OOD copies (CPU, tiny synthetic idx files).

Only ``test_real_fashion_mnist`` needs the Debian package ``dataset-fashion-mnist``; it is
skipped when the files are absent.
"""
import gzip
import json
import os
import os.path as osp

import numpy as np
import pytest

import mmdigrap  # noqa: F401  (registers the datasets)
from mmdigrap.datasets import (
    FashionMNISTCorrupted,
    FashionMNISTIDOOD,
    FashionMNISTIdx,
    IdxFileError,
    balanced_subset_indices,
)
from mmdigrap.datasets import corruptions as C
from mmdigrap.datasets import fashion_mnist as F

CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
           'Sneaker', 'Bag', 'Ankle boot')
REAL_ROOT = '/usr/share/datasets/fashion-mnist'


def write_idx(path, arr, kind, gz):
    arr = np.asarray(arr, np.uint8)
    magic = 0x803 if kind == 'images' else 0x801
    data = magic.to_bytes(4, 'big') + b''.join(int(d).to_bytes(4, 'big') for d in arr.shape)
    data += arr.tobytes()
    with open(path, 'wb') as f:
        f.write(gzip.compress(data) if gz else data)
    return path


def make_images(n, seed):
    """Structured 28x28 'garments': a bright textured rectangle on black, size set by class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    imgs = np.zeros((n, 28, 28), np.uint8)
    yy, xx = np.mgrid[0:28, 0:28]
    for i, c in enumerate(labels):
        h, w = 8 + c, 18 - c
        y0, x0 = rng.integers(2, 28 - h - 1), rng.integers(2, 28 - w - 1)
        box = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        tex = 120 + 60 * np.sin(xx / (1.5 + c / 3)) + rng.integers(0, 40, (28, 28))
        imgs[i][box] = np.clip(tex, 0, 255)[box]
    return imgs, labels


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Fake Fashion-MNIST folders: gz (train 60, test 40) and raw copies of the same data."""
    base = tmp_path_factory.mktemp('fmnist')
    tr_x, tr_y = make_images(60, 1)
    te_x, te_y = make_images(40, 2)
    roots = {}
    for gz in (True, False):
        root = base / ('gz' if gz else 'raw')
        root.mkdir()
        sfx = '.gz' if gz else ''
        write_idx(root / f'train-images-idx3-ubyte{sfx}', tr_x, 'images', gz)
        write_idx(root / f'train-labels-idx1-ubyte{sfx}', tr_y, 'labels', gz)
        write_idx(root / f't10k-images-idx3-ubyte{sfx}', te_x, 'images', gz)
        write_idx(root / f't10k-labels-idx1-ubyte{sfx}', te_y, 'labels', gz)
        roots['gz' if gz else 'raw'] = str(root)
    return dict(roots=roots, train=(tr_x, tr_y), test=(te_x, te_y), base=base)


def test_idx_gz_and_raw(data):
    for kind in ('gz', 'raw'):
        ds = FashionMNISTIdx(data_root=data['roots'][kind], split='train',
                             serialize_data=kind == 'gz')
        assert len(ds) == 60 and ds.CLASSES == CLASSES
        x, y = data['train']
        assert np.array_equal(ds.get_gt_labels(), y)
        item = ds[7]
        assert item['img'].shape == (28, 28, 3) and item['img'].dtype == np.uint8
        for ch in range(3):
            assert np.array_equal(item['img'][..., ch], x[7])
        assert item['gt_label'] == y[7] and item['orig_idx'] == 7
        assert item['img_shape'] == (28, 28)
    te = FashionMNISTIdx(data_root=data['roots']['raw'], split='test', channels=1)
    assert len(te) == 40 and np.array_equal(te[3]['img'], data['test'][0][3])


def test_pipeline_to_tensor(data):
    ds = FashionMNISTIdx(data_root=data['roots']['gz'], split='test', test_mode=True,
                         pipeline=[dict(type='Resize', scale=56), dict(type='PackInputs')])
    out = ds[0]
    assert tuple(out['inputs'].shape) == (3, 56, 56)
    assert int(out['data_samples'].gt_label) == data['test'][1][0]


def test_balanced_subset(data):
    ds = FashionMNISTIdx(data_root=data['roots']['gz'], split='train', subset=20, seed=3)
    labels = ds.get_gt_labels()
    assert np.bincount(labels, minlength=10).tolist() == [2] * 10
    again = FashionMNISTIdx(data_root=data['roots']['raw'], split='train', subset=20, seed=3,
                            serialize_data=False)
    idx = [ds.get_data_info(i)['orig_idx'] for i in range(len(ds))]
    assert idx == [again.get_data_info(i)['orig_idx'] for i in range(len(again))]
    assert idx == sorted(idx)
    other = balanced_subset_indices(data['train'][1], 20, seed=4)
    assert not np.array_equal(other, idx)
    x = data['train'][0]
    assert all(np.array_equal(ds.get_data_info(i)['img'], x[j]) for i, j in enumerate(idx))
    counts = np.bincount(data['train'][1][balanced_subset_indices(data['train'][1], 25, 0)])
    assert counts.sum() == 25 and set(counts.tolist()) == {2, 3}
    with pytest.raises(ValueError, match='larger'):
        balanced_subset_indices(data['train'][1], 61)


def test_val_split_is_held_out(data):
    kw = dict(data_root=data['roots']['gz'], val_size=20, serialize_data=False)
    val = FashionMNISTIdx(split='val', **kw)
    tr = FashionMNISTIdx(split='train', exclude_val=True, **kw)
    sub = FashionMNISTIdx(split='train', exclude_val=True, subset=10, seed=5, **kw)
    ids = {n: {d.get_data_info(i)['orig_idx'] for i in range(len(d))}
           for n, d in (('val', val), ('train', tr), ('sub', sub))}
    assert len(ids['val']) == 20 and len(ids['train']) == 40 and len(ids['sub']) == 10
    assert not ids['val'] & ids['train'] and ids['val'] | ids['train'] == set(range(60))
    assert ids['sub'] <= ids['train']
    assert np.bincount(val.get_gt_labels()).tolist() == [2] * 10
    assert np.bincount(sub.get_gt_labels()).tolist() == [1] * 10
    # the val choice does not depend on `seed`
    assert ids['val'] == {FashionMNISTIdx(split='val', seed=9, **kw).get_data_info(i)[
        'orig_idx'] for i in range(20)}
    assert len(FashionMNISTIdx(split='train', **kw)) == 60


def test_missing_file_message(data, tmp_path):
    root = tmp_path / 'partial'
    root.mkdir()
    x, y = data['test']
    write_idx(root / 't10k-images-idx3-ubyte.gz', x, 'images', True)
    with pytest.raises(FileNotFoundError) as e:
        FashionMNISTIdx(data_root=str(root), split='test')
    msg = str(e.value)
    assert 't10k-labels-idx1-ubyte' in msg and str(root) in msg
    assert 'apt-get install dataset-fashion-mnist' in msg and 'data_root' in msg


def _corrupt_case(root, case, x, y):
    img = root / 't10k-images-idx3-ubyte'
    lbl = root / 't10k-labels-idx1-ubyte'
    write_idx(img, x, 'images', False)
    write_idx(lbl, y, 'labels', False)
    if case == 'magic':
        raw = bytearray(img.read_bytes())
        raw[3] = 0x01  # labels magic in an images file
        img.write_bytes(bytes(raw))
        return img
    if case == 'truncated':
        img.write_bytes(img.read_bytes()[:-100])
        return img
    if case == 'truncated_gz':
        img.unlink()
        gz = root / 't10k-images-idx3-ubyte.gz'
        write_idx(gz, x, 'images', True)
        gz.write_bytes(gz.read_bytes()[:len(gz.read_bytes()) // 2])
        return gz
    if case == 'count':
        write_idx(lbl, y[:-1], 'labels', False)
        return lbl
    if case == 'label_range':
        write_idx(lbl, np.where(y == 0, 12, y), 'labels', False)
        return lbl
    raise AssertionError(case)


@pytest.mark.parametrize('case', ['magic', 'truncated', 'truncated_gz', 'count', 'label_range'])
def test_corrupt_file_message(data, tmp_path, case):
    x, y = data['test']
    bad = _corrupt_case(tmp_path, case, x, y)
    with pytest.raises(IdxFileError) as e:
        FashionMNISTIdx(data_root=str(tmp_path), split='test')
    msg = str(e.value)
    assert str(bad) in msg and 'apt-get install dataset-fashion-mnist' in msg
    if case == 'count':
        assert '40 images' in msg and '39 labels' in msg


RANDOM = C.RANDOM_CORRUPTIONS
# effect not monotone in severity on these textured boxes: random pixel shuffles (glass), cell
# grids that do not nest (pixelate), JPEG quantisation tables
NON_MONOTONE = {'glass_blur', 'pixelate', 'jpeg_compression'}


@pytest.mark.parametrize('name', list(C.CORRUPTIONS))
def test_corruption_deterministic(data, name):
    x = data['test'][0]
    a = C.corrupt(x, name, 3, seed=0)
    b = C.corrupt(x, name, 3, seed=0)
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, x)
    c = C.corrupt(x, name, 3, seed=1)
    assert (not np.array_equal(a, c)) == (name in RANDOM)
    # one image (H, W) works and the input is not modified
    x0 = x[0].copy()
    assert C.CORRUPTIONS[name](x0, 2).shape == (28, 28) and np.array_equal(x0, x[0])


@pytest.mark.parametrize('name', [n for n in C.CORRUPTIONS if n not in NON_MONOTONE])
def test_severity_monotonic(data, name):
    x = data['test'][0]
    d = [np.abs(C.corrupt(x, name, s, seed=0).astype(float) - x).mean() for s in range(1, 6)]
    assert all(b > a for a, b in zip(d, d[1:])), (name, d)


def test_corruption_values():
    x = np.array([[0, 50], [100, 250]], np.uint8)
    # contrast severity 1: c = 0.4 around the mean 100
    assert C.contrast(x, 1).tolist() == [[60, 80], [100, 160]]
    assert C.invert(x, 5).tolist() == [[255, 205], [155, 5]]
    assert C.invert(x, 3).tolist() == [[0, 50], [155, 5]]  # threshold 96
    flat = np.full((4, 28, 28), 77, np.uint8)
    for name in ('gaussian_blur', 'pixelate', 'contrast'):
        assert np.array_equal(C.corrupt(flat, name, 5), flat)
    r = C.rotate(flat, 5)
    assert (r[:, 10:18, 10:18] == 77).all() and (r[:, 0, 0] == 0).all()
    # Gaussian noise (imagecorruptions, run on the 2x-replicated 56 px image and block-averaged
    # back): the measured std at 28 px is sigma / 2 where nothing clips
    mid = np.full((50, 28, 28), 128, np.uint8)
    n = C.corrupt(mid, 'gaussian_noise', 1, seed=0).astype(float)
    assert abs(n.std() - 0.08 * 255 / 2) < 0.5 and abs(n.mean() - 128) < 0.3
    imp = C.corrupt(np.full((20, 32, 32), 128, np.uint8), 'impulse_noise', 5, seed=0)
    assert abs(np.isin(imp, (0, 255)).mean() - 0.27) < 0.01  # at 32 px: the library unresized
    p = C.pixelate(np.arange(784, dtype=np.uint16).reshape(28, 28).astype(np.uint8), 5)
    assert len(np.unique(p)) <= 196  # 14 x 14 cells at the 56 px work size
    with pytest.raises(ValueError, match='severity'):
        C.corrupt(x, 'contrast', 6)
    with pytest.raises(KeyError, match='known'):
        C.corrupt(x, 'fog', 1)


def test_corrupted_dataset_and_cache(data, tmp_path, monkeypatch):
    root = data['roots']['gz']
    cache = tmp_path / 'cache'
    kw = dict(data_root=root, corruption='contrast', severity=4, subset=20, seed=0,
              cache_dir=str(cache), serialize_data=False)
    ds = FashionMNISTCorrupted(**kw)
    assert ds.cache_hit is False and osp.isfile(ds.cache_file)
    assert osp.basename(ds.cache_file) == 'test_contrast_s4_n20_seed0.npz'
    meta = json.load(open(ds.cache_file[:-4] + '.json'))
    assert meta['corruption'] == 'contrast' and meta['severity'] == 4 and meta['param'] == 0.1
    assert meta['num_images'] == 20 and len(meta['source_sha256']) == 64
    # same source images as the ID subset, corrupted exactly by corruptions.contrast
    clean = FashionMNISTIdx(data_root=root, split='test', subset=20, seed=0, channels=1,
                            serialize_data=False)
    assert [ds.get_data_info(i)['orig_idx'] for i in range(20)] == \
        [clean.get_data_info(i)['orig_idx'] for i in range(20)]
    ref = C.contrast(np.stack([clean.get_data_info(i)['img'] for i in range(20)]), 4)
    got = np.stack([ds.get_data_info(i)['img'] for i in range(20)])
    assert np.array_equal(got, ref)
    assert np.array_equal(ds.get_gt_labels(), clean.get_gt_labels())
    assert ds[0]['img'].shape == (28, 28, 3)

    # second build reads the cache: the corruption function must not run
    def boom(*a, **k):
        raise AssertionError('recomputed instead of reading the cache')

    monkeypatch.setitem(C.CORRUPTIONS, 'contrast', boom)
    again = FashionMNISTCorrupted(**kw)
    assert again.cache_hit is True
    assert np.array_equal(np.stack([again.get_data_info(i)['img'] for i in range(20)]), got)
    monkeypatch.undo()

    # a damaged cache file, or a cache made from another source, is rebuilt
    with open(ds.cache_file, 'wb') as f:
        f.write(b'not a zip')
    assert FashionMNISTCorrupted(**kw).cache_hit is False
    assert FashionMNISTCorrupted(**kw).cache_hit is True
    other = dict(kw, data_root=data['roots']['raw'])  # same bytes: still a hit
    assert FashionMNISTCorrupted(**other).cache_hit is True
    changed = tmp_path / 'changed'
    changed.mkdir()
    x, y = data['test']
    x2 = x.copy()
    x2[0, 0, 0] ^= 1
    write_idx(changed / 't10k-images-idx3-ubyte', x2, 'images', False)
    write_idx(changed / 't10k-labels-idx1-ubyte', y, 'labels', False)
    assert FashionMNISTCorrupted(**dict(kw, data_root=str(changed))).cache_hit is False


def test_idood_dataset(data, tmp_path):
    ds = FashionMNISTIDOOD(
        data_root=data['roots']['gz'], corruptions=['gaussian_noise', 'invert'],
        severities=(3, 5), subset=20, cache_dir=str(tmp_path),
        pipeline=[dict(type='PackInputs')])
    assert len(ds) == 5 * 20
    meta = ds.metainfo
    assert meta['classes'] == CLASSES and meta['id_set'] == 'id'
    assert [s['name'] for s in meta['idood_sets']] == [
        'id', 'gaussian_noise_s3', 'gaussian_noise_s5', 'invert_s3', 'invert_s5']
    assert meta['idood_sets'][3] == dict(name='invert_s3', group='invert', severity=3, size=20)
    out = ds[20 * 3 + 1]
    assert out['data_samples'].set_name == 'invert_s3'
    assert ds.get_data_info(5)['set_name'] == 'id'
    # invert severity 5 is the exact negative of the ID image
    a = ds[1]['inputs'].numpy()
    b = ds[4 * 20 + 1]['inputs'].numpy()
    assert np.array_equal(b.astype(int), 255 - a.astype(int))
    assert sorted(os.listdir(tmp_path)) == sorted(
        f'test_{n}_n20_seed0.{e}' for n in ('gaussian_noise_s3', 'gaussian_noise_s5',
                                            'invert_s3', 'invert_s5') for e in ('json', 'npz'))


@pytest.mark.skipif(not osp.isdir(REAL_ROOT), reason='dataset-fashion-mnist not installed')
def test_real_fashion_mnist():
    x, y = F.load_fashion_mnist(REAL_ROOT, 'train')
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10
    xt, yt = F.load_fashion_mnist(REAL_ROOT, 'test')
    assert xt.shape == (10000, 28, 28) and np.bincount(yt).tolist() == [1000] * 10
    ds = FashionMNISTIdx(split='test', subset=100)
    assert len(ds) == 100 and np.bincount(ds.get_gt_labels()).tolist() == [10] * 10
    val = FashionMNISTIdx(split='val', serialize_data=False)
    assert len(val) == 5000 and np.bincount(val.get_gt_labels()).tolist() == [500] * 10
    tr = FashionMNISTIdx(split='train', exclude_val=True, subset=2000, serialize_data=False)
    assert np.bincount(tr.get_gt_labels()).tolist() == [200] * 10
    val_ids = {val.get_data_info(i)['orig_idx'] for i in range(len(val))}
    assert not val_ids & {tr.get_data_info(i)['orig_idx'] for i in range(len(tr))}
