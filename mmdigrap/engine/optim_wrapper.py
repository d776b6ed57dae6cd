"""The mmengine face: OptimWrappers that a config names.

.. code-block:: python

    optim_wrapper = dict(
        type='DiGraPOptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
        digrap=dict(mu=0.5, exclude=[r'^head\\.']),
        clip_grad=dict(max_norm=1.0), accumulative_counts=1)
    custom_hooks = [dict(type='DiGraPHook')]

mmengine's optimizer constructor builds the base optimizer (``paramwise_cfg`` applies as
usual); the wrapper then wraps it in the method's torch optimizer (``mmdigrap.optim``). Order
inside an update: (AMP unscale) -> ``clip_grad`` -> the method's gradient transform -> base step.
``DiGraPHook`` hands the parameter names to the wrapper and logs omegas.
"""
from typing import Dict, Optional, Type, Union

import torch
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..optim import DiGraP, GradientProjectionOptimizer

__all__ = ['GradientProjectionOptimWrapperMixin', 'CPUCompatibleAmpOptimWrapper',
           'DiGraPOptimWrapper', 'DiGraPAmpOptimWrapper', 'register_method_wrappers']


class GradientProjectionOptimWrapperMixin:
    """Wraps the optimizer built by mmengine in ``optimizer_cls(optimizer, **cfg[cfg_key])``."""

    optimizer_cls: Type[GradientProjectionOptimizer] = DiGraP
    cfg_key: str = 'digrap'

    def __init__(self, *args, **kwargs):
        method_cfg = kwargs.pop(self.cfg_key, None) or {}
        if not isinstance(method_cfg, dict):
            raise TypeError(f'{type(self).__name__}: `{self.cfg_key}` must be a dict of '
                            f'{self.optimizer_cls.__name__} options, got {method_cfg!r}')
        super().__init__(*args, **kwargs)
        self.optimizer = self.optimizer_cls(self.optimizer, **dict(method_cfg))

    @property
    def projection(self) -> GradientProjectionOptimizer:
        """The method's torch optimizer (``self.optimizer``)."""
        return self.optimizer

    def set_param_names(self, named_parameters) -> None:
        self.optimizer.set_param_names(named_parameters)

    def omegas(self) -> Dict[str, float]:
        """{parameter name: omega}; {} for methods without an omega."""
        fn = getattr(self.optimizer, 'omegas', None)
        return fn() if fn is not None else {}


class CPUCompatibleAmpOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` that also runs on a CPU-only host.

    mmengine 0.10.7 asserts a GPU. On CPU this builds the same wrapper on
    ``torch.amp.GradScaler('cpu')`` with ``bfloat16`` autocast (the only CPU autocast dtype).

    Raises:
        ValueError: ``dtype='float16'`` on a host without an accelerator.
    """

    def __init__(self, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Optional[Union[str, torch.dtype]] = None, use_fsdp: bool = False,
                 **kwargs):
        if (is_cuda_available() or is_npu_available() or is_mlu_available()
                or is_musa_available()):
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        if dtype is None:
            dtype = torch.bfloat16
        if dtype != torch.bfloat16:
            raise ValueError(f'{type(self).__name__}: on a CPU-only host autocast supports '
                             f"bfloat16 only, got {dtype}; set dtype='bfloat16' (or train on GPU)")
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu')
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
        else:
            raise TypeError(f'loss_scale must be a float, a dict or "dynamic", got {loss_scale}')
        self.cast_dtype = dtype


def register_method_wrappers(prefix: str, optimizer_cls: Type[GradientProjectionOptimizer],
                             cfg_key: str):
    """Create and register ``<prefix>OptimWrapper`` and ``<prefix>AmpOptimWrapper``.

    Used once per method (DiGraP here; L2-SP, FTP, SPD, ... in their modules) so every method
    has the same mmengine face. Returns the two classes.
    """
    doc = (f'``{optimizer_cls.__name__}`` as an mmengine OptimWrapper; method options go in '
           f'``{cfg_key}=dict(...)`` (see :class:`{optimizer_cls.__module__}.'
           f'{optimizer_cls.__name__}`).')
    attrs = dict(optimizer_cls=optimizer_cls, cfg_key=cfg_key, __doc__=doc,
                 __module__=__name__)
    plain = type(f'{prefix}OptimWrapper', (GradientProjectionOptimWrapperMixin, OptimWrapper),
                 dict(attrs))
    amp = type(f'{prefix}AmpOptimWrapper',
               (GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper),
               dict(attrs, __doc__=doc + ' Mixed precision (GradScaler; bf16 on CPU).'))
    OPTIM_WRAPPERS.register_module(module=plain)
    OPTIM_WRAPPERS.register_module(module=amp)
    return plain, amp


DiGraPOptimWrapper, DiGraPAmpOptimWrapper = register_method_wrappers('DiGraP', DiGraP, 'digrap')
