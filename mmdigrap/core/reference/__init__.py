"""One plain per-tensor reference loop per method: what the tests and benchmarks compare to.

Slow and literal on purpose (Python loops, ``.item()``, ``if`` on tensor values), written from
the papers' algorithms and the reference repositories (``docs/algorithm.md``). Pure PyTorch.
"""
from .digrap import ReferenceDiGraP
from .digrap_variants import ReferenceDiGraPVariant
from .ftp import ReferenceFTP
from .l2sp import ReferenceL2SPAdam
from .spd import ReferenceAdamSPD
from .tpgm import ReferenceTPGM, ReferenceTPGMTrainer

__all__ = ['ReferenceDiGraP', 'ReferenceDiGraPVariant', 'ReferenceL2SPAdam', 'ReferenceFTP',
           'ReferenceAdamSPD', 'ReferenceTPGM', 'ReferenceTPGMTrainer']
