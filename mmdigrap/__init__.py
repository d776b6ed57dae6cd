"""mmdigrap: robust fine-tuning for OpenMMLab.

Importing this package registers everything (optimizer wrappers, hooks, datasets, metrics,
models) into the mmengine / mmpretrain registries, so a config only needs::

    custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)

Start-up: while this package imports mmpretrain, ``mmdet`` is not importable
(:data:`DEFERRED_IMPORTS`). mmpretrain 1.2.0 imports all of mmdet's models at its own import
time (with scipy, scikit-learn, matplotlib, numba: ~40% of ``import mmdigrap``) only to
register one class of its own, ``ResLayerExtraNorm``, into mmdet's registry; without mmdet
(or with mmcv-lite) it skips that, as it does here. Nothing of this package or its configs
uses that class; mmdet itself imports normally afterwards (a config with
``default_scope='mmdet'`` or an ``mmdet::`` base imports it when it is built). To get
mmpretrain's mmdet bridge, ``import mmdet`` before ``import mmdigrap``.
"""
import sys
from contextlib import contextmanager

from .core import *  # noqa: F401,F403  (pure-torch math, no mmengine)
from .optim import *  # noqa: F401,F403  (torch.optim face)
from .version import __version__  # noqa: F401

#: Packages that are not importable while this package imports the OpenMMLab stack (see the
#: module docstring); each only if it is not imported yet.
DEFERRED_IMPORTS = ('mmdet', )


@contextmanager
def _not_importable(names):
    """In the block, ``import name`` raises ``ModuleNotFoundError`` for each of ``names`` not
    imported yet (a ``None`` entry in ``sys.modules``); afterwards they import normally."""
    blocked = [n for n in names if n not in sys.modules]
    for n in blocked:
        sys.modules[n] = None
    try:
        yield blocked
    finally:
        for n in blocked:
            if n in sys.modules and sys.modules[n] is None:
                del sys.modules[n]


try:  # the OpenMMLab faces; the pure-torch part stays usable without mmengine
    import mmengine  # noqa: F401
except ImportError:  # pragma: no cover
    _HAS_MMENGINE = False
else:
    _HAS_MMENGINE = True
    with _not_importable(DEFERRED_IMPORTS):
        from . import datasets, engine, evaluation, models  # noqa: F401  (registers modules)
    from .engine.runtime import install_checkpoint_safety
    install_checkpoint_safety()  # weights_only=True + mmengine's classes allow-listed
