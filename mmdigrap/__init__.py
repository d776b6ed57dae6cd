"""mmdigrap: robust fine-tuning for OpenMMLab.

Importing this package registers everything (optimizer wrappers, hooks, datasets, metrics,
models) into the mmengine / mmpretrain registries, so a config only needs::

    custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)
"""
from .core import *  # noqa: F401,F403  (pure-torch math, no mmengine)
from .optim import *  # noqa: F401,F403  (torch.optim face)
from .version import __version__  # noqa: F401

try:  # the OpenMMLab faces; the pure-torch part stays usable without mmengine
    import mmengine  # noqa: F401
except ImportError:  # pragma: no cover
    _HAS_MMENGINE = False
else:
    _HAS_MMENGINE = True
    from . import datasets, engine, evaluation, models  # noqa: F401  (registers modules)
    from .engine.runtime import install_checkpoint_safety
    install_checkpoint_safety()  # weights_only=True + mmengine's classes allow-listed
