# DiGraP (ICLR 2025): directional gradient projection towards the pre-trained weights theta0,
# with a projection strength omega per tensor trained by its own Adam (learning rate `mu`).
# Spec: shared/design/digrap_spec.md section 1; code: mmdigrap.optim.DiGraP.
#
# A setting config switches to this method with one `_base_` line and sets its own knobs:
#   _base_ = ['./_base_/<setting>.py', '../_base_/methods/digrap.py']
#   optim_wrapper = dict(optimizer=dict(lr=3e-5), digrap=dict(exclude=[...]))
# Knobs from the command line: --cfg-options optim_wrapper.digrap.mu=0.1
#   mu:      hyper-learning-rate of omega (paper/code: 0.5 for VQAv2; sweep {0.01,0.1,0.5,1,10})
#   exclude: regexes on parameter names left unprojected (newly initialised heads)
#   anchor:  'pretrained' (theta0 = weights when training starts) or 'zero' (LoRA/PEFT)
# The paper uses Adam without weight decay (DiGraP replaces the pull towards theta0).
optim_wrapper = dict(
    type='DiGraPOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    digrap=dict(mu=0.5, exclude=[r'^head\.'], anchor='pretrained'))
custom_hooks = [dict(type='DiGraPHook', log_interval=50)]
