# DomainNet, trained on `real`; ID = real (test split); OOD = sketch, painting, infograph,
# clipart, quickdraw (test splits), all six evaluated by one `tools/test.py` run with one
# metric table (IDOODAccuracy: per-domain top-1, ID, mean OOD, worst OOD; results.json/md).
#
# Layout (docs/datasets.md): data/domainnet/{real,sketch,...}/<class>/<img>.jpg and the
# official split files data/domainnet/{domain}_{train,test}.txt with "<path> <label>" lines,
# e.g. "real/aircraft_carrier/real_001_000001.jpg 0" (paths relative to data/domainnet).
# Another location: --cfg-options for every loader, or a symlink data/domainnet -> /datasets/x.
custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)

_base_ = ['mmpretrain::_base_/default_runtime.py']

num_classes = 345
data_root = 'data/domainnet'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    dataset=dict(type='CustomDataset', data_root=data_root, ann_file='real_train.txt',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
    drop_last=True)
# per-epoch validation on the ID test split only (cheap); the OOD table is the test run
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    dataset=dict(type='CustomDataset', data_root=data_root, ann_file='real_test.txt',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = dict(
    batch_size=128,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='IDOODConcatDataset',
        id_set='real',
        datasets=dict(
            real=dict(type='CustomDataset', data_root=data_root, ann_file='real_test.txt',
                      pipeline=test_pipeline),
            sketch=dict(type='CustomDataset', data_root=data_root, ann_file='sketch_test.txt',
                        pipeline=test_pipeline),
            painting=dict(type='CustomDataset', data_root=data_root,
                          ann_file='painting_test.txt', pipeline=test_pipeline),
            infograph=dict(type='CustomDataset', data_root=data_root,
                           ann_file='infograph_test.txt', pipeline=test_pipeline),
            clipart=dict(type='CustomDataset', data_root=data_root,
                         ann_file='clipart_test.txt', pipeline=test_pipeline),
            quickdraw=dict(type='CustomDataset', data_root=data_root,
                           ann_file='quickdraw_test.txt', pipeline=test_pipeline))))
test_evaluator = dict(type='IDOODAccuracy')

val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2, save_best='auto'),
    exact_resume=dict(type='ExactResumeHook'))  # random states + open accumulation window
randomness = dict(seed=0)
