# L2-SP from the linear-probe checkpoint: FT + weight * (theta - theta0) on the gradient.
# Knob: --cfg-options optim_wrapper.l2sp.weight=1e-3
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/l2sp.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
test_evaluator = dict(type='IDOODAccuracy', tag='L2-SP')
