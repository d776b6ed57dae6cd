"""Per-tensor reductions of sharded parameters (FSDP2 ``fully_shard`` / DTensor), batched.

Every method reduces each parameter tensor to a few numbers (DiGraP: ``<g, d>``, ``||d||^2``
and the hyper-gradient; FTP/TPGM/SPD: norms, radii bounds, ratios). When a tensor is a DTensor
sharded over ``W`` ranks, each rank only sees its shard, so each of those numbers is first a
*local partial* (a partial sum, max or min over the shard) and then has to be combined over the
ranks, or the ranks would disagree on omega / the radius. :class:`ShardReducer` does that for a
whole bucket of tensors at once: the methods stack their partials into ``(k, N)`` matrices
(one column per tensor) and one collective per step (per process group, usually one) combines
all of them together; columns of unsharded tensors are left untouched. With no sharded tensor
it is the identity and communicates nothing, so a single-process or DDP run is bit-identical to
one without it (``docs/algorithm.md``, "Distributed training").

Row-wise quantities (the authors' row-normalised hyper-gradient, FTP's and SPD/TPGM's MARS row
norms) stay local when the sharding is along dim 0, FSDP2's default ``Shard(0)``: every row
lives on one rank. A 1-D tensor (bias, norm weight) is *one* row, split over the ranks, so its
"row" quantities are whole-tensor partials and are reduced. Row-wise quantities of a tensor
sharded along another dim (tensor parallel ``Shard(1)``) are refused with a clear error.

This module is pure PyTorch (``torch.distributed``), no mmengine import.
"""
import functools
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ['is_dtensor', 'local_tensor', 'ShardSpec', 'shard_spec', 'ShardReducer',
           'IDENTITY', 'to_dtensor_like', 'local_max', 'local_min']


