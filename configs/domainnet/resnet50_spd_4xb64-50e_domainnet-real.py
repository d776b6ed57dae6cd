# SPD (AdamSPD) fine-tuning of ImageNet ResNet-50 on DomainNet-real.
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/spd.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.0), spd=dict(weight=0.5, exclude=[r'^head\.']))
