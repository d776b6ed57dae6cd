"""A tiny real-stack config for end-to-end tests of the tools: a 1-block ViT (16 channels,
patch 14) + linear head on fake Fashion-MNIST idx files, DiGraP wrapper + DiGraPHook
(``log_interval=1``), mmdigrap's default runtime. 32 training images, batch 8: 4 iterations
an epoch, a few seconds a run on one CPU core.
"""
import gzip
import os.path as osp

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

TINY_CFG = """
_base_ = [{runtime!r}]
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=10, mean=[127.5] * 3, std=[64.0] * 3, to_rgb=False),
    backbone=dict(type='VisionTransformer', img_size={img}, patch_size=14, out_type='cls_token',
                  arch=dict(embed_dims=16, num_layers=1, num_heads=2, feedforward_channels=32)),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, in_channels=16,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
train_pipeline = [dict(type='ResizeEdge', scale={img}, edge='short'),
                  dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                  dict(type='PackInputs')]
test_pipeline = [dict(type='ResizeEdge', scale={img}, edge='short'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='FashionMNISTIdx', data_root={root!r}, split='train', exclude_val=True,
                 val_size=20, subset=32, pipeline=train_pipeline))
test_dataloader = dict(
    batch_size=16, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='FashionMNISTIDOOD', data_root={root!r}, corruptions=('contrast', ),
                 severities=(2, ), subset=16, cache_dir={cache!r}, pipeline=test_pipeline))
test_evaluator = dict(type='IDOODAccuracy', tag='tiny')
test_cfg = dict()
optim_wrapper = dict(type='DiGraPOptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
                     digrap=dict(mu=0.5, exclude=[r'^head\\.']))
custom_hooks = [dict(type='DiGraPHook', log_interval={log_interval}, allow_random_init=True)]
train_cfg = dict(by_epoch=True, max_epochs={epochs})
default_hooks = dict(logger=dict(type='LoggerHook', interval=2),
                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1))
"""


def _write_idx(path, arr, kind):
    arr = np.asarray(arr, np.uint8)
    magic = 0x803 if kind == 'images' else 0x801
    data = magic.to_bytes(4, 'big') + b''.join(int(d).to_bytes(4, 'big') for d in arr.shape)
    with open(path, 'wb') as f:
        f.write(gzip.compress(data + arr.tobytes()))


def write_fake_fmnist(root, n_train=80, n_test=40, seed=0):
    """The four gzipped idx files of a small fake Fashion-MNIST (random 28x28 images)."""
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('t10k', n_test)):
        _write_idx(osp.join(root, f'{split}-images-idx3-ubyte.gz'),
                   rng.integers(0, 256, (n, 28, 28)), 'images')
        _write_idx(osp.join(root, f'{split}-labels-idx1-ubyte.gz'), np.arange(n) % 10, 'labels')
    return str(root)


def write_tiny_config(folder, img=28, epochs=1, log_interval=1, name='tiny.py', extra=''):
    """Write fake data (once) and the tiny config into ``folder``; return the config path."""
    folder = str(folder)
    root = osp.join(folder, 'fmnist')
    if not osp.isdir(root):
        import os
        os.makedirs(root)
        write_fake_fmnist(root)
    path = osp.join(folder, name)
    with open(path, 'w') as f:
        f.write(TINY_CFG.format(runtime=osp.join(REPO, 'configs/_base_/default_runtime.py'),
                                img=img, root=root, cache=osp.join(folder, 'fmnist_c'),
                                epochs=epochs, log_interval=log_interval) + extra)
    return path
