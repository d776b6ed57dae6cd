# L2-SP fine-tuning of CLIP ViT-B/16 on DomainNet-real.
_base_ = ['./_base_/vit-b16-clip_domainnet-real.py', '../_base_/methods/l2sp.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0), clip_grad=dict(max_norm=1.0),
    l2sp=dict(weight=1e-2, exclude=[]))
