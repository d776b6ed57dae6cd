# CLIP ViT-B/16 fine-tuned on ImageNet-1k; ID = ImageNet val, OOD = ImageNet-V2, -A, -R,
# -Sketch, all five evaluated by one `tools/test.py` run (one metric table).
#
# This file holds the model, the data, the schedule and the runtime but NO `optim_wrapper`
# and NO `custom_hooks`: a method config adds those with one more `_base_` entry
# (configs/_base_/methods/<method>.py) and sets its learning rate.
#
# Weights (nothing is downloaded; see docs/settings.md, "CLIP ViT-B/16 on ImageNet"):
#   1. OpenAI's ViT-B-16.pt -> mmpretrain keys with mmpretrain's converter:
#        MMPRE=$(python -c "import mmpretrain,os;print(os.path.dirname(mmpretrain.__file__))")
#        python $MMPRE/.mim/tools/model_converters/openai-clip_to_mmpretrain-clip.py \
#            ViT-B-16.state_dict.pth checkpoints/clip-vit-b16_mmpretrain.pth
#      (ViT-B-16.state_dict.pth: the state dict of OpenAI's TorchScript file, docs/settings.md)
#   2. zero-shot head (80 OpenAI templates x 1000 class names) + classifier checkpoint:
#        python tools/clip_zeroshot_head.py checkpoints/clip-vit-b16_mmpretrain.pth \
#            checkpoints/clip-vit-b16_in1k-zeroshot.pth --classes imagenet
#   `load_from` below then starts fine-tuning from CLIP zero-shot (the WiSE-FT / FTP / TPGM
#   protocol). Evaluating that checkpoint with tools/test.py gives the zero-shot row.
custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)

_base_ = ['mmpretrain::_base_/default_runtime.py']

# ---------------------------------------------------------------- model
data_preprocessor = dict(
    num_classes=1000,
    # CLIP's normalisation (RGB)
    mean=[0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255],
    std=[0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255],
    to_rgb=True)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        drop_rate=0.0,
        pre_norm=True,  # CLIP's ln_pre
        final_norm=True,  # CLIP's ln_post
        out_type='cls_token',
        norm_cfg=dict(type='LN', eps=1e-5),
        layer_cfgs=dict(act_cfg=dict(type='QuickGELU'))),
    neck=None,
    # logits = fc(normalize(x @ proj)): CLIP's visual projection + the zero-shot text head
    head=dict(
        type='CLIPClsHead',
        num_classes=1000,
        in_channels=768,
        proj_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
load_from = 'checkpoints/clip-vit-b16_in1k-zeroshot.pth'

# ---------------------------------------------------------------- data
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
# mmpretrain's ImageNet layout (data/imagenet/{train,val} + meta/{train,val}.txt); the
# 1000 wnids in label order are read from data/imagenet/train (see ImageNetVariant).
train_dataloader = dict(
    batch_size=64,  # x 8 GPUs = 512, the WiSE-FT / FTP batch
    num_workers=8,
    dataset=dict(type='ImageNet', data_root='data/imagenet', split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
    drop_last=True)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    dataset=dict(type='ImageNet', data_root='data/imagenet', split='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))

_wnids = 'data/imagenet/train'
test_dataloader = dict(
    batch_size=128,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ClassSubsetIDOODDataset',
        id_set='imagenet',
        datasets=dict(
            imagenet=dict(type='ImageNet', data_root='data/imagenet', split='val',
                          pipeline=test_pipeline),
            # imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg
            imagenet_v2=dict(type='ImageNetVariant', layout='index', name='imagenet-v2',
                             data_root='data/imagenet-v2', pipeline=test_pipeline),
            # imagenet-a/<wnid>/*.jpg, 200 classes: logits masked to them
            imagenet_a=dict(type='ImageNetVariant', layout='wnid', wnids=_wnids,
                            mask_to_present=True,
                            name='imagenet-a', data_root='data/imagenet-a',
                            pipeline=test_pipeline),
            # imagenet-r/<wnid>/*.jpg, 200 classes: logits masked to them
            imagenet_r=dict(type='ImageNetVariant', layout='wnid', wnids=_wnids,
                            mask_to_present=True,
                            name='imagenet-r', data_root='data/imagenet-r',
                            pipeline=test_pipeline),
            # sketch/<wnid>/*.JPEG, 1000 classes
            imagenet_sketch=dict(type='ImageNetVariant', layout='wnid', wnids=_wnids,
                                 name='imagenet-sketch', data_root='data/imagenet-sketch',
                                 pipeline=test_pipeline))))
# per-set top-1 (%), ID, OOD mean / worst; writes results.json + results.md in the work dir
test_evaluator = dict(type='ClassSubsetIDOODAccuracy')

# ---------------------------------------------------------------- schedule (no optim_wrapper)
# WiSE-FT / FTP recipe: 10 epochs, batch 512, 500 warm-up iterations, cosine decay.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=10, eta_min=0.0,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2, save_best='auto'),
    exact_resume=dict(type='ExactResumeHook'))  # random states + open accumulation window
randomness = dict(seed=0)
