"""The torch.optim face: an Optimizer that wraps ANY already-built base optimizer.

``step()`` = ``transform gradients with the method`` -> ``base.step()`` -> ``post-step hook``.
The wrapper shares ``param_groups`` with the base (LR schedulers, ``paramwise_cfg`` and
``GradScaler`` work unchanged). The method's hyper-parameters (DiGraP's ``mu``, FTP's ``k``, ...)
live in those param groups too, filled with ``group.setdefault(key, constructor value)`` (as
timm's ``Lookahead`` does): they can differ per group (``paramwise_cfg=dict(custom_keys=...)``),
be scheduled (an mmengine ``param_scheduler`` with ``param_name='mu'``) and are checkpointed
with the groups. ``state_dict()`` carries the base state plus the method's per-parameter state
(anchors, omegas, ...) keyed by parameter, never by position; torch's step and state-dict hooks
(``register_step_pre_hook``, ``register_state_dict_post_hook``, ...) fire as on any optimizer.

A tensor is left alone by the method (no state, not logged) when it has no gradient this step,
is excluded by name, or sits in a param group whose ``lr`` is 0 (re-checked every step).
"""
import copy
import warnings
from collections import OrderedDict, defaultdict
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..core.anchors import AnchorPolicy, compile_exclude, match_excluded
from ..core.distributed import (
    IDENTITY,
    ShardReducer,
    is_dtensor,
    local_tensor,
    shard_spec,
    to_dtensor_like,
)

__all__ = ['GradientProjectionOptimizer', 'GroupDefault']

#: the message of torch's ``add_param_group`` for a tensor in two groups (caught by the engine)
DUPLICATE_PARAM_MSG = 'some parameters appear in more than one parameter group'


class GroupDefault:
    """Read-only attribute showing a method default: the value a param group gets when it has
    none of its own (``opt.mu`` is the constructor's ``mu``; the value used is
    ``group['mu']``)."""

    def __init__(self, key: str):
        self.key = key

    def __get__(self, obj, owner=None):
        return self if obj is None else obj.method_defaults[self.key]

    def __set__(self, obj, value):
        raise AttributeError(
            f'{type(obj).__name__}.{self.key} is the default of the param groups; set '
            f"`group[{self.key!r}]` in `opt.param_groups` (or schedule it with an mmengine "
            f"param_scheduler, param_name={self.key!r}) instead")


def _lr_is_zero(lr) -> bool:
    """True for a group that cannot move its tensors (``lr == 0``); no host sync on a GPU
    (a CUDA tensor lr counts as non-zero)."""
    if isinstance(lr, Tensor):
        return lr.device.type == 'cpu' and bool(lr == 0)
    return lr == 0


def _is_sharded(p: Tensor) -> bool:
    """FSDP1 flat parameters and DeepSpeed ZeRO-3 partitioned tensors (refused; DTensors, i.e.
    FSDP2 ``fully_shard`` parameters, are supported and not reported here)."""
    cls_names = {c.__name__ for c in type(p).__mro__}
    return ('FlatParameter' in cls_names or hasattr(p, 'ds_tensor')
            or bool(getattr(p, '_fsdp_flattened', False)))


def _refuse_sharded(params: List[Tensor], owner: str) -> None:
    """Raise for FSDP1 flat parameters and DeepSpeed ZeRO-3 partitioned tensors.

    Their per-tensor reductions cannot be formed (a flat parameter mixes many tensors; ZeRO-3
    hides the partitions). FSDP2 (``torch.distributed.fsdp.fully_shard``, DTensor parameters) is
    supported: the reductions are all-reduced (:mod:`mmdigrap.core.distributed`).

    Raises:
        NotImplementedError: a parameter is an FSDP1 ``FlatParameter`` (or flattened by FSDP1)
            or a DeepSpeed ZeRO-3 partitioned tensor; the message names the alternatives.
    """
    if any(_is_sharded(p) for p in params):
        raise NotImplementedError(
            f'{owner}: FSDP1 flat parameters (FullyShardedDataParallel, mmengine\'s '
            'FSDPStrategy) and DeepSpeed ZeRO-3 partitions are not supported: the per-tensor '
            'inner products and norms cannot be formed on them. Shard with FSDP2 instead '
            "(torch.distributed.fsdp.fully_shard; in a config strategy=dict(type="
            "'FSDP2Strategy') with runner_type='FlexibleRunner'), or train with DDP "
            '(MMDistributedDataParallel, the default of tools/dist_train.sh).')


