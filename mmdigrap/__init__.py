"""mmdigrap: robust fine-tuning for OpenMMLab.

Importing this package registers everything (optimizer wrappers, hooks, datasets, metrics,
models) into the mmengine / mmpretrain registries, so a config only needs::

    custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)
"""
from .version import __version__
from .core import *  # noqa: F401,F403  (pure-torch math, no mmengine)
from .optim import *  # noqa: F401,F403  (torch.optim face)

try:  # the OpenMMLab faces; the pure-torch part stays usable without mmengine
    import mmengine  # noqa: F401
except ImportError:  # pragma: no cover
    _HAS_MMENGINE = False
else:
    _HAS_MMENGINE = True
    from . import engine, evaluation, datasets, models  # noqa: F401  (registers modules)
    from .engine.runtime import install_checkpoint_safety
    install_checkpoint_safety()  # weights_only=True + mmengine's classes allow-listed
