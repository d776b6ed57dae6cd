"""Heads (mmpretrain ``MODELS``) that mmpretrain lacks."""
from .clip_cls_head import CLIPClsHead

__all__ = ['CLIPClsHead']
