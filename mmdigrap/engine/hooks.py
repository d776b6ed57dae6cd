"""``RobustFTHook``: anchors after load, random-init check and logging for every robust FT
wrapper (``DiGraPHook`` is its deprecated old name)."""
import warnings
from typing import Any, Iterable, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from ..optim import GradientProjectionOptimizer
from ..optim.digrap import TRACK_KEYS as _TRACK_KEYS
from ..utils import unwrap_model
from .optim_wrapper import report_param_groups

__all__ = ['RobustFTHook', 'DiGraPHook', 'find_pretrained_source']


def _iter_dicts(obj: Any) -> Iterable[dict]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _iter_dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _iter_dicts(v)


def find_pretrained_source(runner) -> Optional[str]:
    """Where the run's pre-trained weights come from, or None for a random initialisation.

    Looks at ``load_from`` / ``resume``, then anywhere in ``cfg.model`` for an
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (mmpretrain/mmdet/mmseg backbones), a
    non-empty ``pretrained=`` (mmseg's segmentors) or ``checkpoint`` of a TIMM/HF backbone with
    ``pretrained=True``.
    """
    if getattr(runner, '_load_from', None):
        return f'load_from={runner._load_from}'
    if getattr(runner, '_resume', False):
        return 'resume'
    model_cfg = getattr(getattr(runner, 'cfg', None), 'model', None)
    for d in _iter_dicts(model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else model_cfg):
        if d.get('type') == 'Pretrained' and d.get('checkpoint'):
            return f"init_cfg Pretrained checkpoint={d['checkpoint']}"
        if isinstance(d.get('pretrained'), str) and d['pretrained']:
            return f"pretrained={d['pretrained']}"
        if d.get('pretrained') is True:
            return f"{d.get('type', 'model')}(pretrained=True)"
    return None


