# LP-FT stage 1, linear probing (spec 4.2): everything as dinov2-s_fmnist_ft.py except that the
# whole backbone is frozen, so only the new linear head trains (same AdamW recipe; the head keeps
# its 10x lr_mult).
# `frozen_stages=12` (= all 12 blocks of ViT-S) is mmpretrain's VisionTransformer freeze: it sets
# requires_grad=False on pos_embed, cls_token, patch_embed, pre_norm, every block and, because all
# blocks are frozen, the final norm `ln1` -- i.e. every backbone parameter. Frozen parameters get
# no gradient, so AdamW never touches them (no autograd graph through the backbone either: LP
# costs about one forward pass per step). The ViT has no dropout/BatchNorm here, so train/eval
# mode does not matter. With another backbone depth set frozen_stages to its number of blocks.
# Stage 2 is dinov2-s_fmnist_lpft.py, started from this run's last checkpoint.
_base_ = ['./dinov2-s_fmnist_ft.py']
model = dict(backbone=dict(frozen_stages=12))
test_evaluator = dict(type='IDOODAccuracy', tag='LP (head only)')
