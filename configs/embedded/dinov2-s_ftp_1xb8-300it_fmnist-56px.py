# FTP (AdamP) from the linear-probe checkpoint.
# Knob: --cfg-options optim_wrapper.ftp.k=0.5
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/ftp.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
test_evaluator = dict(type='IDOODAccuracy', tag='FTP')
