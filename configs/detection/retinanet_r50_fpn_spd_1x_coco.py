# RetinaNet R-50 FPN with SPD on the ImageNet backbone (neck/head new: excluded).
_base_ = ['./_base_/retinanet_r50_fpn_1x_coco.py', '../_base_/methods/spd.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    spd=dict(weight=0.5, exclude=[r'^(bbox_head|neck|rpn_head|roi_head)\.']))