class _ParamState(defaultdict):
    """``defaultdict(dict)`` keyed by parameter, where the local shard of a DTensor parameter
    (what the methods compute on) finds its parameter's entry."""

    def __init__(self, *args):
        super().__init__(dict, *args)
        #: {id(local shard): (local shard, DTensor parameter)}, refreshed every step
        self.alias: Dict[int, Tuple[Tensor, Tensor]] = {}

    def key(self, k):
        if not self.alias:  # no sharded parameter: every tensor is its own key
            return k
        hit = self.alias.get(id(k))
        return hit[1] if hit is not None and hit[0] is k else k

    def __getitem__(self, k):
        return super().__getitem__(self.key(k))

    def __setitem__(self, k, v):
        super().__setitem__(self.key(k), v)

    def __contains__(self, k):
        return super().__contains__(self.key(k))

    def get(self, k, default=None):
        return super().get(self.key(k), default)

    def pop(self, k, *default):
        return super().pop(self.key(k), *default)

    def __reduce__(self):
        return (type(self), (dict(self),))


#: state keys of the shape of the parameter (sharded like it) and of one value per row
_PARAM_SHAPED_STATE = ('anchor', 'prev_proj', 'ftp_prev_offset')
_ROW_SHAPED_STATE = ('ftp_prev_scale',)


