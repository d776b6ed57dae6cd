"""``FSDP2Strategy``: mmengine's ``FlexibleRunner`` on PyTorch FSDP2 (``fully_shard``).

Why a strategy of our own: mmengine 0.10.7's ``FSDPStrategy`` wraps FSDP1
(``FullyShardedDataParallel``: flat parameters, whose per-tensor inner products and norms
cannot be formed, ``device_id=LOCAL_RANK`` so CUDA only, and ``FSDP.optim_state_dict``
rewrites the optimizer state per parameter, which drops the methods' own state). FSDP2 keeps
every parameter a ``DTensor`` with its own name and shape, runs on CPU (gloo) and GPU (nccl),
and the robust fine-tuning optimizers reduce their per-tensor quantities over the shards
(:mod:`mmdigrap.core.distributed`).

.. code-block:: python

    runner_type = 'FlexibleRunner'
    strategy = dict(type='FSDP2Strategy', wrap_modules=['TransformerEncoderLayer'])

Checkpoints (``state_dict_type``):

* ``'sharded'`` (default): ``iter_N.pth`` is a directory written by
  ``torch.distributed.checkpoint`` (every rank writes its shards: weights, the base optimizer's
  moments, the anchors theta0 and the methods' buffers) plus ``skeleton.pth`` (rank 0: the rest
  of the checkpoint, the 0-d omegas/radii included, with the tensors replaced by references).
  A sharded run resumes from it (``--resume``); :func:`consolidate_sharded_checkpoint` turns it
  into an ordinary full checkpoint, without any process group, for a single-process run.
* ``'full'``: rank 0 writes an ordinary mmengine checkpoint with full tensors (a collective
  gather per tensor), loadable by ``tools/train.py``/``tools/test.py`` without FSDP.

``load_from`` of an ordinary (full) checkpoint, e.g. the pre-trained weights, works in both
modes: the full tensors are sharded onto the model
(``torch.distributed.checkpoint.state_dict.set_model_state_dict``).
"""
import os
import os.path as osp
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import mmengine
import torch
import torch.distributed as dist
from mmengine._strategy import DDPStrategy
from mmengine.device import get_device
from mmengine.dist import is_distributed
from mmengine.registry import STRATEGIES
from mmengine.utils import get_git_hash
from torch import Tensor, nn

from ..core.distributed import is_dtensor

__all__ = ['FSDP2Strategy', 'apply_fully_shard', 'save_sharded_checkpoint',
           'load_sharded_checkpoint', 'consolidate_sharded_checkpoint', 'full_state',
           'SKELETON']

#: the rank-0 file of a sharded checkpoint directory
SKELETON = 'skeleton.pth'
_REF = '__dcp_tensor__'


def apply_fully_shard(model: nn.Module, mesh=None, wrap_modules: Sequence[str] = (),
                      **fsdp_kwargs) -> nn.Module:
    """``fully_shard`` every submodule whose class name is in ``wrap_modules`` (or whose
    qualified name matches one of them as a regex), then the root module.

    Args:
        model: the model (moved to its device already).
        mesh: a 1-D (FSDP) or 2-D (HSDP) ``DeviceMesh``; None: all ranks, 1-D, on the
            model's device type.
        wrap_modules: class names (``'TransformerEncoderLayer'``) or name regexes.
        **fsdp_kwargs: passed to ``fully_shard`` (``reshard_after_forward``, ``mp_policy``...).

    Returns:
        ``model`` itself (FSDP2 works in place); its parameters are DTensors.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if mesh is None:
        dev = next((p.device.type for p in model.parameters()), 'cpu')
        mesh = init_device_mesh(dev, (dist.get_world_size(),))
    pats = [re.compile(w) for w in wrap_modules]
    names = set(wrap_modules)
    targets = [m for n, m in model.named_modules()
               if n and (type(m).__name__ in names or any(p.fullmatch(n) for p in pats))]
    for m in reversed(targets):  # inner modules first
        fully_shard(m, mesh=mesh, **fsdp_kwargs)
    fully_shard(model, mesh=mesh, **fsdp_kwargs)
    return model


def _meshes(model: nn.Module) -> List[Any]:
    """The distinct device meshes of the model's DTensor parameters, in parameter order."""
    out = []
    for p in model.parameters():
        if is_dtensor(p) and not any(p.device_mesh is m for m in out):
            out.append(p.device_mesh)
    return out


def _placement_code(pl) -> Tuple:
    return ('shard', pl.dim) if pl.is_shard() else ('replicate',)


