# SPD (AdamSPD) fine-tuning of CLIP ViT-B/16 on ImageNet.
_base_ = ['./_base_/clip-vit-b16_in1k.py', '../_base_/methods/spd.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0), clip_grad=dict(max_norm=1.0),
    spd=dict(weight=0.5, exclude=[]))
