"""mmengine OptimWrappers of the baselines (one plain and one AMP flavour each).

.. code-block:: python

    # L2-SP
    optim_wrapper = dict(type='L2SPOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
                         l2sp=dict(weight=0.01, exclude=[r'^head\\.']))
    # FTP: AdamP = FTP around Adam(W)
    optim_wrapper = dict(type='FTPOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
                         ftp=dict(k=1.0, mu=1e-2, exclude=[r'^head\\.']))
    # SPD: AdamSPD = SPD around Adam without weight decay
    optim_wrapper = dict(type='SPDOptimWrapper',
                         optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0),
                         spd=dict(weight=0.5, exclude=[r'^head\\.']))
    # TPGM: needs TPGMHook (validation batches) as well
    optim_wrapper = dict(type='TPGMOptimWrapper',
                         optimizer=dict(type='SGD', lr=1e-2, momentum=0.9, nesterov=True),
                         tpgm=dict(proj_lr=1e-2, norm='mars', max_iters=1,
                                   exclude=[r'^head\\.']))
    custom_hooks = [dict(type='RobustFTHook'), dict(type='TPGMHook', interval=1)]
    # PCGrad-style fixed-strength projection
    optim_wrapper = dict(type='FixedDiGraPOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
                         digrap=dict(omega=1.0))

Every wrapper also exists as ``<Name>AmpOptimWrapper`` (GradScaler; bfloat16 autocast on CPU).
Build them with ``constructor='RobustFTOptimWrapperConstructor'`` (parameter names for
``exclude`` at build time) and use ``custom_hooks=[dict(type='RobustFTHook')]`` with all of
them: it snapshots theta0 after the pre-trained weights are loaded, refuses a random init and
logs ``conflict_rate`` / ``dist_to_anchor`` (and the method's statistics).
"""
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..optim import FTP, L2SP, SPD, TPGM, FixedDiGraP
from .optim_wrapper import CPUCompatibleAmpOptimWrapper, GradientProjectionOptimWrapperMixin

__all__ = ['L2SPOptimWrapper', 'L2SPAmpOptimWrapper', 'FTPOptimWrapper', 'FTPAmpOptimWrapper',
           'SPDOptimWrapper', 'SPDAmpOptimWrapper', 'TPGMOptimWrapper', 'TPGMAmpOptimWrapper',
           'FixedDiGraPOptimWrapper', 'FixedDiGraPAmpOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class L2SPOptimWrapper(GradientProjectionOptimWrapperMixin, OptimWrapper):
    """:class:`~mmdigrap.optim.L2SP` (L2-SP) as an mmengine OptimWrapper; options in
    ``l2sp=dict(...)``."""

    optimizer_cls = L2SP
    cfg_key = 'l2sp'


@OPTIM_WRAPPERS.register_module()
class L2SPAmpOptimWrapper(GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper):
    """:class:`~mmdigrap.optim.L2SP` with mixed precision (GradScaler; bf16 on CPU)."""

    optimizer_cls = L2SP
    cfg_key = 'l2sp'


@OPTIM_WRAPPERS.register_module()
class FTPOptimWrapper(GradientProjectionOptimWrapperMixin, OptimWrapper):
    """:class:`~mmdigrap.optim.FTP` (FTP) as an mmengine OptimWrapper; options in
    ``ftp=dict(...)``."""

    optimizer_cls = FTP
    cfg_key = 'ftp'


@OPTIM_WRAPPERS.register_module()
class FTPAmpOptimWrapper(GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper):
    """:class:`~mmdigrap.optim.FTP` with mixed precision (GradScaler; bf16 on CPU)."""

    optimizer_cls = FTP
    cfg_key = 'ftp'


@OPTIM_WRAPPERS.register_module()
class SPDOptimWrapper(GradientProjectionOptimWrapperMixin, OptimWrapper):
    """:class:`~mmdigrap.optim.SPD` (SPD) as an mmengine OptimWrapper; options in
    ``spd=dict(...)``."""

    optimizer_cls = SPD
    cfg_key = 'spd'


@OPTIM_WRAPPERS.register_module()
class SPDAmpOptimWrapper(GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper):
    """:class:`~mmdigrap.optim.SPD` with mixed precision (GradScaler; bf16 on CPU)."""

    optimizer_cls = SPD
    cfg_key = 'spd'


@OPTIM_WRAPPERS.register_module()
class TPGMOptimWrapper(GradientProjectionOptimWrapperMixin, OptimWrapper):
    """:class:`~mmdigrap.optim.TPGM` (TPGM (with TPGMHook)) as an mmengine OptimWrapper; options in
    ``tpgm=dict(...)``."""

    optimizer_cls = TPGM
    cfg_key = 'tpgm'


@OPTIM_WRAPPERS.register_module()
class TPGMAmpOptimWrapper(GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper):
    """:class:`~mmdigrap.optim.TPGM` with mixed precision (GradScaler; bf16 on CPU)."""

    optimizer_cls = TPGM
    cfg_key = 'tpgm'


@OPTIM_WRAPPERS.register_module()
class FixedDiGraPOptimWrapper(GradientProjectionOptimWrapperMixin, OptimWrapper):
    """:class:`~mmdigrap.optim.FixedDiGraP` (the fixed-strength DiGraP ablation) as an mmengine
    OptimWrapper; options in ``digrap=dict(...)``."""

    optimizer_cls = FixedDiGraP
    cfg_key = 'digrap'


@OPTIM_WRAPPERS.register_module()
class FixedDiGraPAmpOptimWrapper(GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper):
    """:class:`~mmdigrap.optim.FixedDiGraP` with mixed precision (GradScaler; bf16 on CPU)."""

    optimizer_cls = FixedDiGraP
    cfg_key = 'digrap'
