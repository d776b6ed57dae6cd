# Fashion-MNIST (real, Debian package `dataset-fashion-mnist`) as the ID task, and its test
# split with ImageNet-C-style corruptions (gaussian noise, blur, contrast, rotation,
# inversion) at several severities as OOD test sets, all evaluated in one run.
# Point `data_root` at any folder holding the four standard idx files.
data_root = '/usr/share/datasets/fashion-mnist'
img_size = 112  # multiple of 14 (DINOv2 patch)
train_subset = 4000  # class-balanced, seeded
test_subset = 500  # per test set (same source images in every set)
severities = (2, 4)

data_preprocessor = dict(
    num_classes=10,
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics (the backbone's)
    std=[58.395, 57.12, 57.375],
    to_rgb=False)

train_pipeline = [
    dict(type='ResizeEdge', scale=img_size, edge='short'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='ResizeEdge', scale=img_size, edge='short'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(type='FashionMNISTIdx', data_root=data_root, split='train', exclude_val=True,
                 subset=train_subset, seed=0, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
# validation: a held-out part of the train file (ID), never the test split
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type='FashionMNISTIdx', data_root=data_root, split='val',
                 subset=test_subset, pipeline=test_pipeline, test_mode=True),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='IDOODAccuracy', save_files=False)
# final test: ID + every (corruption, severity) set, one table + results.json/.md
test_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type='FashionMNISTIDOOD', data_root=data_root,
                 corruptions=('gaussian_noise', 'gaussian_blur', 'contrast', 'rotate', 'invert'),
                 severities=severities, subset=test_subset, seed=0,
                 cache_dir='data/fashion_mnist_c', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = dict(type='IDOODAccuracy')
