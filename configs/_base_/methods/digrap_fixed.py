# Ablation: DiGraP with a fixed projection strength omega (no hyper-optimizer), the
# PCGrad-style precursor of DiGraP (algorithm.md §13.8; mmdigrap.optim.FixedDiGraP). omega=1 removes
# the whole conflicting component of the gradient; 0 is the base optimizer alone.
# Knobs: --cfg-options optim_wrapper.digrap.omega=0.5
optim_wrapper = dict(
    type='FixedDiGraPOptimWrapper',
    constructor='RobustFTOptimWrapperConstructor',  # parameter names for `exclude`
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    digrap=dict(omega=1.0, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50)]
