"""Deprecated module: the baselines now live in one file per method.

``from mmdigrap.optim.baselines import FTP`` keeps working (with a DeprecationWarning); use
``from mmdigrap.optim import FTP`` (files ``l2sp.py``, ``ftp.py``, ``spd.py``, ``tpgm.py``,
``fixed_digrap.py``, mirroring ``mmdigrap/core/baselines/``).
"""
import warnings

from .fixed_digrap import FixedDiGraP
from .ftp import FTP
from .l2sp import L2SP
from .spd import SPD
from .tpgm import TPGM

__all__ = ['L2SP', 'FTP', 'SPD', 'TPGM', 'FixedDiGraP']

warnings.warn('mmdigrap.optim.baselines is deprecated: import L2SP, FTP, SPD, TPGM and '
              'FixedDiGraP from mmdigrap.optim', DeprecationWarning, stacklevel=2)
