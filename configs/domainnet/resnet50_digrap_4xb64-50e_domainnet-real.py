# DiGraP fine-tuning of ImageNet ResNet-50 on DomainNet-real (the new head is not anchored).
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.0), digrap=dict(mu=0.5, exclude=[r'^head\.']))
