# SPD (AdamSPD) fine-tuning of CLIP ViT-B/16 on DomainNet-real.
_base_ = ['./_base_/vit-b16-clip_domainnet-real.py', '../_base_/methods/spd.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0), clip_grad=dict(max_norm=1.0),
    spd=dict(weight=0.5, exclude=[]))
