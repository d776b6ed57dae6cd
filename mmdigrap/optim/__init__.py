"""The torch.optim face: optimizers that wrap any already-built base optimizer."""
from .digrap import DiGraP
from .gradient_projection import GradientProjectionOptimizer

__all__ = ['DiGraP', 'GradientProjectionOptimizer']
from .baselines import FTP, L2SP, SPD, TPGM, FixedDiGraP  # noqa: E402

__all__ += ['L2SP', 'FTP', 'SPD', 'TPGM', 'FixedDiGraP']
