# LP-FT stage 2 (spec 4.2): vanilla fine-tuning, exactly as dinov2-s_fmnist_ft.py, but starting
# from the LP checkpoint of stage 1 (dinov2-s_fmnist_lp.py): pre-trained backbone + the
# linear-probed head instead of a random head.
#   python tools/train.py configs/embedded/dinov2-s_fmnist_lp.py \
#       --work-dir work_dirs/embedded/lp_seed0
#   python tools/train.py configs/embedded/dinov2-s_fmnist_lpft.py \
#       --work-dir work_dirs/embedded/lpft_seed0 \
#       --cfg-options load_from=work_dirs/embedded/lp_seed0/epoch_2.pth
# The default below is stage 1's last checkpoint under this schedule (2 epochs); pass
# `load_from=` for another schedule (e.g. epoch_1.pth after a 1-epoch LP).
# `load_from` loads the weights only (no optimizer state): the FT stage starts a fresh AdamW.
# Testing: `tools/test.py CONFIG CKPT` without a `load_from=` cfg-option (test.py applies
# --cfg-options after it sets load_from=CKPT, so such an option would replace the checkpoint).
_base_ = ['./dinov2-s_fmnist_ft.py']
load_from = 'work_dirs/embedded/lp_seed0/epoch_2.pth'
test_evaluator = dict(type='IDOODAccuracy', tag='LP-FT')
