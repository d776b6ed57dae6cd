# FTP, Fast Trainable Projection (algorithm.md §13.5, AdamP): after each base step, projects every
# tensor back into a ball around theta0 whose radius is trained by a hyper-Adam.
# k in [0, 1]: 1 = strongest regularisation, 0 = the radius can only grow.
# Knobs: --cfg-options optim_wrapper.ftp.k=0.5
optim_wrapper = dict(
    type='FTPOptimWrapper',
    constructor='RobustFTOptimWrapperConstructor',  # parameter names for `exclude`
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    ftp=dict(k=1.0, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50)]
