# Vanilla fine-tuning (Adam, lr 1e-3, no weight decay) of the MNIST CNN on the UCI digits.
# Knob: --cfg-options optim_wrapper.optimizer.lr=3e-4
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/ft.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0))
test_evaluator = dict(type='IDOODAccuracy', tag='FT')
