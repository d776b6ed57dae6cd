# DiGraP from the linear-probe checkpoint, at the paper's settings (mu=0.5, omega_init=0).
# Knob: --cfg-options optim_wrapper.digrap.mu=0.1
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP')