@HOOKS.register_module()
class RobustFTHook(Hook):
    """Companion hook of the robust fine-tuning OptimWrappers (DiGraP and the baselines).

    * ``before_train`` (after ``load_from`` / ``resume`` / ``init_weights``): refuses to start
      from random weights (theta0 would be meaningless) unless ``allow_random_init=True``,
      snapshots theta0 for the tensors that have no anchor yet (a resumed run keeps its
      checkpointed anchors), and prints once which tensors are anchored and which excluded, and
      where each anchor came from (restored from the checkpoint, or snapshotted from the loaded
      weights). Parameter names come from ``RobustFTOptimWrapperConstructor`` at build time; a
      wrapper built without it gets them here (names of the unwrapped model). It also logs the
      param-group table and the weight-decay warning of
      :func:`~mmdigrap.engine.optim_wrapper.report_param_groups` unless that constructor
      already did.
    * ``after_train_iter``, every ``log_interval`` iterations: logs ``omega_mean``,
      ``omega_max``, ``conflict_rate`` (fraction of tensors with <g, theta-theta0> < 0) and
      ``dist_to_anchor`` (mean ||theta-theta0||_2) to the message hub (so they show in the text
      log), and per-layer ``omega/<name>`` and ``dist/<name>`` scalars to the visualizer
      (``vis_data/scalars.json`` with the local backend; see ``tools/analysis/plot_omega.py``);
      for DiGraP also ``dot/<name>`` (<g, theta - theta0>), ``hgrad/<name>`` (the hyper-gradient
      h_t, when there was a hyper-step) and, with ``digrap=dict(track_update=True)``, the update
      statistics (``update_cos/<name>``, ``radial_update/<name>``, ...; see
      ``tools/analysis/digrap_dynamics.py``).
      At the same time it warns once per tensor whose ||theta - theta0||^2 overflowed float32
      (its projection is skipped).

    Args:
        log_interval: iterations between two logs (host syncs happen only then).
        allow_random_init: accept a run with no pre-trained weights.
        log_per_layer: also write the per-layer scalars to the visualizer.

    Raises:
        RuntimeError: at ``before_train``, when no pre-trained weights were loaded and
            ``allow_random_init`` is False, or when the optim_wrapper is not one of this
            plugin's (the message says what to change).
    """

    priority = 'NORMAL'

    def __init__(self, log_interval: int = 50, allow_random_init: bool = False,
                 log_per_layer: bool = True):
        if log_interval < 1:
            raise ValueError(f'{type(self).__name__}: log_interval must be >= 1, got '
                             f'{log_interval}')
        self.log_interval = int(log_interval)
        self.allow_random_init = allow_random_init
        self.log_per_layer = log_per_layer

    @staticmethod
    def _projections(runner) -> List[GradientProjectionOptimizer]:
        wrappers = (runner.optim_wrapper.values()
                    if isinstance(runner.optim_wrapper, OptimWrapperDict) else
                    [runner.optim_wrapper])
        return [w.optimizer for w in wrappers
                if isinstance(w.optimizer, GradientProjectionOptimizer)]

    def before_train(self, runner) -> None:
        projections = self._projections(runner)
        if not projections:
            raise RuntimeError(
                f'{type(self).__name__} needs a robust fine-tuning optim_wrapper, got '
                f'{type(runner.optim_wrapper).__name__}. Set '
                "optim_wrapper.type='DiGraPOptimWrapper' (or another mmdigrap wrapper), or remove "
                f'{type(self).__name__} from custom_hooks.')
        source = find_pretrained_source(runner)
        if source is None and not self.allow_random_init:
            raise RuntimeError(
                f'{type(self).__name__}: no pre-trained weights were loaded (no `load_from`, no '
                "`resume`, no `init_cfg=dict(type='Pretrained', ...)` in the model). Robust "
                'fine-tuning pulls towards the pre-trained weights theta0, which would be a random '
                'init here. Set '
                '`load_from=CKPT` or a backbone `init_cfg`, or pass '
                f"`dict(type='{type(self).__name__}', allow_random_init=True)` if that is "
                'intended.')
        model = unwrap_model(runner.model)
        for opt in projections:
            if not opt._names:  # built without RobustFTOptimWrapperConstructor
                opt.set_param_names(model.named_parameters())
            taken = opt.capture_anchors()
            items = opt.managed_parameters()
            anchored = [n for n, p, ex in items
                        if not ex and p.requires_grad and 'anchor' in opt.state.get(p, {})]
            excluded = [n for n, _, ex in items if ex]
            numel = sum(p.numel() for _, p, ex in items
                        if not ex and p.requires_grad and 'anchor' in opt.state.get(p, {}))
            counts = opt.anchor_counts
            if opt.anchor_policy.stored:
                origin = (f'{counts["restored"]} restored from the checkpoint, '
                          f'{counts["snapshotted"]} snapshotted from the weights '
                          f'({taken} by this hook; theta0 from '
                          f'{source or "the random init (allow_random_init=True)"})')
            else:
                origin = 'theta0 = 0, nothing stored'
            runner.logger.info(
                f'{type(self).__name__}: {type(opt).__name__} ({opt.extra_repr()}) anchors '
                f'{len(anchored)} tensors ({numel / 1e6:.2f} M params; {origin}; '
                f'anchor={opt.anchor_policy.mode!r}). Excluded ({len(excluded)}): '
                f'{", ".join(excluded) if excluded else "none"}')
            # the param-group table and the decay warning, unless the constructor did them
            report_param_groups(opt, runner.logger, model.named_parameters())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.log_interval):
            return
        step = runner.iter + 1
        for i, opt in enumerate(self._projections(runner)):
            stats = getattr(opt, 'last_stats', None)
            if not stats or not len(stats['params']):
                continue
            opt.warn_nonfinite_distances()
            prefix = 'train/' if i == 0 else f'train/opt{i}_'
            omega = stats.get('omega')
            dist = stats['sq_dist'].clamp_min(0).sqrt()
            summary = [stats['conflict'].float().mean(), dist.mean()]
            if omega is not None:
                summary += [omega.mean(), omega.max()]
            vals = torch.stack([v.float().cpu() for v in summary]).tolist()
            hub = runner.message_hub
            hub.update_scalar(prefix + 'conflict_rate', vals[0])
            hub.update_scalar(prefix + 'dist_to_anchor', vals[1])
            if omega is not None:
                hub.update_scalar(prefix + 'omega_mean', vals[2])
                hub.update_scalar(prefix + 'omega_max', vals[3])
            if self.log_per_layer:
                names = [opt.param_name(p) for p in stats['params']]
                scalars = {}
                if omega is not None:
                    scalars.update({f'omega/{n}': w
                                    for n, w in zip(names, omega.float().cpu().tolist())})
                scalars.update({f'dist/{n}': d for n, d in zip(names, dist.float().cpu().tolist())})
                # DiGraP's dynamics (docs/algorithm.md 14.3): <g, d>, h_t (NaN: no hyper-step)
                # and, with track_update=True, the radial part of the update
                extra = ([k for k in ('dot', 'hgrad', *_TRACK_KEYS) if k in stats]
                         if 'hgrad' in stats else [])
                if extra:
                    vals = torch.stack([stats[k].float().cpu() for k in extra]).tolist()
                    for key, row in zip(extra, vals):
                        scalars.update({f'{key}/{n}': v for n, v in zip(names, row)
                                        if v == v})  # NaN (no value this step) is left out
                runner.visualizer.add_scalars(scalars, step=step)


@HOOKS.register_module()
class DiGraPHook(RobustFTHook):
    """Deprecated name of :class:`RobustFTHook` (it drives every method, not only DiGraP)."""

    def __init__(self, *args, **kwargs):
        warnings.warn("DiGraPHook is deprecated: use dict(type='RobustFTHook') (same "
                      'arguments)', DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
