# SPD (AdamSPD, spec 4.6) fine-tuning of DINOv2-S on Fashion-MNIST: everything as
# dinov2-s_fmnist_ft.py except `optim_wrapper` (the same AdamW, weight_decay=0, wrapped) and the
# companion hook.
# Knob: --cfg-options optim_wrapper.spd.weight=1.0
_base_ = ['./dinov2-s_fmnist_ft.py']
optim_wrapper = dict(
    type='SPDOptimWrapper',
    spd=dict(weight=0.5, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='DiGraPHook', log_interval=10)]
test_evaluator = dict(type='IDOODAccuracy', tag='SPD (weight=0.5)')
