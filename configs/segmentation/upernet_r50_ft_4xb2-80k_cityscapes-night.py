# UperNet R-50, vanilla fine-tuning with mmseg's recipe (SGD lr 0.01, momentum 0.9, wd 5e-4).
_base_ = ['./_base_/upernet_r50_4xb2-80k_cityscapes-night.py', '../_base_/methods/ft.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4), clip_grad=None)
