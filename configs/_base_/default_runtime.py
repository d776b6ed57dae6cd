# mmpretrain's default runtime, plus the plugin import and a fixed seed (resume is exact).
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)
default_hooks = dict(logger=dict(type='LoggerHook', interval=10),
                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
randomness = dict(seed=0, deterministic=False)
