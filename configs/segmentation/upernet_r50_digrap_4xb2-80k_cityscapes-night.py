# UperNet R-50 with DiGraP on the ImageNet backbone (decode/auxiliary heads new: excluded);
# mmseg's SGD recipe without weight decay as the base optimizer.
_base_ = ['./_base_/upernet_r50_4xb2-80k_cityscapes-night.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    digrap=dict(mu=0.5, exclude=[r'^(decode_head|auxiliary_head)\.']))
