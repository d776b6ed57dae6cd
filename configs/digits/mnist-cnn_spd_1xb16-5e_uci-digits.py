# SPD (AdamSPD): selective projection decay towards theta0 (the pre-trained head included).
# Knob: --cfg-options optim_wrapper.spd.weight=1.0
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/spd.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0), spd=dict(exclude=[]))
test_evaluator = dict(type='IDOODAccuracy', tag='SPD')