def _split(obj, tensors: Dict[str, Tensor], layout: Dict[str, dict], meshes: List[Any]):
    """``obj`` with every tensor replaced by ``{_REF: key}``; tensors and their layout out."""
    if isinstance(obj, Tensor):
        key = f't{len(tensors)}'
        tensors[key] = obj.detach()
        info = dict(shape=tuple(obj.shape), dtype=str(obj.dtype).replace('torch.', ''))
        if is_dtensor(obj):
            mesh_i = next((i for i, m in enumerate(meshes) if m is obj.device_mesh), None)
            if mesh_i is None:
                meshes.append(obj.device_mesh)
                mesh_i = len(meshes) - 1
            info.update(mesh=mesh_i, placements=[_placement_code(p) for p in obj.placements])
        layout[key] = info
        return {_REF: key}
    if isinstance(obj, dict):
        return {k: _split(v, tensors, layout, meshes) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_split(v, tensors, layout, meshes) for v in obj)
    return obj


def _join(obj, tensors: Dict[str, Tensor]):
    if isinstance(obj, dict):
        if set(obj) == {_REF}:
            return tensors[obj[_REF]]
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_join(v, tensors) for v in obj)
    return obj


def save_sharded_checkpoint(state: Dict[str, Any], path: str,
                            meshes: Optional[List[Any]] = None) -> None:
    """Save a checkpoint dict holding DTensors with ``torch.distributed.checkpoint``.

    Collective: every rank calls it with its own ``state`` (same structure). ``path`` becomes a
    directory: the DCP files (each rank writes its shards; plain tensors once) and
    :data:`SKELETON` (rank 0, ``torch.save``: the non-tensor rest and the tensor layouts).

    Args:
        state: nested dicts/lists of tensors, DTensors and picklable objects.
        path: the directory to write.
        meshes: the device meshes, in the order used by :func:`load_sharded_checkpoint`
            (default: in order of appearance in ``state``).
    """
    import torch.distributed.checkpoint as dcp

    tensors: Dict[str, Tensor] = {}
    layout: Dict[str, dict] = {}
    skeleton = _split(state, tensors, layout, list(meshes or []))
    if not dist.is_initialized() or dist.get_rank() == 0:
        os.makedirs(path, exist_ok=True)
        torch.save(dict(skeleton=skeleton, layout=layout), osp.join(path, SKELETON))
    if dist.is_initialized():
        dist.barrier()
    dcp.save(tensors, checkpoint_id=path)


def _read_skeleton(path: str) -> dict:
    from mmengine.runner.checkpoint import _load_checkpoint  # mmengine's (trusted) loader
    return _load_checkpoint(osp.join(path, SKELETON), map_location='cpu')


