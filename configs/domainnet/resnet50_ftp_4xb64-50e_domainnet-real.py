# FTP (AdamP) fine-tuning of ImageNet ResNet-50 on DomainNet-real (FTP paper's setting).
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/ftp.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.0), ftp=dict(k=1.0, exclude=[r'^head\.']))
