# TPGM (spec 4.7) fine-tuning of DINOv2-S on Fashion-MNIST: everything as dinov2-s_fmnist_ft.py
# except `optim_wrapper` (the same AdamW, wrapped) and the hooks.
# TPGMHook trains the projection radii after every optimizer step on batches of the run's
# `val_dataloader` (dataloader=None), which here is the held-out 'val' split of the TRAIN file
# (FashionMNISTIdx split='val'), disjoint from the training subset and from the test sets.
# Using the val_dataloader itself (not a copy of it) keeps `--cfg-options val_dataloader...`
# overrides (image size, subset) in effect for the radii too.
# Knobs: --cfg-options optim_wrapper.tpgm.norm=mars optim_wrapper.tpgm.proj_lr=1e-2
#        custom_hooks.1.interval=10 (fewer radius updates: cheaper)
_base_ = ['./dinov2-s_fmnist_ft.py']
optim_wrapper = dict(
    type='TPGMOptimWrapper',
    tpgm=dict(proj_lr=1e-2, norm='l2', max_iters=1, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [
    dict(type='DiGraPHook', log_interval=10),
    dict(type='TPGMHook', interval=1, dataloader=None),  # None = the val_dataloader above
]
test_evaluator = dict(type='IDOODAccuracy', tag='TPGM (l2)')
