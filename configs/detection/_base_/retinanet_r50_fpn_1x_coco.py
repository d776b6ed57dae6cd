# RetinaNet R-50 FPN on COCO 2017 (mmdet's retinanet_r50_fpn_1x_coco: model, data, 1x
# schedule) with an ImageNet pre-trained backbone, for robust fine-tuning.
# ID = COCO val2017 (this config's val/test); OOD = COCO-C, i.e. COCO val2017 with the 15
# ImageNet-C corruptions at severities 1-5 applied on the fly by mmdet's robustness tool
# (mmdet's `Corrupt` transform, which needs `pip install imagecorruptions`):
#   MMDET_MIM=$(python -c "import mmdet,os;print(os.path.dirname(mmdet.__file__)+'/.mim')")
#   PYTHONPATH=$MMDET_MIM:$PYTHONPATH python $MMDET_MIM/tools/analysis_tools/test_robustness.py \
#       configs/detection/retinanet_r50_fpn_digrap_1x_coco.py work_dirs/.../epoch_12.pth \
#       --out work_dirs/.../coco-c.pkl --corruptions benchmark --severities 0 1 2 3 4 5 \
#       --final-prints mPC rPC
# which prints P (clean AP), mPC (mean AP over corruptions and severities) and rPC = mPC / P.
#
# Pre-trained weights: the backbone's init_cfg `torchvision://resnet50` (ImageNet) is read
# from the torch hub cache ($TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth) without a
# download when the file is there; or set a local path:
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/resnet50-0676ba61.pth
# Only the backbone is pre-trained: the FPN neck and the head are new and are excluded from
# the robust methods (exclude=[r'^(bbox_head|neck|rpn_head|roi_head)\.']).
# No optim_wrapper / custom_hooks here: a method config adds them (configs/_base_/methods).
custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)

_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)  # 8 GPUs x 2 images
# random states + open accumulation window saved with each checkpoint (exact --resume)
default_hooks = dict(exact_resume=dict(type='ExactResumeHook'))
