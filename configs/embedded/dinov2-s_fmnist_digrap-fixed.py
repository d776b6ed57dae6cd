# Ablation: DiGraP with a FIXED projection strength omega (no hyper-optimizer; the
# PCGrad-style precursor, spec 4.8) on DINOv2-S / Fashion-MNIST: everything as
# dinov2-s_fmnist_ft.py except `optim_wrapper` (the same AdamW, wrapped) and the hook.
# Knob: --cfg-options optim_wrapper.digrap.omega=0.5
_base_ = ['./dinov2-s_fmnist_ft.py']
optim_wrapper = dict(
    type='FixedDiGraPOptimWrapper',
    digrap=dict(omega=1.0, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='DiGraPHook', log_interval=10)]
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP fixed (omega=1)')
