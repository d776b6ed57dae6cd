# UperNet R-50 (ResNetV1c, ImageNet pre-trained) trained on Cityscapes 512x1024 (mmseg's
# upernet_r50_4xb2-80k_cityscapes-512x1024 recipe); ID = Cityscapes val, OOD = Dark Zurich
# val (night) and Nighttime Driving test, all three evaluated by one `tools/test.py` run
# (PerSetMetric over mmseg's IoUMetric: per-set mIoU, OOD mean).
#
# Layouts: mmseg's (docs/datasets.md): data/cityscapes/{leftImg8bit,gtFine}/{train,val},
# data/dark_zurich/{rgb_anon,gt}/val/night/GOPR0356,
# data/NighttimeDrivingTest/{leftImg8bit,gtCoarse_daytime_trainvaltest}/test/night.
# Pre-trained weights: `pretrained='open-mmlab://resnet50_v1c'` is read from the mmengine /
# torch hub cache without a download when the file is there; or set a local path:
#   --cfg-options model.pretrained=/path/to/resnet50_v1c-2cccc1ad.pth
# Only the backbone is pre-trained: decode/auxiliary heads are excluded from the robust
# methods (exclude=[r'^(decode_head|auxiliary_head)\.']).
# SyncBN is kept for multi-GPU training (mmengine reverts it to BN in a 1-process run).
# No optim_wrapper / custom_hooks here: a method config adds them (configs/_base_/methods).
custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)

_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)

_night_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1920, 1080), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
_cs_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# IDOODConcatDataset lives in mmpretrain's registry: the scope prefix finds it from mmseg;
# its sets are built with the current (mmseg) scope.
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='mmpretrain.IDOODConcatDataset',
        id_set='cityscapes',
        datasets=dict(
            cityscapes=dict(
                type='CityscapesDataset',
                data_root='data/cityscapes/',
                data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
                pipeline=_cs_test_pipeline),
            dark_zurich=dict(
                type='DarkZurichDataset',
                data_root='data/dark_zurich/',
                data_prefix=dict(img_path='rgb_anon/val/night/GOPR0356',
                                 seg_map_path='gt/val/night/GOPR0356'),
                pipeline=_night_pipeline),
            night_driving=dict(
                type='NightDrivingDataset',
                data_root='data/NighttimeDrivingTest/',
                data_prefix=dict(img_path='leftImg8bit/test/night',
                                 seg_map_path='gtCoarse_daytime_trainvaltest/test/night'),
                pipeline=_night_pipeline))))
test_evaluator = dict(
    _delete_=True,
    type='PerSetMetric',
    metric=dict(type='IoUMetric', iou_metrics=['mIoU']),
    id_set='cityscapes')

# 80k-iteration schedule (mmseg's schedule_80k without its SGD optim_wrapper)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
    exact_resume=dict(type='ExactResumeHook'))  # random states + open accumulation window
