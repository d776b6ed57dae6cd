"""Pure-PyTorch math of each robust fine-tuning method (no mmengine import)."""
from .anchors import ANCHOR_MODES, AnchorPolicy, compile_exclude, match_excluded
from .digrap import (
                     HYPERGRAD_NORMS,
                     DiGraPStepResult,
                     batched_dot,
                     digrap_project_,
                     hypergradient,
                     omega_adam_update,
)

__all__ = [
    'ANCHOR_MODES', 'AnchorPolicy', 'compile_exclude', 'match_excluded', 'HYPERGRAD_NORMS',
    'DiGraPStepResult', 'batched_dot', 'digrap_project_', 'hypergradient', 'omega_adam_update'
]
