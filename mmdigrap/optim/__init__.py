"""The torch.optim face: optimizers that wrap any already-built base optimizer."""
from .digrap import DiGraP
from .gradient_projection import GradientProjectionOptimizer

__all__ = ['DiGraP', 'GradientProjectionOptimizer']
