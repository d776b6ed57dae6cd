# L2-SP: minimises L + weight/2 * ||theta - theta0||^2 (the pre-trained head included).
# Knob: --cfg-options optim_wrapper.l2sp.weight=1e-1
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/l2sp.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0), l2sp=dict(exclude=[]))
test_evaluator = dict(type='IDOODAccuracy', tag='L2-SP')
