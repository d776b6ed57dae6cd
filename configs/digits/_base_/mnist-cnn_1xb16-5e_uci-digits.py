# The digits task of the robust fine-tuning benchmark (tools/benchmark/robust_ft_bench.py):
# the MNIST CNN of digit-recognizer-py (pre-trained on MNIST, its 10-way head KEPT) fine-tuned
# on the 1000 UCI train digits, batch 16, 5 epochs = 315 optimizer steps (63 per epoch), cosine
# decay to 0, no augmentation; validation (the 300 UCI val digits) once, at the end; test on the
# 497 UCI test digits (ID) and 1000 OpenCV digits, clean and corrupted (OOD; see
# configs/_base_/datasets/digits_idood.py). A run takes a few seconds of compute on one thread.
#
# No optim_wrapper / custom_hooks here: each method config adds them with one `_base_` line
# (configs/_base_/methods/<method>.py) and repeats the shared optimizer line
#   optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0))
# (the paper's Adam without weight decay; AdamW with weight_decay=0 is Adam), since mmengine
# does not merge a key defined in two `_base_` files. The pre-trained head has a meaningful
# anchor here, so the methods' `exclude` is [] (nothing is left unconstrained).
_base_ = [
    '../../_base_/models/mnist_cnn.py',
    '../../_base_/datasets/digits_idood.py',
    '../../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=16)
max_epochs = 5
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=0.0,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1),
)
