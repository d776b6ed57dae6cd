"""The mmengine face: the OptimWrappers a config names, and the constructor that feeds them.

.. code-block:: python

    optim_wrapper = dict(
        type='DiGraPOptimWrapper',
        constructor='RobustFTOptimWrapperConstructor',  # hands parameter names over
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
        digrap=dict(mu=0.5, exclude=[r'^head\\.']),
        paramwise_cfg=dict(custom_keys={'neck': dict(mu=0.1)}),  # a per-group mu
        clip_grad=dict(max_norm=1.0), accumulative_counts=1)
    custom_hooks = [dict(type='RobustFTHook')]

mmengine's optimizer constructor builds the base optimizer (``paramwise_cfg`` applies as
usual, custom keys such as ``mu`` land in the param groups); the wrapper then wraps it in the
method's torch optimizer (``mmdigrap.optim``). Order inside an update: (AMP unscale) ->
``clip_grad`` -> the method's gradient transform -> base step.
"""
import difflib
import inspect
import warnings
from typing import Dict, Optional, Type, Union

import torch
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.optim import AmpOptimWrapper, DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS

from ..optim import DiGraP, GradientProjectionOptimizer
from ..optim.gradient_projection import DUPLICATE_PARAM_MSG
from ..utils import unwrap_model

__all__ = ['GradientProjectionOptimWrapperMixin', 'CPUCompatibleAmpOptimWrapper',
           'DiGraPOptimWrapper', 'DiGraPAmpOptimWrapper', 'RobustFTOptimWrapperConstructor',
           'register_method_wrappers']


def _method_options(optimizer_cls: Type[GradientProjectionOptimizer]):
    """The keyword-only options of a method's constructor (what ``<cfg_key>=dict()`` takes)."""
    sig = inspect.signature(optimizer_cls.__init__)
    return [n for n, p in sig.parameters.items()
            if p.kind == p.KEYWORD_ONLY and n != 'named_parameters']


class GradientProjectionOptimWrapperMixin:
    """Wraps the optimizer built by mmengine in ``optimizer_cls(optimizer, **cfg[cfg_key])``.

    Raises:
        TypeError: ``cfg[cfg_key]`` is not a dict, or holds an unknown option (the message lists
            the valid ones and the closest match).
    """

    optimizer_cls: Type[GradientProjectionOptimizer] = DiGraP
    cfg_key: str = 'digrap'

    def __init__(self, *args, **kwargs):
        method_cfg = kwargs.pop(self.cfg_key, None) or {}
        if not isinstance(method_cfg, dict):
            raise TypeError(f'{type(self).__name__}: `{self.cfg_key}` must be a dict of '
                            f'{self.optimizer_cls.__name__} options, got {method_cfg!r}')
        valid = _method_options(self.optimizer_cls)
        for key in method_cfg:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f' Did you mean {close[0]!r}?' if close else ''
                raise TypeError(
                    f'{type(self).__name__}: unknown option {self.cfg_key}.{key}.{hint} Valid '
                    f'{self.optimizer_cls.__name__} options: {", ".join(valid)}.')
        super().__init__(*args, **kwargs)
        self.optimizer = self.optimizer_cls(self.optimizer, **dict(method_cfg))
        if getattr(self, 'base_param_settings', None) is not None:
            # mmengine's extra "group" for its schedulers (several groups) gets the method keys
            for key, val in self.optimizer.method_defaults.items():
                self.base_param_settings.setdefault(key, val)

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


@OPTIM_WRAPPERS.register_module()
class DiGraPOptimWrapper(GradientProjectionOptimWrapperMixin, OptimWrapper):
    """:class:`~mmdigrap.optim.DiGraP` as an mmengine OptimWrapper; options in
    ``digrap=dict(...)``."""

    optimizer_cls = DiGraP
    cfg_key = 'digrap'


@OPTIM_WRAPPERS.register_module()
class DiGraPAmpOptimWrapper(GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper):
    """:class:`~mmdigrap.optim.DiGraP` with mixed precision (GradScaler; bf16 on CPU)."""

    optimizer_cls = DiGraP
    cfg_key = 'digrap'


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RobustFTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, plus what the robust fine-tuning wrappers need.

    * Hands the parameter names of the *unwrapped* model (never a ``module.`` prefix) to the
      method's optimizer right after it is built, so ``exclude`` patterns are resolved at build
      time (no hook needed for that).
    * Catches torch's "some parameters appear in more than one parameter group" (a module
      shared by two parents under ``paramwise_cfg``) and adds the fix.

    Everything else, ``paramwise_cfg`` included (custom keys such as ``mu`` reach the param
    groups), is :class:`mmengine.optim.DefaultOptimWrapperConstructor`. It works with a plain
    ``OptimWrapper`` too. Use it with ``optim_wrapper=dict(constructor=
    'RobustFTOptimWrapperConstructor', ...)``.

    Raises:
        ValueError: a parameter would be in two param groups; the message names
            ``paramwise_cfg=dict(bypass_duplicate=True)``.
    """

    def __call__(self, model: torch.nn.Module) -> OptimWrapper:
        model = unwrap_model(model)
        try:
            optim_wrapper = super().__call__(model)
        except ValueError as err:
            if DUPLICATE_PARAM_MSG not in str(err):
                raise
            raise ValueError(
                f'{err}. The model shares a module (or tensor) between two parents, and '
                '`paramwise_cfg` put it in two param groups. Add '
                '`paramwise_cfg=dict(bypass_duplicate=True, ...)` to optim_wrapper to keep the '
                'first occurrence only.') from err
        optimizer = getattr(optim_wrapper, 'optimizer', None)
        if isinstance(optimizer, GradientProjectionOptimizer):
            optimizer.set_param_names(model.named_parameters())
        return optim_wrapper


def register_method_wrappers(prefix: str, optimizer_cls: Type[GradientProjectionOptimizer],
                             cfg_key: str):
    """Deprecated: write the two classes out (see :class:`DiGraPOptimWrapper`).

    Creates and registers ``<prefix>OptimWrapper`` and ``<prefix>AmpOptimWrapper`` in the
    calling module (assign them to module-level names of the same spelling so that they
    pickle). Returns the two classes.
    """
    warnings.warn('register_method_wrappers is deprecated: write the wrapper classes out '
                  '(class MyOptimWrapper(GradientProjectionOptimWrapperMixin, OptimWrapper): '
                  'optimizer_cls = ...; cfg_key = ...), as mmdigrap.engine does',
                  DeprecationWarning, stacklevel=2)
    module = inspect.currentframe().f_back.f_globals.get('__name__', __name__)
    attrs = dict(optimizer_cls=optimizer_cls, cfg_key=cfg_key, __module__=module)
    plain = type(f'{prefix}OptimWrapper', (GradientProjectionOptimWrapperMixin, OptimWrapper),
                 dict(attrs))
    amp = type(f'{prefix}AmpOptimWrapper',
               (GradientProjectionOptimWrapperMixin, CPUCompatibleAmpOptimWrapper), dict(attrs))
    OPTIM_WRAPPERS.register_module(module=plain)
    OPTIM_WRAPPERS.register_module(module=amp)
    return plain, amp
