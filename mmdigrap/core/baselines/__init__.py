"""Pure-PyTorch math of the baselines (algorithm.md §13), batched like ``core/digrap.py``.

* :mod:`.l2sp`: L2-SP, coupled ``g + weight * (theta - theta0)`` (algorithm.md §13.4).
* :mod:`.ftp`: FTP, post-step projection with a trainable per-tensor radius (algorithm.md §13.5).
* :mod:`.spd`: SPD, selective post-step decay towards theta0 (algorithm.md §13.6).
* :mod:`.tpgm`: TPGM, projection radii trained on validation data (algorithm.md §13.7).

The PCGrad-style fixed-strength projection (algorithm.md §13.8) is DiGraP with a frozen omega
(``core.digrap.digrap_project_(..., trainable=False)``).
"""
from .ftp import (
                  FTP_EPS,
                  FTPStepResult,
                  ftp_project_,
                  mars_row_norms,
                  row_dot_sum,
                  scalar_adam_update,
)
from .l2sp import L2SPStepResult, l2sp_grad_
from .spd import SPD_NORMS, SPDDecay, spd_condition, spd_decay_coefficients, spd_norms
from .tpgm import (
                  TPGM_EPS,
                  TPGM_NORMS,
                  tpgm_clip_radii,
                  tpgm_init_radius,
                  tpgm_norms,
                  tpgm_project,
                  tpgm_ratios,
)

__all__ = [
    'FTP_EPS', 'FTPStepResult', 'ftp_project_', 'mars_row_norms', 'row_dot_sum',
    'scalar_adam_update', 'L2SPStepResult', 'l2sp_grad_', 'SPD_NORMS', 'SPDDecay',
    'spd_condition', 'spd_decay_coefficients', 'spd_norms', 'TPGM_EPS', 'TPGM_NORMS',
    'tpgm_clip_radii', 'tpgm_init_radius', 'tpgm_norms', 'tpgm_project', 'tpgm_ratios'
]
