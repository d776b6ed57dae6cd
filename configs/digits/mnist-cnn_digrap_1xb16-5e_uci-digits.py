# DiGraP at the paper's settings (mu=0.5, omega_init=0), every tensor projected (the pre-trained
# head included). Knob: --cfg-options optim_wrapper.digrap.mu=0.1
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0), digrap=dict(exclude=[]))
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP')
