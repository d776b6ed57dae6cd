# DiGraP (ICLR 2025): directional gradient projection towards the pre-trained weights theta0,
# with a projection strength omega per tensor trained by its own Adam (learning rate `mu`).
# Algorithm: docs/algorithm.md; code: mmdigrap.optim.DiGraP.
#
# A setting config switches to this method with one `_base_` line and sets its own knobs:
#   _base_ = ['./_base_/<setting>.py', '../_base_/methods/digrap.py']
#   optim_wrapper = dict(optimizer=dict(lr=3e-5), digrap=dict(exclude=[...]))
# Knobs from the command line: --cfg-options optim_wrapper.digrap.mu=0.1
#   mu:      hyper-learning-rate of omega (paper/code: 0.5 for VQAv2; sweep {0.01,0.1,0.5,1,10})
#   exclude: regexes on parameter names left unprojected (newly initialised heads)
#   anchor:  'pretrained' (theta0 = weights when training starts) or 'zero' (LoRA/PEFT)
# Per param group (they live in the groups): paramwise_cfg=dict(custom_keys={'neck': dict(mu=0.1)})
# Scheduled: param_scheduler=[dict(type='LinearParamScheduler', param_name='mu', ...)]
# The paper uses Adam without weight decay (DiGraP replaces the pull towards theta0).
optim_wrapper = dict(
    type='DiGraPOptimWrapper',
    constructor='RobustFTOptimWrapperConstructor',  # parameter names for `exclude`
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    digrap=dict(mu=0.5, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='RobustFTHook', log_interval=50)]
