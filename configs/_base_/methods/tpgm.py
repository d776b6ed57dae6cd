# TPGM, Trainable Projected Gradient Method (algorithm.md §13.7): projects every tensor into a ball
# around theta0 whose radius is trained on held-out batches. TPGMHook runs the radius updates
# after every `interval` optimizer steps on batches of its `dataloader` (default: the run's
# val_dataloader -- which must then be a held-out split, not the test set; the DomainNet
# config gives it its own). Expensive: an extra forward/backward per radius update.
# Knobs: --cfg-options optim_wrapper.tpgm.norm=mars optim_wrapper.tpgm.proj_lr=1e-2
optim_wrapper = dict(
    type='TPGMOptimWrapper',
    constructor='RobustFTOptimWrapperConstructor',  # parameter names for `exclude`
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    tpgm=dict(proj_lr=1e-2, norm='l2', exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50), dict(type='TPGMHook', interval=1)]
