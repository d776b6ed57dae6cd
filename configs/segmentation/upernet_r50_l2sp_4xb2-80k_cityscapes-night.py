# UperNet R-50 with L2-SP on the ImageNet backbone (decode/auxiliary heads new: excluded).
_base_ = ['./_base_/upernet_r50_4xb2-80k_cityscapes-night.py', '../_base_/methods/l2sp.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    l2sp=dict(weight=1e-2, exclude=[r'^(decode_head|auxiliary_head)\.']))
