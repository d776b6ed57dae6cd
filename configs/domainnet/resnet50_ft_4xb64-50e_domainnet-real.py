# Vanilla fine-tuning of ImageNet ResNet-50 on DomainNet-real (AdamW lr 1e-4, wd 1e-4).
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/ft.py']
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=1e-4))
