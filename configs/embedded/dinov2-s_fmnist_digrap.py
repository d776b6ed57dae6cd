# DiGraP fine-tuning of DINOv2-S on Fashion-MNIST: everything as dinov2-s_fmnist_ft.py except
# `optim_wrapper` (the same AdamW, wrapped) and the DiGraP hook.
_base_ = ['./dinov2-s_fmnist_ft.py']
optim_wrapper = dict(
    type='DiGraPOptimWrapper',
    digrap=dict(mu=0.5, exclude=[r'^head\.'], hypergrad_norm='row'))
custom_hooks = [dict(type='DiGraPHook', log_interval=10)]
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP (mu=0.5)')
