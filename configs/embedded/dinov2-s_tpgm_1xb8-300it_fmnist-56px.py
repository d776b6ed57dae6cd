# TPGM from the linear-probe checkpoint. TPGMHook trains the projection radii after every
# step on a batch of 8 images (the training batch size, so a radius update costs about one
# training step) of the held-out 'val' part of the train file: disjoint from the training
# subset and the test sets; a different seeded 500-image subset (seed=1) than the one the
# final validation uses (seed=0), which still share ~10% of their images.
# Knob: --cfg-options optim_wrapper.tpgm.proj_lr=1e-3
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/tpgm.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
custom_hooks = [
    dict(type='DiGraPHook', log_interval=50),
    dict(type='TPGMHook', interval=1, dataloader=dict(
        batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(type='FashionMNISTIdx', data_root={{_base_.val_dataloader.dataset.data_root}}, split='val',
                     subset=500, seed=1, pipeline={{_base_.test_pipeline}}, test_mode=True))),
]
test_evaluator = dict(type='IDOODAccuracy', tag='TPGM (l2)')
