"""One plain per-tensor reference loop per method: what the tests and benchmarks compare to.

Slow and literal on purpose, written from the papers' algorithms and the reference
repositories (``docs/algorithm.md``) in their style: Python loops over tensors, lists indexed by
position, a global step counter, ``.item()`` and Python ``if`` on tensor values. Pure PyTorch.
"""
from .digrap import ReferenceDiGraP
from .digrap_variants import ReferenceDiGraPVariant
from .ftp import ReferenceFTP
from .l2sp import ReferenceL2SPAdam
from .spd import ReferenceAdamSPD
from .tpgm import ReferenceTPGM, ReferenceTPGMTrainer

__all__ = ['ReferenceDiGraP', 'ReferenceDiGraPVariant', 'ReferenceL2SPAdam', 'ReferenceFTP',
           'ReferenceAdamSPD', 'ReferenceTPGM', 'ReferenceTPGMTrainer']