class GradientProjectionOptimizer(Optimizer):
    """Base class of the robust fine-tuning optimizers (DiGraP, L2-SP, FTP, SPD, ...).

    Subclasses implement :meth:`_pre_step` (edit ``p.grad`` before the base step) and/or
    :meth:`_post_step` (edit ``p`` after it), on the list of managed parameters that have a
    gradient this step.

    Args:
        base_optimizer: an already built ``torch.optim.Optimizer`` (AdamW, SGD, Lion, ...).
        hyper: {param-group key: default} of the method's hyper-parameters, already validated
            by the subclass; every group gets them with ``setdefault`` and is validated.
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

    def __init__(self, base_optimizer: Optimizer, *, hyper: Optional[Dict[str, Any]] = None,
                 anchor: str = 'pretrained', anchor_dtype=None, anchor_device=None,
                 exclude: Iterable[str] = (),
                 named_parameters: Optional[Iterable[Tuple[str, Tensor]]] = None):
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f'{type(self).__name__} wraps an already built torch.optim.Optimizer '
                            f'(e.g. torch.optim.AdamW(model.parameters())), got '
                            f'{type(base_optimizer).__name__}')
        if isinstance(base_optimizer, GradientProjectionOptimizer):
            raise TypeError(f'{type(self).__name__} cannot wrap another robust fine-tuning '
                            f'optimizer ({type(base_optimizer).__name__}); pick one method')
        # Optimizer.__init__ would copy the param groups; share the base's instead and set up
        # what it sets up: torch's six hook dicts and the profiled, hook-calling step().
        self.base_optimizer = base_optimizer
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.state: Dict[Tensor, Dict[str, Any]] = _ParamState()
        self.anchor_policy = AnchorPolicy(anchor, anchor_dtype, anchor_device)
        self._exclude_patterns = compile_exclude(exclude)
        self._names: Dict[int, str] = {}
        self._excluded: set = set()
        self._group_of: Dict[int, Dict[str, Any]] = {}
        #: number of completed optimizer steps
        self.hyper_step = 0
        #: where the anchors came from: 'restored' (load_state_dict) / 'snapshotted' (weights)
        self.anchor_counts = {'restored': 0, 'snapshotted': 0}
        #: {param-group key: default} of the method's hyper-parameters (validated)
        self.method_defaults: Dict[str, Any] = dict(hyper or {})
        # as timm's Lookahead: the defaults describe the groups, method keys included
        self.base_optimizer.defaults.update(copy.deepcopy(self.method_defaults))
        for i, group in enumerate(self.param_groups):
            self._init_group(group, i)
        _refuse_sharded(self._all_params(), type(self).__name__)
        if named_parameters is not None:
            self.set_param_names(named_parameters)

    # ------------------------------------------------------------------ hyper-parameters
    @classmethod
    def _check_hyper(cls, hyper: Dict[str, Any], owner: str) -> Dict[str, Any]:
        """Validate a full {group key: value} dict of hyper-parameters; return it normalised.

        Subclasses override it. Raises ValueError naming the option and the fix.
        """
        return dict(hyper)

    def _init_group(self, group: Dict[str, Any], index: int) -> None:
        """``group.setdefault`` every method default, then validate the group's values."""
        for key, val in self.method_defaults.items():
            group.setdefault(key, copy.deepcopy(val))
        if self.method_defaults:
            owner = f'{type(self).__name__} (param group {index})'
            group.update(self._check_hyper({k: group[k] for k in self.method_defaults}, owner))

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
        """Add a group to the base optimizer and give it the method defaults."""
        self.base_optimizer.add_param_group(param_group)
        self._init_group(self.param_groups[-1], len(self.param_groups) - 1)
        _refuse_sharded(self.param_groups[-1]['params'], type(self).__name__)

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
        p = self.state.key(p)  # a local shard: its DTensor parameter
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

    def _require_names(self) -> None:
        """The one check that ``exclude`` has the names it needs.

        Raises:
            RuntimeError: ``exclude`` patterns were given but no parameter names.
        """
        if self._exclude_patterns and not self._names:
            raise RuntimeError(
                f'{type(self).__name__}: `exclude` patterns need parameter names. Pass '
                '`named_parameters=model.named_parameters()` or call `set_param_names(...)`; in '
                "an mmengine config add `constructor='RobustFTOptimWrapperConstructor'` to "
                'optim_wrapper (it hands the names over at build time).')

    def _active_groups(self) -> List[Dict[str, Any]]:
        """The param groups whose tensors can move this step (``lr != 0``)."""
        return [g for g in self.param_groups if not _lr_is_zero(g.get('lr', 1.0))]

    def _params_with_grad(self) -> Tuple[List[Tensor], List[Tensor]]:
        """(params, grads) of the managed tensors with a gradient in groups with ``lr != 0``;
        records each one's param group for :meth:`_buckets`."""
        self._require_names()
        params, grads = [], []
        self._group_of = {}
        for group in self._active_groups():
            for p in group['params']:
                if p.grad is None or id(p) in self._excluded:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f'{type(self).__name__} does not support sparse gradients '
                                       f'({self.param_name(p)}); exclude that parameter')
                params.append(p)
                grads.append(local_tensor(p.grad))  # a DTensor's local shard
                self._group_of[id(p)] = group
        params = self._local_params(params, reset=True)
        for p in params:  # the local shards too
            self._group_of[id(p)] = self._group_of[id(self.state.key(p))]
        return params, grads

    def _local_params(self, params: List[Tensor], reset: bool = False) -> List[Tensor]:
        """The local shards of DTensor parameters (FSDP2), other tensors as they are.

        The methods compute on what this returns; ``self.state[shard]`` and
        :meth:`param_name` find the DTensor parameter's entry. ``reset`` forgets the shards
        of the previous step first.
        """
        if reset:
            self.state.alias = {}
        out = []
        for p in params:
            if is_dtensor(p):
                loc = local_tensor(p)
                self.state.alias[id(loc)] = (loc, p)
                out.append(loc)
            else:
                out.append(p)
        return out

    def _reducer(self, params: List[Tensor]) -> ShardReducer:
        """The :class:`~mmdigrap.core.distributed.ShardReducer` of ``params`` (local shards
        from :meth:`_local_params`): the identity when none is sharded."""
        full = [self.state.key(p) for p in params]
        if not any(is_dtensor(p) for p in full):
            return IDENTITY
        return ShardReducer(full)

    def _buckets(self, params: List[Tensor], extra: Optional[List[Any]] = None
                 ) -> List[Tuple[Dict[str, Any], List[int]]]:
        """Split ``params`` (from :meth:`_params_with_grad`) into buckets of one param group,
        device and dtype (and ``extra[i]`` if given), for the batched (foreach / stacked) math.

        Returns:
            [(group, indices into params)], in order of first appearance: one bucket holding
            everything in the usual case (one group, one device, one dtype).
        """
        out: Dict[Tuple, List[int]] = {}
        for i, p in enumerate(params):
            key = (id(self._group_of[id(p)]), p.device, p.dtype)
            out.setdefault(key if extra is None else key + (extra[i],), []).append(i)
        return [(self._group_of[id(params[idx[0]])], idx) for idx in out.values()]

    @staticmethod
    def _merge_stats(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Concatenate per-bucket ``last_stats`` dicts (tensors on the first one's device)."""
        if len(parts) <= 1:
            return parts[0] if parts else {}
        out: Dict[str, Any] = {}
        for key, first in parts[0].items():
            vals = [part[key] for part in parts]
            if isinstance(first, Tensor):
                out[key] = torch.cat([v.to(first.device, non_blocking=True).reshape(-1)
                                      for v in vals])
            else:
                out[key] = [x for v in vals for x in v]
        return out

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
                self.anchor_counts['snapshotted'] += 1
            out.append(st['anchor'])
        return out

    def capture_anchors(self) -> int:
        """Snapshot theta0 now for every managed tensor that has none yet.

        Call after the pre-trained weights are loaded (``RobustFTHook`` does it in
        ``before_train``). Tensors in a group with ``lr == 0`` get none (they cannot move).
        Returns the number of anchors taken.
        """
        params = [p for g in self._active_groups() for p in g['params']
                  if p.requires_grad and not self.is_excluded(p)
                  and 'anchor' not in self.state.get(p, {})]
        self._anchors(self._local_params(params))
        return len(params) if self.anchor_policy.stored else 0

    def scalar_state(self, key: str) -> Dict[str, float]:
        """{parameter name: value} of the 0-d state ``key`` (e.g. ``'omega'``) of every tensor
        that has it, in one host sync (for logging, never called by ``step``)."""
        items = [(p, st[key]) for p, st in self.state.items() if key in st]
        if not items:
            return {}
        vals = torch.stack([w.to(items[0][1].device) for _, w in items]).tolist()
        return {self.param_name(p): v for (p, _), v in zip(items, vals)}

    def warn_nonfinite_distances(self) -> List[str]:
        """Warn once per tensor whose ||theta - theta0||^2 in the last step was not finite.

        That happens when the offset overflows float32 (e.g. bf16 weights ~1e20 away from
        theta0): the method then skips the tensor's projection for that step. The check reads
        ``last_stats`` (one host sync), so ``step()`` never does it; ``RobustFTHook`` calls it at
        every log. Returns the names newly warned about.

        Warns:
            UserWarning: naming each such tensor, once per tensor.
        """
        stats = getattr(self, 'last_stats', None) or {}
        if 'sq_dist' not in stats or not len(stats['params']):
            return []
        bad = (~torch.isfinite(stats['sq_dist'].float())).cpu().tolist()
        warned = self.__dict__.setdefault('_warned_nonfinite', set())
        names = [self.param_name(p) for p, b in zip(stats['params'], bad) if b]
        names = [n for n in names if n not in warned]
        for name in names:
            warned.add(name)
            warnings.warn(
                f'{type(self).__name__}: ||theta - theta0||^2 of {name!r} is not finite in float32 '
                '(the offset from the anchor overflowed); its projection is skipped while this '
                'lasts. Check the learning rate and the weights of that tensor, or exclude it.',
                UserWarning, stacklevel=2)
        return names

    # ------------------------------------------------------------------------------- step
    def _pre_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        """Transform ``grads`` (the ``.grad`` of ``params``) in place before the base step."""

    def _post_step(self, params: List[Tensor], grads: List[Tensor]) -> None:
        """Edit ``params`` in place after the base step (post-step projections)."""

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """Transform the gradients, then run the base optimizer step (algorithm.md §6 order).

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
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        index = {id(p): i for i, p in enumerate(self._all_params())}
        state = {index[id(p)]: self._global_state(p, st) for p, st in self.state.items()
                 if id(p) in index}
        out = dict(self.base_optimizer.state_dict())
        out['projection'] = {'method': self.method, 'hyper_step': self.hyper_step,
                             'state': state}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, out)
            if result is not None:
                out = result
        return out

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a :meth:`state_dict`; tensors are moved to their parameter's device.

        Checkpoints written before the hyper-parameters moved into the param groups load too:
        the groups get the constructor's values, each tensor's hyper-step count the global one.

        Raises:
            ValueError: the state was written by a plain optimizer (no method state), or by
                another method; the message says how to proceed.
        """
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
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
        self.state = _ParamState()
        for k, st in proj['state'].items():
            p = params[int(k)]
            new = {}
            for key, val in st.items():
                if isinstance(val, Tensor):
                    val = self._local_state(key, val, p)
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
        self.anchor_counts['restored'] += sum('anchor' in st for st in self.state.values())
        for i, group in enumerate(self.param_groups):  # old checkpoints: no method keys
            self._init_group(group, i)
        self._upgrade_state()
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _upgrade_state(self) -> None:
        """Fill per-tensor keys missing from an older checkpoint (subclasses)."""

    @staticmethod
    def _global_state(p: Tensor, st: Dict[str, Any]) -> Dict[str, Any]:
        """A copy of ``st``; for a DTensor ``p`` the local shards of param- and row-shaped
        state become DTensors like ``p`` (so ``torch.distributed.checkpoint`` saves them
        sharded and can gather them into a full checkpoint); 0-d state stays plain."""
        out = dict(st)
        if not is_dtensor(p):
            return out
        rows_local = shard_spec(p).dim == 0 and p.dim() >= 2
        for key, val in st.items():
            if not isinstance(val, Tensor) or is_dtensor(val) or val.dim() == 0:
                continue
            if key in _ROW_SHAPED_STATE:
                if rows_local:
                    out[key] = to_dtensor_like(val, p, rows=True)
            elif key in _PARAM_SHAPED_STATE or val.shape == local_tensor(p).shape:
                out[key] = to_dtensor_like(val, p)
        return out

    @staticmethod
    def _local_state(key: str, val: Tensor, p: Tensor) -> Tensor:
        """The rank's part of a loaded state tensor of ``p`` (a DTensor's local shard).

        Raises:
            ValueError: a full (unsharded) param-shaped state loaded into a sharded run.
        """
        if is_dtensor(val):
            return val.to_local()
        if is_dtensor(p) and val.dim() > 0 and val.shape == p.shape \
                and val.shape != local_tensor(p).shape:
            raise ValueError(
                f'optimizer state {key!r} of shape {tuple(val.shape)} is a full tensor but the '
                'parameter is sharded (FSDP2): resume from the sharded checkpoint written by '
                'FSDP2Strategy (a directory), or start from the weights only with load_from')
        return val
