# L2-SP fine-tuning of ImageNet ResNet-50 on DomainNet-real.
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/l2sp.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.0), l2sp=dict(weight=1e-2, exclude=[r'^head\.']))
