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
import numbers
import warnings
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper, DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS

from ..optim import DiGraP, GradientProjectionOptimizer
from ..optim.gradient_projection import DUPLICATE_PARAM_MSG
from ..utils import markdown_table, unwrap_model

__all__ = ['GradientProjectionOptimWrapperMixin', 'CPUCompatibleAmpOptimWrapper',
           'DiGraPOptimWrapper', 'DiGraPAmpOptimWrapper', 'RobustFTOptimWrapperConstructor',
           'register_method_wrappers', 'param_group_table', 'warn_decay_towards_zero',
           'report_param_groups']


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
    * Logs the param groups once as a table (:func:`report_param_groups`: lr, weight_decay and
      the method's knobs per group, after ``paramwise_cfg``) and warns when a method that
      anchors to theta0 wraps a base optimizer with weight decay
      (:func:`warn_decay_towards_zero`).

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
        if isinstance(optimizer, torch.optim.Optimizer):
            report_param_groups(optimizer, names=model.named_parameters())
        return optim_wrapper


# ------------------------------------------------------------------ param groups, said out loud
def _fmt(value: Any) -> str:
    """A table cell: numbers with 4 significant digits, tensors as numbers, the rest ``str``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def _ranges(indices: List[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``'0-2,5,7-8'``."""
    out, start = [], None
    for i, idx in enumerate(indices):
        if start is None:
            start = idx
        if i + 1 == len(indices) or indices[i + 1] != idx + 1:
            out.append(str(start) if start == idx else f'{start}-{idx}')
            start = None
    return ','.join(out)


def _group_lr(group: Dict[str, Any]) -> Any:
    """The group's lr before any scheduler (mmengine's schedulers keep it as ``initial_lr``)."""
    return group.get('initial_lr', group.get('lr'))


def _name_lookup(optimizer: torch.optim.Optimizer, names) -> Dict[int, str]:
    """{id(param): name}: from ``names`` (``model.named_parameters()`` or a dict), else the
    method optimizer's own names (``'param<i>'`` when it has none)."""
    if names is not None:
        items = names.items() if isinstance(names, dict) else names
        return {id(p): n for n, p in items}
    if isinstance(optimizer, GradientProjectionOptimizer):
        return {id(p): n for n, p, _ in optimizer.managed_parameters()}
    return {}


def _is_managed(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> bool:
    """The method acts on ``p`` (not excluded, trainable); False for a plain optimizer."""
    return (isinstance(optimizer, GradientProjectionOptimizer) and p.requires_grad
            and not optimizer.is_excluded(p))


def param_group_table(optimizer: torch.optim.Optimizer, names=None) -> Tuple[str, List[Dict]]:
    """The param groups as one compact markdown table (plus the rows as dicts, for tests).

    Groups with the same lr, weight_decay and method knobs share one row (``paramwise_cfg``
    makes one group per tensor); ``groups`` lists their indices (``0-3,7``). Columns: groups,
    tensors, params (numbers of elements), managed (tensors the method acts on: not excluded,
    trainable; method optimizers only), lr (before schedulers: ``initial_lr`` once an mmengine
    scheduler has set it), weight_decay (``-`` when the base optimizer has none), the method's
    numeric knobs (``mu``, ``weight``, ``k``, ...) and every knob that differs between groups,
    and the first tensor's name. Knobs equal in all groups that are not numbers (betas, norm
    names, flags) are in the caption line instead.

    Args:
        optimizer: a torch optimizer, a :class:`GradientProjectionOptimizer` included.
        names: ``model.named_parameters()`` (or {name: param}); defaults to the method
            optimizer's names.

    Returns:
        (text, rows): ``text`` = a caption line, a newline, the table; ``rows`` = one dict per
        table row with the raw values (keys: the column names; ``groups`` a list of indices).
    """
    groups = optimizer.param_groups
    lookup = _name_lookup(optimizer, names)
    knobs = list(getattr(optimizer, 'method_defaults', {}) or {})
    varying = {k for k in knobs if len({repr(g.get(k)) for g in groups}) > 1}
    shown = [k for k in knobs if k in varying or (
        isinstance(groups[0].get(k), numbers.Number) and not isinstance(groups[0].get(k), bool))]
    managed_col = isinstance(optimizer, GradientProjectionOptimizer)
    rows: Dict[str, Dict[str, Any]] = {}
    for i, g in enumerate(groups):
        key = repr((_fmt(_group_lr(g)), _fmt(g.get('weight_decay', '-')),
                    [_fmt(g.get(k)) for k in shown]))
        row = rows.get(key)
        if row is None:
            first = next((lookup.get(id(p)) for p in g['params'] if id(p) in lookup), None)
            row = rows[key] = dict(groups=[], tensors=0, params=0, managed=0,
                                   lr=_group_lr(g), weight_decay=g.get('weight_decay', '-'),
                                   **{k: g.get(k) for k in shown},
                                   first_tensor=first or f'(group {i})')
        row['groups'].append(i)
        row['tensors'] += len(g['params'])
        row['params'] += sum(p.numel() for p in g['params'])
        row['managed'] += sum(_is_managed(optimizer, p) for p in g['params'])
    header = (['groups', 'tensors', 'params'] + (['managed'] if managed_col else [])
              + ['lr', 'weight_decay'] + shown + ['first tensor'])
    cells = [[_ranges(r['groups']), r['tensors'], r['params']]
             + ([r['managed']] if managed_col else [])
             + [_fmt(r['lr']), _fmt(r['weight_decay'])] + [_fmt(r[k]) for k in shown]
             + [r['first_tensor']] for r in rows.values()]
    table = markdown_table(header, cells, align=['l'] + ['r'] * (len(header) - 2) + ['l'])
    base = getattr(optimizer, 'base_optimizer', optimizer)
    name = type(optimizer).__name__
    if base is not optimizer:
        name += f' around {type(base).__name__}'
    common = [f'{k}={_fmt(groups[0].get(k))}' for k in knobs if k not in shown]
    caption = (f'{name}: {len(groups)} param group(s), '
               f'{sum(len(g["params"]) for g in groups)} tensors, '
               f'{sum(p.numel() for g in groups for p in g["params"])} params '
               '(lr before schedulers; weight_decay as the base optimizer applies it)'
               + (f'; in every group: {", ".join(common)}' if common else ''))
    return caption + '\n' + table, list(rows.values())


def warn_decay_towards_zero(optimizer: torch.optim.Optimizer, logger=None) -> List[int]:
    """Warn when a method that anchors to theta0 runs over a base optimizer with weight decay.

    Every method here (DiGraP, fixed DiGraP, L2-SP, SPD, FTP, TPGM) pulls or projects towards the
    pre-trained weights theta0 when ``anchor='pretrained'``; a non-zero ``weight_decay`` of the
    base optimizer (AdamW's decoupled decay, SGD/Adam's coupled L2) also pulls the same tensors
    towards 0. The paper (docs/algorithm.md) uses none. With ``anchor='zero'`` (LoRA/PEFT) both
    pull towards 0, so nothing is said. Only groups with ``lr != 0`` that hold tensors the method
    manages (not excluded, trainable) count.

    Args:
        optimizer: any torch optimizer (nothing is checked unless it is a
            :class:`GradientProjectionOptimizer` with a stored anchor).
        logger: where the WARNING line also goes (default: the current MMLogger).

    Returns:
        The indices of the offending param groups ([] when none).

    Warns:
        UserWarning: naming the groups, their weight_decay and the fix
            (``optimizer.weight_decay=0``).
    """
    if not isinstance(optimizer, GradientProjectionOptimizer) \
            or not optimizer.anchor_policy.stored:
        return []
    lookup = _name_lookup(optimizer, None)
    by_value: Dict[str, List[int]] = {}
    example: Dict[str, str] = {}
    for i, g in enumerate(optimizer.param_groups):
        wd = g.get('weight_decay', 0) or 0
        lr = _group_lr(g)
        if not wd or (lr is not None and float(lr) == 0):
            continue
        managed = [p for p in g['params'] if _is_managed(optimizer, p)]
        if managed:
            by_value.setdefault(_fmt(wd), []).append(i)
            example.setdefault(_fmt(wd), lookup.get(id(managed[0]), f'group {i}'))
    if not by_value:
        return []
    where = '; '.join(f'weight_decay={wd} in group(s) {_ranges(idx)} (e.g. {example[wd]})'
                      for wd, idx in by_value.items())
    method = type(optimizer).__name__
    base = type(optimizer.base_optimizer).__name__
    msg = (f'{method} pulls the tensors it manages towards the pre-trained weights theta0, but '
           f'its base optimizer {base} also decays them towards 0: {where}. The paper uses no '
           'weight decay with these methods. Set `optimizer.weight_decay=0` in optim_wrapper '
           '(--cfg-options optim_wrapper.optimizer.weight_decay=0; a paramwise_cfg custom key '
           'sets its own weight_decay unless it has decay_mult=0), or keep it if the decay '
           'towards 0 is intended.')
    warnings.warn(msg, UserWarning, stacklevel=2)
    (logger or MMLogger.get_current_instance()).warning(msg)
    return sorted(i for idx in by_value.values() for i in idx)


def report_param_groups(optimizer: torch.optim.Optimizer, logger=None, names=None) -> bool:
    """Log :func:`param_group_table` and run :func:`warn_decay_towards_zero`, once per optimizer.

    Called by :class:`RobustFTOptimWrapperConstructor` after building and by ``RobustFTHook``
    at ``before_train`` (whichever comes first does it). Returns True when it reported now,
    False when this optimizer was reported before.
    """
    if getattr(optimizer, '_mmdigrap_groups_reported', False):
        return False
    optimizer._mmdigrap_groups_reported = True
    logger = logger or MMLogger.get_current_instance()
    text, _ = param_group_table(optimizer, names)
    logger.info(f'Param groups of {text}')
    warn_decay_towards_zero(optimizer, logger)
    return True


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
