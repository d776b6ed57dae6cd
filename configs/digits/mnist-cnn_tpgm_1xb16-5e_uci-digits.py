# TPGM: projection into balls around theta0 whose radii are trained on the ID val split (the
# run's val_dataloader, disjoint from train and test; the pre-trained head included).
# Knob: --cfg-options optim_wrapper.tpgm.proj_lr=1e-1
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/tpgm.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0), tpgm=dict(exclude=[]))
test_evaluator = dict(type='IDOODAccuracy', tag='TPGM')
