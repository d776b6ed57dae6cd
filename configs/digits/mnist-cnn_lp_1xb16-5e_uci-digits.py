# Linear probing (LP-FT stage 1): the whole backbone frozen (MNISTCNN frozen_stages=4: the three
# conv blocks and the FC 1152-256), only the pre-trained 10-way head trains (Adam, lr 1e-3).
# Knob: --cfg-options optim_wrapper.optimizer.lr=3e-3
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/ft.py']
model = dict(backbone=dict(frozen_stages=4))
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0))
test_evaluator = dict(type='IDOODAccuracy', tag='LP')
