"""The torch.optim face: optimizers that wrap any already-built base optimizer.

One file per method (mirroring ``mmdigrap/core/baselines/``), all on
:class:`~mmdigrap.optim.gradient_projection.GradientProjectionOptimizer`.
"""
from .digrap import DiGraP
from .fixed_digrap import FixedDiGraP
from .ftp import FTP
from .gradient_projection import GradientProjectionOptimizer, GroupDefault  # noqa: F401
from .l2sp import L2SP
from .spd import SPD
from .tpgm import TPGM

__all__ = ['DiGraP', 'GradientProjectionOptimizer', 'L2SP', 'FTP', 'SPD', 'TPGM', 'FixedDiGraP']
