# DiGraP fine-tuning of CLIP ViT-B/16 on DomainNet-real; the zero-shot head is pre-trained,
# so every tensor is anchored (exclude=[]).
_base_ = ['./_base_/vit-b16-clip_domainnet-real.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0), clip_grad=dict(max_norm=1.0),
    digrap=dict(mu=0.5, exclude=[]))