def load_sharded_checkpoint(path: str, meshes: Sequence[Any],
                            device: Union[str, torch.device] = 'cpu') -> Dict[str, Any]:
    """Load a :func:`save_sharded_checkpoint` directory into DTensors on ``meshes``.

    Collective. Each rank reads only its shards (DCP reshards if the number of ranks changed).

    Args:
        path: the checkpoint directory.
        meshes: the device meshes the DTensors go to (the model's, as at save time).
        device: where plain (replicated) tensors are loaded.

    Returns:
        The checkpoint dict, DTensors where the saved run had DTensors.

    Raises:
        ValueError: the checkpoint refers to more meshes than given.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor import empty as dempty

    head = _read_skeleton(path)
    templates: Dict[str, Tensor] = {}
    for key, info in head['layout'].items():
        dtype = getattr(torch, info['dtype'])
        if 'mesh' in info:
            if info['mesh'] >= len(meshes):
                raise ValueError(f'{path}: the checkpoint has DTensors on {info["mesh"] + 1} '
                                 f'device meshes, the model {len(meshes)}')
            pls = [Shard(c[1]) if c[0] == 'shard' else Replicate() for c in info['placements']]
            templates[key] = dempty(info['shape'], dtype=dtype, device_mesh=meshes[info['mesh']],
                                    placements=pls)
        else:
            templates[key] = torch.empty(info['shape'], dtype=dtype, device=device)
    dcp.load(templates, checkpoint_id=path)
    return _join(head['skeleton'], templates)


def consolidate_sharded_checkpoint(path: str, out_file: Optional[str] = None) -> Dict[str, Any]:
    """The full (unsharded) checkpoint of a sharded checkpoint directory, in one process.

    Needs no process group: every tensor is read whole. The result is an ordinary mmengine
    checkpoint (``state_dict``, ``optimizer`` with the methods' state, ``meta``, ...) that a
    single-process run loads (``load_from``/``resume``); ``out_file`` saves it with
    ``torch.save`` as well.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    head = _read_skeleton(path)
    tensors = {key: torch.empty(info['shape'], dtype=getattr(torch, info['dtype']))
               for key, info in head['layout'].items()}
    _load_state_dict(tensors, storage_reader=FileSystemReader(path), no_dist=True)
    ckpt = _join(head['skeleton'], tensors)
    if out_file is not None:
        torch.save(ckpt, out_file)
    return ckpt


def full_state(obj):
    """``obj`` with every DTensor gathered into a full CPU tensor (collective, all ranks)."""
    if isinstance(obj, Tensor):
        return (obj.full_tensor() if is_dtensor(obj) else obj).detach().cpu()
    if isinstance(obj, dict):
        return {k: full_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(full_state(v) for v in obj)
    return obj


@STRATEGIES.register_module()
class FSDP2Strategy(DDPStrategy):
    """PyTorch FSDP2 (``fully_shard``, DTensor parameters) for mmengine's ``FlexibleRunner``.

    Args:
        wrap_modules: class names or qualified-name regexes of the submodules sharded as
            units of their own (e.g. the transformer blocks); the root is always sharded.
        fsdp_cfg: keyword arguments of ``fully_shard`` (``reshard_after_forward``, ...).
        state_dict_type: 'sharded' (``torch.distributed.checkpoint`` directory, the default)
            or 'full' (an ordinary checkpoint written by rank 0).
        **kwargs: ``DDPStrategy``'s (``sync_bn``) and ``BaseStrategy``'s arguments.

    Raises:
        ValueError: unknown ``state_dict_type``.
    """

    def __init__(self, *, wrap_modules: Sequence[str] = (), fsdp_cfg: Optional[dict] = None,
                 state_dict_type: str = 'sharded', **kwargs):
        if state_dict_type not in ('sharded', 'full'):
            raise ValueError(f"FSDP2Strategy: state_dict_type must be 'sharded' or 'full', got "
                             f'{state_dict_type!r}')
        kwargs.pop('model_wrapper', None)
        super().__init__(**kwargs)
        self.wrap_modules = list(wrap_modules)
        self.fsdp_cfg = dict(fsdp_cfg or {})
        self.state_dict_type = state_dict_type

    def _setup_distributed(self, launcher: str = 'pytorch', backend: str = 'nccl', **kwargs):
        """mmengine's ``init_dist``, or a gloo process group on a host without CUDA."""
        if is_distributed():
            return
        if torch.cuda.is_available():
            return super()._setup_distributed(launcher, backend, **kwargs)
        dist.init_process_group('gloo')

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if any(is_dtensor(p) for p in model.parameters()):
            return model
        model = self.convert_model(model.to(get_device()))
        return apply_fully_shard(model, wrap_modules=self.wrap_modules, **self.fsdp_cfg)

    # ------------------------------------------------------------------- state dicts
    def model_state_dict(self) -> dict:
        return self.model.state_dict()

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: list = [(r'^module.', '')]) -> None:
        """Load DTensors (a sharded checkpoint) or full tensors (sharded onto the model)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        for pat, rep in revise_keys:
            state_dict = {re.sub(pat, rep, k): v for k, v in state_dict.items()}
        if any(is_dtensor(v) for v in state_dict.values()):
            self.model.load_state_dict(state_dict, strict=strict)
            return
        missing = set(self.model.state_dict()) - set(state_dict)
        if missing:
            self.logger.warning(f'FSDP2Strategy: missing keys in the checkpoint: {sorted(missing)}')
        set_model_state_dict(self.model, state_dict,
                             options=StateDictOptions(full_state_dict=True, strict=strict))

    # ------------------------------------------------------------------- checkpoints
    @staticmethod
    def _is_sharded_dir(filename: str) -> bool:
        return osp.isdir(filename) and osp.exists(osp.join(filename, SKELETON))

    def load_checkpoint(self, filename: str, *, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False, revise_keys: list = [(r'^module.', '')],
                        callback: Optional[Callable] = None) -> dict:
        """Load a sharded checkpoint directory or an ordinary full checkpoint."""
        if not self._is_sharded_dir(filename):
            return super().load_checkpoint(filename, map_location=map_location, strict=strict,
                                           revise_keys=revise_keys, callback=callback)
        self.logger.info(f'Load sharded checkpoint from {filename}')
        checkpoint = load_sharded_checkpoint(filename, _meshes(self.model))
        if callback is not None:
            callback(checkpoint)
        self.load_model_state_dict(checkpoint.pop('state_dict'), strict=strict,
                                   revise_keys=revise_keys)
        return checkpoint

    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, extra_ckpt: Optional[dict] = None,
                        callback: Optional[Callable] = None) -> None:
        """Collective: a sharded directory (every rank) or a full file (rank 0 writes)."""
        from mmengine.runner.checkpoint import save_checkpoint

        state: dict = dict(state_dict=self.model_state_dict())
        if save_optimizer and hasattr(self, 'optim_wrapper'):
            state['optimizer'] = self.optim_state_dict()
        if save_param_scheduler and hasattr(self, 'param_schedulers'):
            state['param_schedulers'] = self.scheduler_state_dict()
        extra_ckpt = dict(extra_ckpt or {})
        extra_ckpt.setdefault('meta', {})
        extra_ckpt['meta'].update(seed=self.seed,
                                  time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                                  mmengine=mmengine.__version__ + get_git_hash())
        state.update(extra_ckpt)
        if callback is not None:
            callback(state)
        if self.state_dict_type == 'sharded':
            save_sharded_checkpoint(state, filename, _meshes(self.model))
            return
        state = full_state(state)
        if dist.get_rank() == 0:
            save_checkpoint(state, filename)
