# CLIP ViT-B/16 on DomainNet-real, starting from CLIP zero-shot on the 345 DomainNet classes:
#   python tools/clip_zeroshot_head.py checkpoints/clip-vit-b16_mmpretrain.pth \
#       checkpoints/clip-vit-b16_domainnet-zeroshot.pth \
#       --classes data/domainnet/real_train.txt --templates openai_imagenet
# (class names are read from the split file's folder names, in label order). Schedule: 10
# epochs, batch 8 x 32 = 256, AdamW, 500 warm-up iterations + cosine decay.
# No optim_wrapper / custom_hooks here: a method config adds them (configs/_base_/methods).
_base_ = ['./domainnet-real_idood.py']

data_preprocessor = dict(
    num_classes=345,
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
        pre_norm=True,
        final_norm=True,
        out_type='cls_token',
        norm_cfg=dict(type='LN', eps=1e-5),
        layer_cfgs=dict(act_cfg=dict(type='QuickGELU'))),
    neck=None,
    head=dict(
        type='CLIPClsHead',
        num_classes=345,
        in_channels=768,
        proj_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
load_from = 'checkpoints/clip-vit-b16_domainnet-zeroshot.pth'

train_dataloader = dict(batch_size=32)  # x 8 GPUs
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=10, eta_min=0.0,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
auto_scale_lr = dict(base_batch_size=256)
