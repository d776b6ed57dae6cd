# LP (first stage of LP-FT): frozen ResNet-50 (all stages, BN in eval mode), only the
# 345-way head is trained; 10 epochs, lr 1e-3.
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/ft.py']
model = dict(backbone=dict(frozen_stages=4, norm_eval=True))
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=10, eta_min=0.0,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=10, val_interval=1)
