# RetinaNet R-50 FPN, vanilla fine-tuning with mmdet's 1x recipe (SGD lr 0.01, batch 16).
_base_ = ['./_base_/retinanet_r50_fpn_1x_coco.py', '../_base_/methods/ft.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
