# LP-FT, second stage: fine-tuning from the LP checkpoint (run resnet50_lp_4xb64-10e_domainnet-real
# first; then --cfg-options load_from=work_dirs/resnet50_lp_4xb64-10e_domainnet-real/epoch_10.pth).
# The LP checkpoint already holds the backbone, so the backbone init_cfg is not needed.
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/ft.py']
model = dict(backbone=dict(init_cfg=None))
load_from = 'work_dirs/resnet50_lp_4xb64-10e_domainnet-real/epoch_10.pth'
optim_wrapper = dict(optimizer=dict(lr=1e-5, weight_decay=1e-4))
