# Zero-shot: the pre-trained MNIST CNN (its own 10-way head), no training. Test it with
#   python tools/test.py configs/digits/mnist-cnn_zeroshot_uci-digits.py \
#       checkpoints/mnist-cnn_digit-recognizer.pth --work-dir work_dirs/digits/zeroshot
# (the converted checkpoint; tools/install.sh writes it). Everything else is the FT config.
_base_ = ['./mnist-cnn_ft_1xb16-5e_uci-digits.py']
load_from = 'checkpoints/mnist-cnn_digit-recognizer.pth'  # = the model's init_cfg checkpoint
test_evaluator = dict(type='IDOODAccuracy', tag='zero-shot')
