"""Exact resume: the random states and the open gradient-accumulation window in checkpoints.

mmengine 0.10.7 checkpoints hold the weights, the optimizer, the LR schedulers and the message
hub, but not two things a resumed run needs to continue *exactly* as an uninterrupted one:

* **the random states** (python ``random``, numpy's global generator, torch's CPU generator,
  the CUDA generators). mmengine re-seeds on resume (``randomness.seed``), so every random
  transform after a resume (``RandomFlip`` uses numpy's global generator) draws other numbers
  than the uninterrupted run would have drawn;
* **the partial gradient of an open accumulation window**: with
  ``optim_wrapper=dict(accumulative_counts=K)`` a checkpoint taken after iteration ``i`` with
  ``i % K != 0`` leaves the gradients of the window's first ``i % K`` iterations in ``.grad``;
  mmengine does not save them and only warns on resume ("the gradient of some iterations is
  lost").

:class:`ExactResumeHook` saves both with each checkpoint (top-level key ``'exact_resume'``: plain
tensors, ints and tuples, so the file loads under ``torch.load(weights_only=True)``) and restores
them on ``resume``. The shipped configs get it through ``configs/_base_/default_runtime.py``
(``default_hooks.exact_resume``) and the family ``_base_`` files.

**Which states, restored when.** The random states are captured per rank at the end of each
training epoch (``after_train_epoch``, before ``CheckpointHook`` writes) and are re-applied at
the start of the next epoch (``before_train_epoch``), in the uninterrupted run as in the resumed
one. So whatever runs between two epochs (a validation loop draws from torch's generator when it
builds its data-loader iterator) is invisible to the training stream, and both runs start the
next epoch from the same states. The sampler needs no position: at an epoch boundary
``DefaultSampler`` reshuffles from ``seed + epoch``. Checkpoints in the middle of an epoch
(``CheckpointHook(by_epoch=False)``, iteration-based loops) keep the accumulated gradients, but
their random states are *not* restored: mmengine's ``IterBasedTrainLoop`` replays the skipped
batches through the data pipeline on resume (which draws from the generators again) and
``EpochBasedTrainLoop`` restarts the epoch; a resume there is exact only without random
augmentation.

**Accumulated gradients.** Choice: save and restore them (rather than allowing checkpoints only
on window boundaries), so that ``CheckpointHook``'s interval and the epoch-end checkpoints stay
where the user put them even when the epoch length is not a multiple of ``accumulative_counts``.
They are written only when a window is open (``_inner_count % accumulative_counts != 0``), as
``{parameter name: gradient}`` per rank (under DDP each rank's ``.grad`` holds its own local sum
inside a window), and put back into ``.grad`` in ``before_train``.

Under DDP every rank's states are gathered (``all_gather_object``) when ``CheckpointHook`` is
about to save (the hook asks it, with its own ``every_n_*`` rules), and rank ``r`` restores entry
``r``; a checkpoint written by another world size restores nothing (with a warning).
"""
import random
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

__all__ = ['ExactResumeHook', 'get_rng_state', 'set_rng_state']

KEY = 'exact_resume'
VERSION = 1


def get_rng_state() -> dict:
    """This process's random states as plain tensors / ints / tuples (``weights_only``-safe).

    Keys: ``python`` (``random.getstate()``), ``numpy`` (the legacy global ``MT19937`` state:
    ``keys`` int64 tensor [624], ``pos``, ``has_gauss``, ``cached_gaussian``), ``torch``
    (``torch.get_rng_state()``, uint8 tensor) and ``cuda`` (``torch.cuda.get_rng_state_all()``
    when CUDA is initialised, else None).
    """
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return dict(python=random.getstate(),
                numpy=dict(keys=torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                           pos=int(pos), has_gauss=int(has_gauss),
                           cached_gaussian=float(cached)),
                torch=torch.get_rng_state(), cuda=cuda)


def set_rng_state(state: dict) -> List[str]:
    """Restore what :func:`get_rng_state` returned; returns the names of what was restored.

    The CUDA states are restored only when CUDA is available with as many devices as were
    saved (else skipped: the name is left out of the returned list).
    """
    version, internal, gauss = state['python']
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].cpu().numpy().astype(np.uint32), int(n['pos']),
                         int(n['has_gauss']), float(n['cached_gaussian'])))
    torch.set_rng_state(state['torch'].cpu())
    done = ['python', 'numpy', 'torch']
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        done.append('cuda')
    return done


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _open_window(runner) -> bool:
    """Whether a gradient-accumulation window is open (gradients not yet stepped)."""
    ow = runner.optim_wrapper
    wrappers = ow.values() if isinstance(ow, OptimWrapperDict) else [ow]
    for w in wrappers:
        k = getattr(w, '_accumulative_counts', 1)
        if k > 1 and getattr(w, '_inner_count', 0) % k != 0:
            return True
    return False


def _partial_grads(runner) -> Optional[Dict[str, torch.Tensor]]:
    """``{name: .grad on the CPU}`` when a window is open, else None."""
    if not _open_window(runner):
        return None
    return {n: p.grad.detach().to('cpu', copy=True)
            for n, p in _unwrap(runner.model).named_parameters() if p.grad is not None}


