# TPGM from the linear-probe checkpoint. TPGMHook trains the projection radii after every
# step on a batch of the held-out ID images (`held_out_dataloader` of the task's base config).
# Knob: --cfg-options optim_wrapper.tpgm.proj_lr=1e-3
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/tpgm.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
custom_hooks = [
    dict(type='DiGraPHook', log_interval=50),
    dict(type='TPGMHook', interval=1, dataloader={{_base_.held_out_dataloader}}),
]
test_evaluator = dict(type='IDOODAccuracy', tag='TPGM (l2)')
