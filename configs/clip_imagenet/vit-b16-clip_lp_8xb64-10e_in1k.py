# LP, the first stage of LP-FT: only the classifier `head.fc` (initialised from the zero-shot
# head) is trained; the backbone is frozen (frozen_stages=12 freezes every block, ln_pre and
# ln_post) and CLIP's projection `head.proj` gets lr 0.
_base_ = ['./_base_/clip-vit-b16_in1k.py', '../_base_/methods/ft.py']
model = dict(backbone=dict(frozen_stages=12))
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0), clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys={'head.proj': dict(lr_mult=0.0, decay_mult=0.0)}))
