# RetinaNet R-50 FPN with L2-SP on the ImageNet backbone (neck/head new: excluded).
_base_ = ['./_base_/retinanet_r50_fpn_1x_coco.py', '../_base_/methods/l2sp.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    l2sp=dict(weight=1e-2, exclude=[r'^(bbox_head|neck|rpn_head|roi_head)\.']))
