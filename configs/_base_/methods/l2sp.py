# L2-SP (algorithm.md §13.4): adds weight * (theta - theta0) to the gradient before the optimizer
# (coupled), i.e. minimises L + weight/2 * ||theta - theta0||^2. theta0 = 0 for LoRA
# (anchor='zero'). One global weight, to be tuned per setting.
# Knobs: --cfg-options optim_wrapper.l2sp.weight=1e-3
optim_wrapper = dict(
    type='L2SPOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    l2sp=dict(weight=1e-2, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50)]
