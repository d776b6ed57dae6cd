"""Weight decay rules, said out loud (issue 15, item 8).

* mmengine's rule, as the README documents it: a ``paramwise_cfg`` custom key replaces the
  norm/bias decay multipliers (its own ``decay_mult``, default 1, wins);
* the param groups are logged once as a table (lr, weight_decay, the method's knobs);
* a method that anchors to theta0 over a base optimizer with weight decay warns.
"""
import glob
import logging
import os.path as osp
import warnings

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner
from torch import nn

import mmdigrap  # noqa: F401
from mmdigrap.engine.optim_wrapper import (
    param_group_table,
    report_param_groups,
    warn_decay_towards_zero,
)
from mmdigrap.optim import L2SP, DiGraP

import _toy  # noqa: F401  (registers the toy model / dataset)

WD = 0.01
RULE_CFG = dict(norm_decay_mult=0, bias_decay_mult=0, custom_keys={'backbone': dict(lr_mult=0.1)})


class Toy(nn.Module):
    """backbone: Linear(4, 8) + LayerNorm(8) (56 elements, 4 tensors); head: Linear(8, 2)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
        self.head = nn.Linear(8, 2)


def _group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g['params']))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def _digrap(model, weight_decay=WD, paramwise_cfg=RULE_CFG, **digrap):
    cfg = dict(type='DiGraPOptimWrapper', constructor='RobustFTOptimWrapperConstructor',
               optimizer=dict(type='AdamW', lr=1e-3, weight_decay=weight_decay),
               digrap=dict(mu=0.5, exclude=[r'^head\.'], **digrap))
    if paramwise_cfg is not None:
        cfg['paramwise_cfg'] = paramwise_cfg
    return build_optim_wrapper(model, cfg)


# ----------------------------------------------------------------------- mmengine's rule
def test_custom_key_replaces_norm_and_bias_decay_mult():
    model = Toy()
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=WD), paramwise_cfg=RULE_CFG))
    opt = wrapper.optimizer
    norm, linear = model.backbone[1], model.backbone[0]
    # every backbone tensor (the norm weight and bias, the linear bias) gets the FULL decay
    for p in (norm.weight, norm.bias, linear.bias, linear.weight):
        assert _group_of(opt, p)['weight_decay'] == WD
        assert _group_of(opt, p)['lr'] == pytest.approx(1e-4)
    # outside the custom key, bias_decay_mult=0 applies
    assert _group_of(opt, model.head.bias)['weight_decay'] == 0
    assert _group_of(opt, model.head.weight)['weight_decay'] == WD
    # the documented fix: decay_mult in the custom key
    model = Toy()
    fixed = dict(RULE_CFG, custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=0)})
    opt = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=WD), paramwise_cfg=fixed)).optimizer
    assert _group_of(opt, model.backbone[1].weight)['weight_decay'] == 0
    assert _group_of(opt, model.backbone[0].weight)['weight_decay'] == 0


# ---------------------------------------------------------------------------- the table
def test_table_is_logged_once_with_the_group_numbers(records):
    model = Toy()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        wrapper = _digrap(model)
    logged = [r.getMessage() for r in records if r.getMessage().startswith('Param groups of')]
    assert len(logged) == 1
    text = logged[0]
    assert 'DiGraP around AdamW: 6 param group(s), 6 tensors, 74 params' in text
    _, rows = param_group_table(wrapper.optimizer)
    assert [(r['groups'], r['tensors'], r['params'], r['managed'], r['lr'], r['weight_decay'],
             r['mu'], r['first_tensor']) for r in rows] == [
        ([0, 1, 2, 3], 4, 56, 4, pytest.approx(1e-4), WD, 0.5, 'backbone.0.weight'),
        ([4], 1, 16, 0, 1e-3, WD, 0.5, 'head.weight'),
        ([5], 1, 2, 0, 1e-3, 0.0, 0.5, 'head.bias')]
    lines = text.splitlines()
    assert lines[1].split('|')[1:-1] == [
        ' groups ', ' tensors ', ' params ', ' managed ', '     lr ', ' weight_decay ', '  mu ',
        ' hyper_eps ', ' omega_max ', ' omega_init ', ' first tensor      ']
    assert [c.strip() for c in lines[3].split('|')[1:-1]] == [
        '0-3', '4', '56', '4', '0.0001', '0.01', '0.5', '1e-08', '1', '0', 'backbone.0.weight']
    assert 'in every group: hyper_betas=(0.9, 0.999), trainable=True' in lines[0]
    # once per optimizer: RobustFTHook's call after the constructor's does nothing
    assert report_param_groups(wrapper.optimizer) is False


def test_per_group_knob_and_plain_optimizer_tables():
    model = Toy()
    cfg = dict(custom_keys={'backbone': dict(mu=0.1)})
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        opt = _digrap(model, weight_decay=0.0, paramwise_cfg=cfg).optimizer
    _, rows = param_group_table(opt)
    assert [(r['tensors'], r['mu'], r['lr']) for r in rows] == [(4, 0.1, 1e-3), (2, 0.5, 1e-3)]
    plain = torch.optim.SGD(Toy().parameters(), lr=0.1, weight_decay=5e-4)
    text, rows = param_group_table(plain)
    assert 'managed' not in text.splitlines()[1] and text.startswith('SGD: 1 param group(s)')
    assert [(r['tensors'], r['params'], r['weight_decay']) for r in rows] == [(6, 74, 5e-4)]


# -------------------------------------------------------------------------- the warning
def test_digrap_over_adamw_with_decay_warns(records):
    with pytest.warns(UserWarning, match=r'weight_decay=0\.01 in group\(s\) 0-3 '
                                         r'\(e\.g\. backbone\.0\.weight\)') as rec:
        _digrap(Toy())
    msgs = [str(w.message) for w in rec if 'decays them towards 0' in str(w.message)]
    assert len(msgs) == 1  # once
    assert 'optimizer.weight_decay=0' in msgs[0] and 'DiGraP' in msgs[0] and 'AdamW' in msgs[0]
    # groups 4 (head.weight, weight_decay 0.01) is excluded from the method: not named
    assert '4' not in msgs[0].split('in group(s) ')[1].split(' ')[0]
    assert [r.getMessage() for r in records if r.levelno == logging.WARNING] == msgs


def test_no_warning_without_decay_or_with_zero_anchor():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _digrap(Toy(), weight_decay=0.0)
        _digrap(Toy(), weight_decay=0.0, paramwise_cfg=None)
    # anchor='zero' (LoRA/PEFT): both pull towards 0, nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        opt = DiGraP(torch.optim.AdamW(Toy().parameters(), weight_decay=WD), anchor='zero')
        assert warn_decay_towards_zero(opt) == []
    # a plain optimizer is never warned about
    assert warn_decay_towards_zero(torch.optim.AdamW(Toy().parameters(), weight_decay=WD)) == []
    # a group with lr 0 cannot move its tensors: no warning for it
    model = Toy()
    opt = L2SP(torch.optim.SGD([dict(params=model.backbone.parameters(), lr=0.0),
                                dict(params=model.head.parameters(), weight_decay=0.0)],
                               lr=0.1, weight_decay=WD), named_parameters=model.named_parameters())
    assert warn_decay_towards_zero(opt) == []


def test_hook_reports_when_built_without_the_constructor(tmp_path):
    """L2-SP's base config has no constructor: RobustFTHook logs the table and warns, with the
    lr before the warm-up scheduler scaled it."""
    cfg = dict(
        model=dict(type='MMDiGraPToyModel'), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=dict(type='MMDiGraPToyDataset', num=16),
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate'), batch_size=8,
                              num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(type='L2SPOptimWrapper',
                           optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05),
                           l2sp=dict(weight=0.1)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                              end=2)],
        custom_hooks=[dict(type='RobustFTHook', log_interval=1, allow_random_init=True)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        default_scope='mmengine', log_level='INFO')
    runner = Runner.from_cfg(cfg)
    with pytest.warns(UserWarning, match=r'L2SP .* AdamW also decays them towards 0: '
                                         r'weight_decay=0\.05 in group\(s\) 0 \(e\.g\. fc1'):
        runner.train()
    log = open(glob.glob(osp.join(tmp_path, '*', '*.log'))[0]).read()
    assert log.count('Param groups of L2SP around AdamW: 1 param group(s), 4 tensors') == 1
    row = next(line for line in log.splitlines() if line.startswith('| 0 '))
    assert [c.strip() for c in row.split('|')[1:-1]] == [
        '0', '4', str(8 * 16 + 16 + 16 + 1), '4', '0.01', '0.05', '0.1', 'fc1.weight']
    assert log.count('The paper uses no weight decay') == 1
