# Ablation: DiGraP with a fixed projection strength omega=1 (no hyper-optimizer), every tensor
# projected (the pre-trained head included). Knob: --cfg-options optim_wrapper.digrap.omega=0.5
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/digrap_fixed.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0), digrap=dict(exclude=[]))
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP fixed (omega=1)')
