# RetinaNet R-50 FPN with DiGraP on the ImageNet backbone (neck/head new: excluded).
# DiGraP wraps any base optimizer; here mmdet's SGD recipe without weight decay.
_base_ = ['./_base_/retinanet_r50_fpn_1x_coco.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    digrap=dict(mu=0.5, exclude=[r'^(bbox_head|neck|rpn_head|roi_head)\.']))
