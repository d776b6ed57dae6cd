# LP-FT stage 2: vanilla fine-tuning as mnist-cnn_ft_1xb16-5e_uci-digits.py, started from the
# LP checkpoint (stage 1: mnist-cnn_lp_1xb16-5e_uci-digits.py):
#   python tools/train.py configs/digits/mnist-cnn_lp_1xb16-5e_uci-digits.py \
#       --work-dir work_dirs/digits/lp_seed0
#   python tools/train.py configs/digits/mnist-cnn_lp-ft_1xb16-5e_uci-digits.py \
#       --work-dir work_dirs/digits/lpft_seed0 \
#       --cfg-options load_from=work_dirs/digits/lp_seed0/epoch_5.pth
# `load_from` loads the weights only (a fresh Adam). The default below is stage 1's last
# checkpoint in its default work dir. Test with `tools/test.py CONFIG CKPT` (no load_from=).
# Knob: --cfg-options optim_wrapper.optimizer.lr=3e-4
_base_ = ['./_base_/mnist-cnn_1xb16-5e_uci-digits.py', '../_base_/methods/ft.py']
load_from = 'work_dirs/mnist-cnn_lp_1xb16-5e_uci-digits/epoch_5.pth'
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0))
test_evaluator = dict(type='IDOODAccuracy', tag='LP-FT')
