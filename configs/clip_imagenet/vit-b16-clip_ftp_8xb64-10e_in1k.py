# FTP (AdamP) fine-tuning of CLIP ViT-B/16 on ImageNet (FTP paper: k=1 is the strongest).
_base_ = ['./_base_/clip-vit-b16_in1k.py', '../_base_/methods/ftp.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0), clip_grad=dict(max_norm=1.0),
    ftp=dict(k=1.0, exclude=[]))
