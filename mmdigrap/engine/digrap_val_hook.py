"""``DiGraPValHook``: validation hyper-gradients for ``DiGraP(hypergrad_source='val')``.

.. code-block:: python

    optim_wrapper = dict(type='DiGraPOptimWrapper', optimizer=dict(type='Adam', lr=1e-3),
                         digrap=dict(mu=0.5, hypergrad_source='val', exclude=[r'^head\\.']))
    custom_hooks = [dict(type='RobustFTHook'),
                    # held-out ID batches; default: the run's val_dataloader
                    dict(type='DiGraPValHook', interval=1, dataloader=dict(...))]

``docs/algorithm.md`` section 14.2. The batch cycling, the eval-mode loss and the resume of the
cycle are :class:`~mmdigrap.engine.TPGMHook`'s (TPGM trains its radii on the same kind of
batches); this hook only differs in what it does with the loss.
"""
from typing import List

import torch
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from ..optim import DiGraP
from .baseline_hooks import TPGMHook

__all__ = ['DiGraPValHook']


@HOOKS.register_module()
class DiGraPValHook(TPGMHook):
    """After optimizer steps ``0, interval, 2*interval, ...`` computes the gradient of the
    model's loss on the next held-out batch at the current weights (eval mode, the mode is
    restored) and hands it to :meth:`mmdigrap.optim.DiGraP.set_val_gradients`; the next step's
    omega update then uses it (on the other steps omega stays: ``interval > 1`` trades the
    extra forward/backward for fewer hyper-steps). Gradient accumulation and GradScaler-skipped
    steps are recognised through the optimizer's step counter. Logged:
    ``train/digrap_val_loss``.

    Args:
        dataloader: held-out ID data: a dataloader config, a ``DataLoader``, or None for the
            run's ``val_dataloader``. Keep it disjoint from the training data.
        interval: optimizer steps between two validation hyper-gradients (>= 1).

    Raises:
        ValueError: ``interval < 1``.
        RuntimeError: at ``before_train``, when no DiGraP optimizer has a param group with
            ``hypergrad_source='val'``, or when no held-out data is available.
    """

    def __init__(self, dataloader=None, interval: int = 1):
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'DiGraPValHook: interval must be an int >= 1, got {interval!r}')
        super().__init__(dataloader=dataloader, interval=interval, apply_every_iter=False)

    @staticmethod
    def _digraps(runner) -> List[DiGraP]:
        wrappers = (runner.optim_wrapper.values()
                    if isinstance(runner.optim_wrapper, OptimWrapperDict) else
                    [runner.optim_wrapper])
        return [w.optimizer for w in wrappers if isinstance(w.optimizer, DiGraP)
                and any(g.get('hypergrad_source') == 'val' for g in w.optimizer.param_groups)]

    def before_train(self, runner) -> None:
        opts = self._digraps(runner)
        if not opts:
            raise RuntimeError(
                'DiGraPValHook needs a DiGraP optim_wrapper with validation hyper-gradients: set '
                "optim_wrapper.digrap.hypergrad_source='val' (type='DiGraPOptimWrapper'), or "
                'remove DiGraPValHook from custom_hooks.')
        model = self._model(runner)
        for opt in opts:
            if not opt._names:
                opt.set_param_names(model.named_parameters())
            self._seen_step[id(opt)] = opt.hyper_step
        self._loader = self._build_loader(runner)
        self._iter = None
        self._skip = self._consumed % len(self._loader) if self._consumed else 0

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['digrap_val_batches'] = self._consumed

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False):
            self._consumed = int(checkpoint.get('meta', {}).get('digrap_val_batches', 0))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for opt in self._digraps(runner):
            last = self._seen_step.get(id(opt), 0)
            if opt.hyper_step == last:  # accumulating, or a GradScaler-skipped step
                continue
            self._seen_step[id(opt)] = opt.hyper_step
            if (opt.hyper_step - 1) % self.interval:
                continue
            model = self._model(runner)
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            was_training = model.training
            model.eval()
            try:
                with torch.enable_grad():
                    loss = self._loss_fn(model)({})
                    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            finally:
                model.train(was_training)
            opt.set_val_gradients(zip([p for _, p in named], grads))
            runner.message_hub.update_scalar('train/digrap_val_loss', float(loss.detach()))
