# L2-SP fine-tuning of DINOv2-S on Fashion-MNIST (spec 4.4): everything as dinov2-s_fmnist_ft.py
# except `optim_wrapper` (the same AdamW, wrapped) and the companion hook.
# Knob: --cfg-options optim_wrapper.l2sp.weight=1e-3
_base_ = ['./dinov2-s_fmnist_ft.py']
optim_wrapper = dict(
    type='L2SPOptimWrapper',
    l2sp=dict(weight=1e-2, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='DiGraPHook', log_interval=10)]
test_evaluator = dict(type='IDOODAccuracy', tag='L2-SP (weight=1e-2)')