def _checkpoint_due(runner, stage: str) -> bool:
    """Whether a ``CheckpointHook`` will save in this ``after_train_<stage>`` (same rules)."""
    for h in runner.hooks:
        if not isinstance(h, CheckpointHook):
            continue
        if stage == 'iter' and not h.by_epoch and (
                h.every_n_train_iters(runner, h.interval, h.save_begin)
                or (h.save_last and h.is_last_train_iter(runner))):
            return True
        if stage == 'epoch' and h.by_epoch and (
                h.every_n_epochs(runner, h.interval, h.save_begin)
                or (h.save_last and h.is_last_train_epoch(runner))):
            return True
    return False


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Save the random states and an open accumulation window's gradients; restore on resume.

    See the module docstring for what is saved, when it is restored and the limits. On by
    default in the shipped configs (``default_hooks.exact_resume``); turn it off with
    ``--cfg-options default_hooks.exact_resume.rng=False default_hooks.exact_resume.grads=False``
    (mmengine 0.10.7 accepts ``None`` only for its own default-hook names).

    Args:
        rng (bool): save / restore the random states (python, numpy, torch, CUDA; per rank).
        grads (bool): save / restore the partial gradients of an open accumulation window.

    Checkpoint format: ``checkpoint['exact_resume'] = dict(version=1, iter, world_size,
    epoch_end, rng=[per rank] or None, grads=[per rank {name: tensor}] or None)``.
    """

    priority = 'LOW'  # after_train_*: before CheckpointHook (VERY_LOW) writes

    def __init__(self, rng: bool = True, grads: bool = True):
        self.rng = bool(rng)
        self.grads = bool(grads)
        self._snapshot: Optional[dict] = None
        self._pending_rng: Optional[dict] = None
        self._pending_grads: Optional[Dict[str, torch.Tensor]] = None
        self._resumed_iter: Optional[int] = None

    # ------------------------------------------------------------------------- saving
    def _take(self, runner, epoch_end: bool, rng_state: Optional[dict], gather: bool) -> dict:
        rank, world = get_dist_info()
        grads = _partial_grads(runner) if self.grads else None
        local = dict(rng=rng_state, grads=grads)
        if gather and world > 1:
            everyone = all_gather_object(local)
        else:
            everyone = [local] + [dict(rng=None, grads=None)] * (world - 1)
        any_grads = any(e['grads'] is not None for e in everyone)
        return dict(version=VERSION, iter=runner.iter, world_size=world, epoch_end=epoch_end,
                    rng=[e['rng'] for e in everyone] if rng_state is not None else None,
                    grads=[e['grads'] for e in everyone] if any_grads else None)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if _checkpoint_due(runner, 'iter'):
            self._snapshot = self._take(runner, epoch_end=False, rng_state=None, gather=True)

    def after_train_epoch(self, runner) -> None:
        state = get_rng_state() if self.rng else None
        self._pending_rng = state  # re-applied at the next epoch start (also when not resumed)
        if _checkpoint_due(runner, 'epoch'):
            self._snapshot = self._take(runner, epoch_end=True, rng_state=state, gather=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        snap = self._snapshot
        if snap is None or snap['iter'] != runner.iter:
            # a save the hook did not see coming (e.g. a best checkpoint): this rank only, no
            # collective here (runner.save_checkpoint runs on rank 0 alone)
            snap = self._take(runner, epoch_end=False, rng_state=None, gather=False)
        checkpoint[KEY] = snap

    # ------------------------------------------------------------------------ restoring
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):  # load_from: weights only, a fresh run
            return
        snap = checkpoint.get(KEY)
        if snap is None:
            runner.logger.warning(
                'ExactResumeHook: the checkpoint has no exact-resume state (written without '
                'this hook): random states and partial accumulated gradients are not restored')
            return
        rank, world = get_dist_info()
        if snap.get('world_size') != world:
            runner.logger.warning(
                f"ExactResumeHook: the checkpoint was written by {snap.get('world_size')} "
                f'processes, this run has {world}: random states and partial gradients are '
                'not restored')
            return
        self._resumed_iter = snap.get('iter')
        if self.rng and snap.get('rng') is not None and snap['rng'][rank] is not None \
                and snap.get('epoch_end'):
            self._pending_rng = snap['rng'][rank]
        elif self.rng:
            runner.logger.info(
                'ExactResumeHook: random states are restored only from checkpoints written at '
                'the end of an epoch; this one was written mid-epoch, so random data '
                'augmentation after the resume differs from an uninterrupted run')
        if self.grads and snap.get('grads') is not None:
            self._pending_grads = snap['grads'][rank]
            if self._pending_grads is None:
                runner.logger.warning(
                    f'ExactResumeHook: no partial gradients saved for rank {rank}')

    def before_train(self, runner) -> None:
        grads, self._pending_grads = self._pending_grads, None
        if not grads:
            return
        params = dict(_unwrap(runner.model).named_parameters())
        unknown = sorted(set(grads) - set(params))
        if unknown:
            raise KeyError(f'ExactResumeHook: the checkpoint holds accumulated gradients of '
                           f'{unknown[:5]}, which the model does not have; resume with the '
                           'model that wrote it (or load_from= to start a new run)')
        for name, g in grads.items():
            p = params[name]
            p.grad = g.to(device=p.device, dtype=p.dtype, copy=True)
        runner.logger.info(f'ExactResumeHook: restored the partial gradients of the open '
                           f'accumulation window ({len(grads)} tensors)')

    def before_train_epoch(self, runner) -> None:
        state, self._pending_rng = self._pending_rng, None
        if state is not None:
            done = set_rng_state(state)
            if self._resumed_iter is not None:
                runner.logger.info(f'ExactResumeHook: restored the random states '
                                   f'({", ".join(done)}) of iteration {self._resumed_iter}')
                self._resumed_iter = None
