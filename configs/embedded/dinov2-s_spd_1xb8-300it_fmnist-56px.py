# SPD (AdamSPD) from the linear-probe checkpoint.
# Knob: --cfg-options optim_wrapper.spd.weight=1.0
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/spd.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
test_evaluator = dict(type='IDOODAccuracy', tag='SPD')
