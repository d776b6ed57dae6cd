# ResNet-50 (ImageNet-supervised, mmpretrain's resnet50_8xb32_in1k) on DomainNet-real with a
# new 345-way linear head. Schedule of the FTP / TPGM DomainNet-ResNet runs: 50 epochs,
# batch 4 x 64 = 256, cosine decay, Adam(W) lr 1e-4.
#
# Weights: mmpretrain's ImageNet ResNet-50 checkpoint
#   resnet50_8xb32_in1k_20210831-ea4938fc.pth (mmpretrain model zoo) -> checkpoints/
# (any mmpretrain ResNet-50 classifier checkpoint works: `prefix='backbone'` takes its
# backbone; for MoCo-v3 / CLIP-RN50 weights convert them to mmpretrain's ResNet keys first).
# No optim_wrapper / custom_hooks here: a method config adds them (configs/_base_/methods).
_base_ = ['./domainnet-real_idood.py']

data_preprocessor = dict(
    num_classes=345,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch',
        init_cfg=dict(type='Pretrained', prefix='backbone',
                      checkpoint='checkpoints/resnet50_8xb32_in1k_20210831-ea4938fc.pth')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=345,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))

train_dataloader = dict(batch_size=64)  # x 4 GPUs
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=50, eta_min=0.0,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=5)
auto_scale_lr = dict(base_batch_size=256)
