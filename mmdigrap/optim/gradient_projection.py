"""The torch.optim face: an Optimizer that wraps ANY already-built base optimizer.

``step()`` = ``transform gradients with the method`` -> ``base.step()`` -> ``post-step hook``.
The wrapper shares ``param_groups`` with the base (LR schedulers, ``paramwise_cfg`` and
``GradScaler`` work unchanged); its ``state_dict()`` carries the base state plus the method's
per-parameter state (anchors, omegas, ...) keyed by parameter, never by position.
"""
import copy
from collections import OrderedDict, defaultdict
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..core.anchors import AnchorPolicy, compile_exclude, match_excluded

__all__ = ['GradientProjectionOptimizer']


def _is_sharded(p: Tensor) -> bool:
    """FSDP flat parameters, DTensors (FSDP2 / tensor parallel) and ZeRO-partitioned tensors."""
    cls_names = {c.__name__ for c in type(p).__mro__}
    return (bool(cls_names & {'FlatParameter', 'DTensor'}) or hasattr(p, 'ds_tensor')
            or bool(getattr(p, '_fsdp_flattened', False)))


def _refuse_sharded(params: List[Tensor], owner: str) -> None:
    """Raise for sharded parameters: per-tensor reductions would differ per shard.

    Raises:
        NotImplementedError: a parameter is an FSDP ``FlatParameter``, a ``DTensor`` or a
            DeepSpeed ZeRO-3 partitioned tensor.
    """
    if any(_is_sharded(p) for p in params):
        raise NotImplementedError(
            f'{owner}: sharded parameters (FSDP / ZeRO-3 / DTensor) are not supported: the '
            'per-tensor inner products and norms would be computed per shard, giving each rank '
            'a different omega and projection. Train with DDP (MMDistributedDataParallel, the '
            'default of tools/dist_train.sh), or exclude the sharded tensors.')


