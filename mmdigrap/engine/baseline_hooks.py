"""``TPGMHook``: TPGM's projection update, driven the mmengine way.

.. code-block:: python

    optim_wrapper = dict(type='TPGMOptimWrapper',
                         optimizer=dict(type='SGD', lr=1e-2, momentum=0.9, nesterov=True),
                         tpgm=dict(proj_lr=1e-2, norm='mars', max_iters=1,
                                   exclude=[r'^head\\.']))
    custom_hooks = [
        dict(type='RobustFTHook'),  # theta0 after load_from, logging
        # held-out batches for the radii; default: the run's val_dataloader
        dict(type='TPGMHook', interval=1,
             dataloader=dict(batch_size=32, dataset=..., sampler=dict(type='DefaultSampler',
                                                                       shuffle=True))),
    ]

Post-hoc TPGM (the reference's ImageNet/ViT recipe: fine-tune, then learn the projection once)
is ``dict(type='TPGMHook', interval=0, apply_every_iter=False, final_iters=200)``.
"""
from typing import Dict, Iterator, Optional, Union

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop
from torch.func import functional_call
from torch.utils.data import DataLoader

from ..optim import TPGM
from ..utils import unwrap_model

__all__ = ['TPGMHook']


@HOOKS.register_module()
class TPGMHook(Hook):
    """Trains TPGM's projection radii on validation batches and applies the projection.

    After every real optimizer step (gradient accumulation and GradScaler-skipped steps are
    recognised through the optimizer's step counter):

    * on steps ``0, interval, 2*interval, ...``: ``max_iters`` Adam iterations on the radii,
      each on the next batch of ``dataloader`` (cycled), then the projection
      (:meth:`~mmdigrap.optim.TPGM.tpgm_update`);
    * on the other steps, if ``apply_every_iter``: the projection with the current radii.

    This is the schedule of the reference ``DomainNet_ResNet_Exp`` (``proj_freq``; it counts
    steps per epoch, this hook counts them over the whole run). ``final_iters > 0`` replaces the
    last iteration's work by one update with that many iterations (post-hoc TPGM; done in the
    last ``after_train_iter`` so the last checkpoint and the final validation see it).

    The validation loss is the model's own ``mode='loss'`` loss (``parse_losses``), computed in
    eval mode (dropout off, BatchNorm running statistics untouched) with the projected weights
    passed through ``torch.func.functional_call``; the model's mode is restored afterwards.
    Logged:
    ``train/tpgm_val_loss`` and ``train/tpgm_radius_mean`` (one host sync per training update).

    Resume: the radii are in the optimizer state; the number of validation batches drawn is
    saved in the checkpoint's ``meta`` and, on ``resume``, the cycle continues where it stopped
    (bit-exact when the loader's order is deterministic, e.g. ``DefaultSampler`` with a seed).

    Args:
        dataloader: held-out data for the radii: a dataloader config (built with the runner's
            seed), a ``DataLoader``, or None for the run's ``val_dataloader``. Keep it
            disjoint from the training data.
        interval: optimizer steps between two radius updates (>= 0; 0 = none during
            training).
        apply_every_iter: project after every optimizer step (the reference does).
        max_iters: Adam iterations per update; None = the optimizer's ``max_iters``.
        final_iters: iterations of one last update after the last training iteration (0 =
            none).

    Raises:
        ValueError: bad ``interval`` / ``max_iters`` / ``final_iters``.
        RuntimeError: at ``before_train``, when the optim_wrapper is not a TPGM wrapper, or
            when no ``dataloader`` is given and the run has no ``val_dataloader``.
    """

    priority = 'ABOVE_NORMAL'  # project before EMA / logging / checkpoint hooks see the weights

    def __init__(self, dataloader: Union[Dict, DataLoader, None] = None, interval: int = 1,
                 apply_every_iter: bool = True, max_iters: Optional[int] = None,
                 final_iters: int = 0):
        for name, val in (('interval', interval), ('final_iters', final_iters)):
            if not isinstance(val, int) or val < 0:
                raise ValueError(f'TPGMHook: {name} must be an int >= 0, got {val!r}')
        if max_iters is not None and (not isinstance(max_iters, int) or max_iters < 1):
            raise ValueError(f'TPGMHook: max_iters must be None (use the optimizer\'s) or an '
                             f'int >= 1, got {max_iters!r}')
        self.dataloader_cfg = dataloader
        self.interval = interval
        self.apply_every_iter = bool(apply_every_iter)
        self.max_iters = max_iters
        self.final_iters = final_iters
        self._loader: Optional[DataLoader] = None
        self._iter: Optional[Iterator] = None
        self._seen_step: Dict[int, int] = {}
        #: validation batches drawn so far (checkpointed, so a resumed run draws the same ones)
        self._consumed = 0
        self._skip = 0

    # ------------------------------------------------------------------------------ setup
    @staticmethod
    def _tpgms(runner):
        wrappers = (runner.optim_wrapper.values()
                    if isinstance(runner.optim_wrapper, OptimWrapperDict) else
                    [runner.optim_wrapper])
        return [w.optimizer for w in wrappers if isinstance(w.optimizer, TPGM)]

    @staticmethod
    def _model(runner):
        return unwrap_model(runner.model)

    def _build_loader(self, runner) -> DataLoader:
        cfg = self.dataloader_cfg
        if cfg is None:
            if isinstance(runner._val_loop, BaseLoop):
                return runner.val_loop.dataloader
            cfg = getattr(runner, '_val_dataloader', None)
            if cfg is None:
                raise RuntimeError(
                    'TPGMHook needs held-out batches to train the projection radii: pass '
                    "`dict(type='TPGMHook', dataloader=dict(dataset=..., batch_size=...))` or "
                    'give the run a `val_dataloader` (with `val_cfg` and `val_evaluator`).')
        if isinstance(cfg, DataLoader):
            return cfg
        return runner.build_dataloader(cfg, seed=runner.seed)

    def before_train(self, runner) -> None:
        tpgms = self._tpgms(runner)
        if not tpgms:
            raise RuntimeError(
                f'TPGMHook needs a TPGM optim_wrapper, got {type(runner.optim_wrapper).__name__}'
                f"/{type(runner.optim_wrapper.optimizer).__name__}. Set optim_wrapper.type="
                "'TPGMOptimWrapper' (options in `tpgm=dict(...)`), or remove TPGMHook.")
        model = self._model(runner)
        for opt in tpgms:
            if not opt._names:
                opt.set_param_names(model.named_parameters())
            opt.capture_anchors()
            self._seen_step[id(opt)] = opt.hyper_step
        self._loader = self._build_loader(runner)
        self._iter = None
        self._skip = self._consumed % len(self._loader) if self._consumed else 0

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['tpgm_val_batches'] = self._consumed

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False):  # not for load_from (weights only)
            self._consumed = int(checkpoint.get('meta', {}).get('tpgm_val_batches', 0))

    # --------------------------------------------------------------------------- the loss
    def _next_batch(self):
        if self._iter is None:
            self._iter = iter(self._loader)
            for _ in range(self._skip):  # resume: continue the cycle where the run stopped
                next(self._iter)
            self._skip = 0
        try:
            batch = next(self._iter)
        except StopIteration:
            self._iter = iter(self._loader)
            batch = next(self._iter)
        self._consumed += 1
        return batch

    def _loss_fn(self, model):
        def loss_fn(weights: Dict[str, torch.Tensor]) -> torch.Tensor:
            data = model.data_preprocessor(self._next_batch(), False)
            if isinstance(data, dict):
                args, kwargs = (), dict(data, mode='loss')
            elif isinstance(data, (list, tuple)):
                args, kwargs = tuple(data), dict(mode='loss')
            else:
                raise TypeError(f'TPGMHook: unsupported batch type {type(data).__name__} from '
                                'the data preprocessor (expected a dict, list or tuple)')
            losses = functional_call(model, weights, args, kwargs, strict=False)
            loss, _ = model.parse_losses(losses)
            return loss
        return loss_fn

    def _update(self, runner, opt: TPGM, max_iters: Optional[int]) -> None:
        model = self._model(runner)
        was_training = model.training
        model.eval()
        try:
            val_loss = opt.tpgm_update(self._loss_fn(model), max_iters=max_iters)
        finally:
            model.train(was_training)
        if val_loss.numel():
            radius = opt.last_stats['radius']
            vals = torch.stack([val_loss.float().mean().cpu(),
                                radius.float().mean().cpu()]).tolist()
            runner.message_hub.update_scalar('train/tpgm_val_loss', vals[0])
            runner.message_hub.update_scalar('train/tpgm_radius_mean', vals[1])

    # ------------------------------------------------------------------------------ hooks
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        last_iter = self.final_iters > 0 and self.is_last_train_iter(runner)
        for opt in self._tpgms(runner):
            if last_iter:  # post-hoc update, before the last checkpoint and validation
                self._seen_step[id(opt)] = opt.hyper_step
                self._update(runner, opt, self.final_iters)
                continue
            last = self._seen_step.get(id(opt), 0)
            if opt.hyper_step == last:  # accumulating, or a GradScaler-skipped step
                continue
            self._seen_step[id(opt)] = opt.hyper_step
            step_index = opt.hyper_step - 1
            if self.interval > 0 and step_index % self.interval == 0:
                self._update(runner, opt, self.max_iters)
            elif self.apply_every_iter:
                opt.apply_projection()
