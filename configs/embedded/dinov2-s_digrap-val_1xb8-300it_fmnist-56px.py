# DiGraP with omega's hyper-gradient on held-out ID batches (docs/algorithm.md section 14.2, not
# the paper), from the linear-probe checkpoint. DiGraPValHook takes a batch of 8 images after
# every step from the held-out ID images TPGMHook trains its radii on (`held_out_dataloader` of
# the task's base config: disjoint from the training subset and the test sets). A
# hyper-step costs about one training step (a forward + backward on the val batch).
# Knobs: --cfg-options optim_wrapper.digrap.mu=0.1 optim_wrapper.digrap.project=update
_base_ = ['./dinov2-s_digrap_1xb8-300it_fmnist-56px.py']
optim_wrapper = dict(digrap=dict(hypergrad_source='val'))
custom_hooks = [
    dict(type='RobustFTHook', log_interval=50),
    dict(type='DiGraPValHook', interval=1, dataloader={{_base_.held_out_dataloader}}),
]
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP-val')
