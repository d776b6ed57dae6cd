# Vanilla fine-tuning of CLIP ViT-B/16 (zero-shot head) on DomainNet-real.
_base_ = ['./_base_/vit-b16-clip_domainnet-real.py', '../_base_/methods/ft.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.1), clip_grad=dict(max_norm=1.0))