def is_dtensor(t) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (also as an ``nn.Parameter``)."""
    return _is_dtensor_type(type(t))


@functools.lru_cache(maxsize=None)
def _is_dtensor_type(cls: type) -> bool:
    """The class test of :func:`is_dtensor`, once per class (it runs for every tensor of
    every optimizer step)."""
    return any(c.__name__ == 'DTensor' for c in cls.__mro__)


def local_tensor(t: Tensor) -> Tensor:
    """The local shard of a DTensor (the storage itself: in-place edits reach the DTensor);
    any other tensor is returned as it is."""
    if not is_dtensor(t):
        return t
    with torch.no_grad():
        return t.to_local()


class ShardSpec(NamedTuple):
    """How one parameter tensor is sharded. ``group`` None: not sharded (plain or replicated)."""
    group: Optional[object]  #: the process group of the sharded mesh dimension
    dim: Optional[int]  #: the tensor dim that is sharded (0 for FSDP2)
    world: int  #: number of shards


_UNSHARDED = ShardSpec(None, None, 1)


def shard_spec(p: Tensor) -> ShardSpec:
    """The :class:`ShardSpec` of ``p`` (a DTensor or a plain tensor).

    Raises:
        NotImplementedError: ``p`` is sharded over more than one mesh dimension (e.g. FSDP and
            tensor parallel at once), or has a ``Partial`` placement.
    """
    if not is_dtensor(p):
        return _UNSHARDED
    shards = []
    for i, pl in enumerate(p.placements):
        if pl.is_partial():
            raise NotImplementedError(
                f'a parameter with a Partial placement ({p.placements}) cannot be updated; '
                'redistribute it to Shard/Replicate first')
        if pl.is_shard():
            shards.append((i, pl.dim % max(p.dim(), 1)))
    if not shards:
        return _UNSHARDED
    if len(shards) > 1:
        raise NotImplementedError(
            f'a parameter sharded over {len(shards)} mesh dimensions ({p.placements}) is not '
            'supported by the robust fine-tuning methods; shard it over one dimension (FSDP2 '
            '`fully_shard`, or HSDP: Replicate + Shard(0))')
    mesh_dim, dim = shards[0]
    mesh = p.device_mesh
    return ShardSpec(mesh.get_group(mesh_dim), dim, mesh.size(mesh_dim))


def local_max(t: Tensor) -> Tensor:
    """``t.max()`` (0-d); ``-inf`` for an empty local shard."""
    return t.max() if t.numel() else t.new_full((), float('-inf'))


def local_min(t: Tensor) -> Tensor:
    """``t.min()`` (0-d); ``+inf`` for an empty local shard."""
    return t.min() if t.numel() else t.new_full((), float('inf'))


class ShardReducer:
    """Combines per-tensor local partials over the ranks that hold the shards, batched.

    Args:
        params: the N parameters of a bucket, DTensors or plain tensors (in the column order
            of the matrices given to :meth:`reduce`).

    Attributes:
        sharded: (N,) list of bool, the tensor is sharded.
        rows_local: (N,) list of bool, every row (dim 0 slice) of the tensor lives on one rank:
            unsharded, or sharded along dim 0 with at least 2 dims.
        any_sharded: at least one tensor is sharded (else :meth:`reduce` is the identity).
    """

    def __init__(self, params: Sequence[Tensor]):
        self.specs = [shard_spec(p) for p in params]
        self.sharded = [s.group is not None for s in self.specs]
        self.rows_local = [s.group is None or (s.dim == 0 and p.dim() >= 2)
                           for s, p in zip(self.specs, params)]
        self.any_sharded = any(self.sharded)
        self._groups: Dict[int, Tuple[object, List[int]]] = {}
        for i, s in enumerate(self.specs):
            if s.group is not None:
                self._groups.setdefault(id(s.group), (s.group, []))[1].append(i)

    def require_rows_local(self, what: str, names: Optional[Sequence[str]] = None) -> None:
        """Refuse row-wise quantities of tensors sharded along a dim other than 0.

        Raises:
            NotImplementedError: naming the tensor and the fix.
        """
        for i, (s, ok) in enumerate(zip(self.specs, self.rows_local)):
            if s.group is not None and not ok and s.dim != 0:
                name = names[i] if names else f'tensor {i}'
                raise NotImplementedError(
                    f'{what} of {name}, sharded along dim {s.dim}, would need a per-row '
                    'all-reduce: shard parameters along dim 0 (FSDP2 `fully_shard` default) '
                    'or use the whole-tensor variant of the method')

    def reduce(self, sums: Optional[Tensor] = None, maxs: Optional[Tensor] = None,
               mins: Optional[Tensor] = None
               ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """Sum / max / min the columns of sharded tensors over their shard group.

        Args:
            sums, maxs, mins: None or ``(k, N)`` (or ``(N,)``) matrices of local partials, one
                column per tensor, of one floating dtype and device.

        Returns:
            The three inputs with the sharded columns combined over the ranks (new tensors; the
            inputs themselves when nothing is sharded). One collective per process group: an
            ``all_reduce`` when only sums are given, else one ``all_gather``.
        """
        if not self.any_sharded:
            return sums, maxs, mins
        parts = [(x, kind) for x, kind in ((sums, 's'), (maxs, 'M'), (mins, 'm'))
                 if x is not None]
        mats = [x.reshape(-1, x.shape[-1]) if x.dim() else x.reshape(1, 1) for x, _ in parts]
        outs = [m.clone() for m in mats]
        for group, cols in self._groups.values():
            idx = torch.tensor(cols, device=mats[0].device)
            blocks = [m.index_select(1, idx) for m in mats]
            blocks = [-b if kind == 'm' else b for b, (_, kind) in zip(blocks, parts)]
            sizes = [b.shape[0] for b in blocks]
            buf = torch.cat(blocks).contiguous()
            if all(kind == 's' for _, kind in parts):
                dist.all_reduce(buf, group=group)
                combined = [buf]
            else:
                world = dist.get_world_size(group)
                gathered = [torch.empty_like(buf) for _ in range(world)]
                dist.all_gather(gathered, buf, group=group)
                stack = torch.stack(gathered)
                combined = []
                for chunk, (_, kind) in zip(stack.split(sizes, dim=1), parts):
                    combined.append(chunk.sum(0) if kind == 's' else chunk.amax(0))
            pieces = combined if len(combined) > 1 else list(combined[0].split(sizes))
            for out, piece, (_, kind) in zip(outs, pieces, parts):
                out.index_copy_(1, idx, -piece if kind == 'm' else piece)
        res = iter(o.reshape(x.shape) for o, (x, _) in zip(outs, parts))
        return tuple(next(res) if x is not None else None for x in (sums, maxs, mins))

    def sum(self, sums: Tensor) -> Tensor:
        """:meth:`reduce` of sums only (one ``all_reduce``)."""
        return self.reduce(sums)[0]


class _Identity(ShardReducer):
    """The reducer of a bucket with no sharded tensor (N unknown)."""

    def __init__(self):
        self.specs, self.sharded, self.rows_local, self.any_sharded = [], [], [], False
        self._groups = {}

    def require_rows_local(self, what, names=None):
        return None


#: a reducer that never communicates (plain tensors, DDP)
IDENTITY = _Identity()


def to_dtensor_like(local: Tensor, param: Tensor, rows: bool = False) -> Tensor:
    """Wrap a local state tensor of a sharded ``param`` as a DTensor (for checkpoints).

    Args:
        local: the rank's part: the shape of the local shard (``rows=False``) or
            ``[local rows, 1, ...]`` (``rows=True``, sharded along dim 0).
        param: the DTensor parameter it belongs to.
        rows: ``local`` is a row-shaped state (one value per row of ``param``).

    Returns:
        A DTensor on ``param``'s mesh with ``param``'s placements and the global shape
        (``param.shape``, or ``[param.shape[0], 1, ...]``).
    """
    from torch.distributed.tensor import DTensor
    shape = torch.Size([param.shape[0]] + list(local.shape[1:])) if rows else param.shape
    stride = torch.empty(shape, device='meta').stride()
    return DTensor.from_local(local, param.device_mesh, param.placements, run_check=False,
                              shape=shape, stride=stride)
