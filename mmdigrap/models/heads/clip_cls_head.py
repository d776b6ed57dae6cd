"""CLIP's image head as an mmpretrain classifier head (the CLIP zero-shot classifier)."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import nn

__all__ = ['CLIPClsHead']


@MODELS.register_module()
class CLIPClsHead(ClsHead):
    """CLIP's image head as a classifier: ``logits = fc(normalize(x @ proj))``.

    With ``proj`` = CLIP's visual projection (``visual_proj.proj`` in mmpretrain's converted
    checkpoints) and ``fc.weight`` = logit_scale x the L2-normalised class text embeddings
    (``tools/clip_zeroshot_head.py``), the untrained classifier *is* CLIP zero-shot
    (the WiSE-FT / FLYP / FTP / TPGM starting point for CLIP ViT-B/16 on ImageNet).

    Args:
        num_classes: number of classes.
        in_channels: backbone feature size (768 for ViT-B).
        proj_channels: CLIP embedding size (512 for ViT-B/16); ``None`` drops the projection.
        normalize: L2-normalise the projected feature (CLIP does).
        bias: give ``fc`` a bias (zero in the zero-shot head).
        **kwargs: ``loss``, ``topk``, ``cal_acc``, ``init_cfg`` of mmpretrain's ``ClsHead``.

    Parameters (checkpoint keys under ``head.``): ``proj`` (in_channels x proj_channels),
    ``fc.weight`` (num_classes x proj_channels), ``fc.bias``.
    """

    def __init__(self, num_classes: int, in_channels: int = 768,
                 proj_channels: Optional[int] = 512, normalize: bool = True, bias: bool = True,
                 init_cfg: Optional[dict] = dict(type='Normal', layer='Linear', std=0.01),
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be a positive integer')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.normalize = normalize
        if proj_channels:
            self.proj = nn.Parameter(in_channels ** -0.5 * torch.randn(in_channels, proj_channels))
        else:
            self.register_parameter('proj', None)
        self.fc = nn.Linear(proj_channels or in_channels, num_classes, bias=bias)

    def pre_logits(self, feats) -> torch.Tensor:
        x = feats[-1] if isinstance(feats, (list, tuple)) else feats
        if isinstance(x, (list, tuple)):  # ViT out_type='cls_token' with extra outputs
            x = x[-1]
        if self.proj is not None:
            x = x @ self.proj
        if self.normalize:
            x = F.normalize(x, dim=-1)
        return x

    def forward(self, feats) -> torch.Tensor:
        return self.fc(self.pre_logits(feats))