class GradientProjectionOptimizer(Optimizer):
    """Base class of the robust fine-tuning optimizers (DiGraP, L2-SP, FTP, SPD, ...).

    Subclasses implement :meth:`_pre_step` (edit ``p.grad`` before the base step) and/or
    :meth:`_post_step` (edit ``p`` after it), on the list of managed parameters that have a
    gradient this step.

    Args:
        base_optimizer: an already built ``torch.optim.Optimizer`` (AdamW, SGD, Lion, ...).
        anchor: 'pretrained' or 'zero' (see :class:`~mmdigrap.core.anchors.AnchorPolicy`).
        anchor_dtype: storage dtype of the anchors (None = the parameter's).
        anchor_device: storage device of the anchors (None = the parameter's; e.g. 'cpu').
        exclude: regexes on parameter names (``re.search``); matching tensors are left to the
            base optimizer alone (e.g. a newly initialised head, ``r'^head\\.'``).
        named_parameters: ``model.named_parameters()``; needed for ``exclude`` and named
            logging. Can be given later with :meth:`set_param_names`.

    Raises:
        TypeError: ``base_optimizer`` is not a ``torch.optim.Optimizer``.
        ValueError: bad ``anchor``/``anchor_dtype``/``exclude`` values.
    """

    #: name stored in state_dicts; a checkpoint of another method is refused on load.
    method: str = 'projection'

    def __init__(self, base_optimizer: Optimizer, *, anchor: str = 'pretrained',
                 anchor_dtype=None, anchor_device=None, exclude: Iterable[str] = (),
                 named_parameters: Optional[Iterable[Tuple[str, Tensor]]] = None):
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f'{type(self).__name__} wraps an already built torch.optim.Optimizer '
                            f'(e.g. torch.optim.AdamW(model.parameters())), got '
                            f'{type(base_optimizer).__name__}')
        if isinstance(base_optimizer, GradientProjectionOptimizer):
            raise TypeError(f'{type(self).__name__} cannot wrap another robust fine-tuning '
                            f'optimizer ({type(base_optimizer).__name__}); pick one method')
        # Optimizer.__init__ would copy the param groups; share the base's instead.
        self.base_optimizer = base_optimizer
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.state: Dict[Tensor, Dict[str, Any]] = defaultdict(dict)
        self.anchor_policy = AnchorPolicy(anchor, anchor_dtype, anchor_device)
        self._exclude_patterns = compile_exclude(exclude)
        self._names: Dict[int, str] = {}
        self._excluded: set = set()
        #: number of completed optimizer steps (the global hyper-step counter is this + 1)
        self.hyper_step = 0
        _refuse_sharded(self._all_params(), type(self).__name__)
        if named_parameters is not None:
            self.set_param_names(named_parameters)

    # ----------------------------------------------------------------- shared with the base
    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.base_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.base_optimizer.param_groups = value

    @property
    def defaults(self) -> Dict[str, Any]:
        return self.base_optimizer.defaults

    @defaults.setter
    def defaults(self, value):
        self.base_optimizer.defaults = value

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        self.base_optimizer.add_param_group(param_group)

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._patch_step_function()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.extra_repr()}, anchor={self.anchor_policy.mode!r}, '
                f'excluded={len(self._excluded)} tensors,\n  base={self.base_optimizer!r})')

    def extra_repr(self) -> str:
        return ''

    # ----------------------------------------------------------------------------- names
    def set_param_names(self, named_parameters: Iterable[Tuple[str, Tensor]]) -> None:
        """Give parameter names (for ``exclude`` and logging); resolves the exclusions.

        Warns:
            UserWarning: an ``exclude`` pattern matches no parameter name.
        """
        managed = {id(p) for p in self._all_params()}
        self._names = {id(p): n for n, p in named_parameters if id(p) in managed}
        self._excluded = match_excluded(self._names, self._exclude_patterns, type(self).__name__)
        for p in self._all_params():  # an excluded tensor keeps no method state
            if id(p) in self._excluded:
                self.state.pop(p, None)

    def param_name(self, p: Tensor) -> str:
        """The name given by :meth:`set_param_names`, else ``'param<i>'`` (index in groups)."""
        name = self._names.get(id(p))
        if name is None:
            name = f'param{[id(q) for q in self._all_params()].index(id(p))}'
        return name

    def is_excluded(self, p: Tensor) -> bool:
        return id(p) in self._excluded

    def managed_parameters(self) -> List[Tuple[str, Tensor, bool]]:
        """[(name, param, excluded)] for every parameter of the base optimizer."""
        return [(self.param_name(p), p, self.is_excluded(p)) for p in self._all_params()]

    def _all_params(self) -> List[Tensor]:
        return list(chain.from_iterable(g['params'] for g in self.param_groups))

    def _params_with_grad(self) -> Tuple[List[Tensor], List[Tensor]]:
        if self._exclude_patterns and not self._names:
            raise RuntimeError(
                f'{type(self).__name__}: `exclude` patterns need parameter names. Pass '
                '`named_parameters=model.named_parameters()`, call `set_param_names(...)`, or '
                "in an mmengine config add `custom_hooks=[dict(type='DiGraPHook')]`.")
        params, grads = [], []
        for p in self._all_params():
            if p.grad is not None and id(p) not in self._excluded:
                if p.grad.is_sparse:
                    raise RuntimeError(f'{type(self).__name__} does not support sparse gradients '
                                       f'({self.param_name(p)}); exclude that parameter')
                params.append(p)
                grads.append(p.grad)
        return params, grads

    # ---------------------------------------------------------------------------- anchors
    def _anchors(self, params: List[Tensor]) -> List[Optional[Tensor]]:
        """The anchors of ``params``, snapshotting theta0 the first time a tensor is seen."""
        if not self.anchor_policy.stored:
            return [None] * len(params)
        out = []
        for p in params:
            st = self.state[p]
            if 'anchor' not in st:
                st['anchor'] = self.anchor_policy.snapshot(p)
            out.append(st['anchor'])
        return out

    def capture_anchors(self) -> int:
        """Snapshot theta0 now for every managed tensor that has none yet.

        Call after the pre-trained weights are loaded (``DiGraPHook`` does it in
        ``before_train``). Returns the number of anchors taken.
        """
        params = [p for p in self._all_params() if p.requires_grad and not self.is_excluded(p)
                  and 'anchor' not in self.state.get(p, {})]
        self._anchors(params)
        return len(params) if self.anchor_policy.stored else 0

    def scalar_state(self, key: str) -> Dict[str, float]:
        """{parameter name: value} of the 0-d state ``key`` (e.g. ``'omega'``) of every tensor
        that has it, in one host sync (for logging, never called by ``step``)."""
        items = [(p, st[key]) for p, st in self.state.items() if key in st]
        if not items:
            return {}
        vals = torch.stack([w.to(items[0][1].device) for _, w in items]).tolist()
        return {self.param_name(p): v for (p, _), v in zip(items, vals)}

    # ------------------------------------------------------------------------------- step
    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        """Transform ``grads`` (the ``.grad`` of ``params``) in place before the base step."""

    def _post_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        """Edit ``params`` in place after the base step (post-step projections)."""

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """Transform the gradients, then run the base optimizer step (spec 1.7 order).

        Args:
            closure: re-evaluates the model and returns the loss (evaluated once, before the
                transform, with gradients enabled).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads = self._params_with_grad()
        if params:
            self._pre_step(params, grads)
        self.base_optimizer.step()
        if params:
            self._post_step(params, grads)
        self.hyper_step += 1
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------------ state dict
    def state_dict(self) -> Dict[str, Any]:
        """The base optimizer's ``state_dict()`` (``state``, ``param_groups``) plus
        ``'projection'``: the method's per-parameter state keyed by the parameter's index in
        ``param_groups`` (the torch convention), its name and the step counter.

        The flat layout lets a plain optimizer resume from it (it ignores ``'projection'``).
        """
        index = {id(p): i for i, p in enumerate(self._all_params())}
        state = {index[id(p)]: dict(st) for p, st in self.state.items() if id(p) in index}
        out = dict(self.base_optimizer.state_dict())
        out['projection'] = {'method': self.method, 'hyper_step': self.hyper_step,
                             'state': state}
        return out

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a :meth:`state_dict`; tensors are moved to their parameter's device.

        Raises:
            ValueError: the state was written by a plain optimizer (no method state), or by
                another method; the message says how to proceed.
        """
        if 'projection' not in state_dict:
            raise ValueError(
                f'{type(self).__name__}: this optimizer state was saved without '
                f'{self.method} state (a plain {{"state", "param_groups"}} optimizer '
                'state_dict). To start a run of this method from such a checkpoint, load only '
                'the weights: use `load_from=CKPT` (or `--cfg-options load_from=CKPT`) instead '
                'of `resume=True` / `--resume`.')
        proj = state_dict['projection']
        if proj.get('method') != self.method:
            raise ValueError(
                f"{type(self).__name__}: optimizer state was written by method "
                f"{proj.get('method')!r}, not {self.method!r}. Resume with the same method, or "
                'use `load_from=CKPT` to start this method from the weights only.')
        self.base_optimizer.load_state_dict(
            {k: v for k, v in state_dict.items() if k != 'projection'})
        params = self._all_params()
        if proj['state'] and max(int(k) for k in proj['state']) >= len(params):
            raise ValueError(f'{type(self).__name__}: the saved state has more parameters '
                             f'than this optimizer ({len(params)}); was the model changed?')
        self.state = defaultdict(dict)
        for k, st in proj['state'].items():
            p = params[int(k)]
            new = {}
            for key, val in st.items():
                if isinstance(val, Tensor):
                    if key == 'anchor':
                        val = self.anchor_policy.place(val, p)
                    else:
                        val = val.to(device=p.device)
                    val = val.clone() if val is st[key] else val
                else:
                    val = copy.deepcopy(val)
                new[key] = val
            self.state[p] = new
        self.hyper_step = int(proj['hyper_step'])
