# mmpretrain's default runtime, plus the plugin import, a fixed seed and exact resume:
# ExactResumeHook saves the random states (python / numpy / torch / CUDA, per rank) and an open
# gradient-accumulation window with each checkpoint and restores them on --resume, so a run
# resumed at an epoch end equals an uninterrupted one, random augmentation included.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)
default_hooks = dict(logger=dict(type='LoggerHook', interval=10),
                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
                     exact_resume=dict(type='ExactResumeHook'))
randomness = dict(seed=0, deterministic=False)
