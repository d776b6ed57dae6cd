# DiGraP with omega's hyper-gradient on held-out ID batches (docs/algorithm.md section 14.2, not
# the paper), from the linear-probe checkpoint. DiGraPValHook takes a batch of 8 images after
# every step from the held-out 'val' part of the train file, the same batches TPGMHook trains its
# radii on (seed=1 500-image subset; disjoint from the training subset and the test sets). A
# hyper-step costs about one training step (a forward + backward on the val batch).
# Knobs: --cfg-options optim_wrapper.digrap.mu=0.1 optim_wrapper.digrap.project=update
_base_ = ['./dinov2-s_digrap_1xb8-300it_fmnist-56px.py']
optim_wrapper = dict(digrap=dict(hypergrad_source='val'))
custom_hooks = [
    dict(type='RobustFTHook', log_interval=50),
    dict(type='DiGraPValHook', interval=1, dataloader=dict(
        batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(type='FashionMNISTIdx', split='val',
                     data_root={{_base_.val_dataloader.dataset.data_root}},
                     subset=500, seed=1, pipeline={{_base_.test_pipeline}}, test_mode=True))),
]
test_evaluator = dict(type='IDOODAccuracy', tag='DiGraP-val')
