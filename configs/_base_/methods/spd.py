# SPD, Selective Projection Decay (algorithm.md §13.6, AdamSPD): when the gradient already points
# towards theta0, shrinks the post-step deviation from theta0 by weight * its growth ratio.
# weight (lambda) = 0.5 in the authors' PaliGemma runs.
# Knobs: --cfg-options optim_wrapper.spd.weight=1.0
optim_wrapper = dict(
    type='SPDOptimWrapper',
    constructor='RobustFTOptimWrapperConstructor',  # parameter names for `exclude`
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    spd=dict(weight=0.5, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50)]
