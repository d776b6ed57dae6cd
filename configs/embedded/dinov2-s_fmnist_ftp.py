# FTP (AdamP, spec 4.5) fine-tuning of DINOv2-S on Fashion-MNIST: everything as
# dinov2-s_fmnist_ft.py except `optim_wrapper` (the same AdamW, wrapped) and the companion hook.
# Knobs: --cfg-options optim_wrapper.ftp.k=0.5 optim_wrapper.ftp.mu=1e-2
_base_ = ['./dinov2-s_fmnist_ft.py']
optim_wrapper = dict(
    type='FTPOptimWrapper',
    ftp=dict(k=1.0, mu=1e-2, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='DiGraPHook', log_interval=10)]
test_evaluator = dict(type='IDOODAccuracy', tag='FTP (k=1)')
