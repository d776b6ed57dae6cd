# Vanilla full fine-tuning of CLIP ViT-B/16 on ImageNet from the zero-shot head (WiSE-FT's
# end-to-end recipe: AdamW lr 3e-5, weight decay 0.1, batch 512, 10 epochs, grad-norm clip 1).
# WiSE-FT is this run followed by weight interpolation with the zero-shot checkpoint
# (docs/settings.md, 'WiSE-FT').
_base_ = ['./_base_/clip-vit-b16_in1k.py', '../_base_/methods/ft.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.1), clip_grad=dict(max_norm=1.0))
