# LP-FT, second stage: full fine-tuning (as vit-b16-clip_ft) starting from the LP checkpoint.
# Run vit-b16-clip_lp_8xb64-10e_in1k.py first; point load_from at its last checkpoint, e.g.
#   --cfg-options load_from=work_dirs/vit-b16-clip_lp_8xb64-10e_in1k/epoch_10.pth
_base_ = ['./_base_/clip-vit-b16_in1k.py', '../_base_/methods/ft.py']
load_from = 'work_dirs/vit-b16-clip_lp_8xb64-10e_in1k/epoch_10.pth'
optim_wrapper = dict(
    optimizer=dict(lr=1e-5, weight_decay=0.1), clip_grad=dict(max_norm=1.0))
