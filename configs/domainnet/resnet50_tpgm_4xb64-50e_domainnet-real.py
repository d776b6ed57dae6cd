# TPGM fine-tuning of ImageNet ResNet-50 on DomainNet-real: projection after every step, radii
# trained every step on held-out batches (TPGM paper's DomainNet-ResNet protocol, MARS norm).
# The radii need data that is neither trained on nor tested on: split real_train.txt into
# real_train_tpgm.txt (95%) + real_val_tpgm.txt (5%) once (docs/datasets.md, "DomainNet");
# TPGM then trains on the 95% only.
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/tpgm.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.0),
    tpgm=dict(proj_lr=1e-2, norm='mars', exclude=[r'^head\.']))
train_dataloader = dict(dataset=dict(ann_file='real_train_tpgm.txt'))
custom_hooks = [
    dict(type='DiGraPHook', log_interval=50),
    dict(
        type='TPGMHook',
        interval=1,
        dataloader=dict(
            batch_size=64,
            num_workers=4,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(
                type='CustomDataset',
                data_root='data/domainnet',
                ann_file='real_val_tpgm.txt',
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
                         interpolation='bicubic'),
                    dict(type='CenterCrop', crop_size=224),
                    dict(type='PackInputs'),
                ]))),
]
