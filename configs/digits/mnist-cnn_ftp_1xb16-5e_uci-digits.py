# FTP (AdamP): projection into trainable balls around theta0 (the pre-trained head included).
# Knob: --cfg-options optim_wrapper.ftp.k=0.5
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/ftp.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0), ftp=dict(exclude=[]))
test_evaluator = dict(type='IDOODAccuracy', tag='FTP')
