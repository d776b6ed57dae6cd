"""mmengine OptimWrappers of the baselines (one plain and one AMP flavour each).

.. code-block:: python

    # L2-SP (spec 4.4)
    optim_wrapper = dict(type='L2SPOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
                         l2sp=dict(weight=0.01, exclude=[r'^head\\.']))
    # FTP (spec 4.5): AdamP = FTP around Adam(W)
    optim_wrapper = dict(type='FTPOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
                         ftp=dict(k=1.0, mu=1e-2, exclude=[r'^head\\.']))
    # SPD (spec 4.6): AdamSPD = SPD around Adam without weight decay
    optim_wrapper = dict(type='SPDOptimWrapper',
                         optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0),
                         spd=dict(weight=0.5, exclude=[r'^head\\.']))
    # TPGM (spec 4.7): needs TPGMHook (validation batches) as well
    optim_wrapper = dict(type='TPGMOptimWrapper',
                         optimizer=dict(type='SGD', lr=1e-2, momentum=0.9, nesterov=True),
                         tpgm=dict(proj_lr=1e-2, norm='mars', max_iters=1,
                                   exclude=[r'^head\\.']))
    custom_hooks = [dict(type='DiGraPHook'), dict(type='TPGMHook', interval=1)]
    # PCGrad-style fixed-strength projection (spec 4.8)
    optim_wrapper = dict(type='FixedDiGraPOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
                         digrap=dict(omega=1.0))

Every wrapper also exists as ``<Name>AmpOptimWrapper`` (GradScaler; bfloat16 autocast on CPU).
Use ``custom_hooks=[dict(type='DiGraPHook')]`` with all of them: it snapshots theta0 after the
pre-trained weights are loaded, passes the parameter names (``exclude``) and logs
``conflict_rate`` / ``dist_to_anchor`` (and the method's statistics).
"""
from ..optim.baselines import FTP, L2SP, SPD, TPGM, FixedDiGraP
from .optim_wrapper import register_method_wrappers

__all__ = ['L2SPOptimWrapper', 'L2SPAmpOptimWrapper', 'FTPOptimWrapper', 'FTPAmpOptimWrapper',
           'SPDOptimWrapper', 'SPDAmpOptimWrapper', 'TPGMOptimWrapper', 'TPGMAmpOptimWrapper',
           'FixedDiGraPOptimWrapper', 'FixedDiGraPAmpOptimWrapper']

L2SPOptimWrapper, L2SPAmpOptimWrapper = register_method_wrappers('L2SP', L2SP, 'l2sp')
FTPOptimWrapper, FTPAmpOptimWrapper = register_method_wrappers('FTP', FTP, 'ftp')
SPDOptimWrapper, SPDAmpOptimWrapper = register_method_wrappers('SPD', SPD, 'spd')
TPGMOptimWrapper, TPGMAmpOptimWrapper = register_method_wrappers('TPGM', TPGM, 'tpgm')
FixedDiGraPOptimWrapper, FixedDiGraPAmpOptimWrapper = register_method_wrappers(
    'FixedDiGraP', FixedDiGraP, 'digrap')
