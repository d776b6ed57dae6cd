# Linear probe (stage 1 of every fine-tuning run of this task): the whole backbone is
# frozen (`frozen_stages=12` = every ViT-S parameter, final norm included), so only the new
# linear head trains (AdamW 1e-3, head x10). Its last checkpoint is the start of every
# fine-tuning config here (`lp_checkpoint` in the setting base) and the theta0 of WiSE-FT.
# Frozen parameters get no gradient: a step costs about one forward pass.
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/ft.py']
model = dict(backbone=dict(frozen_stages=12))
load_from = None
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.0)}),
    clip_grad=dict(max_norm=5.0))
test_evaluator = dict(type='IDOODAccuracy', tag='LP (head only)')
