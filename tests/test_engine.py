"""DiGraPOptimWrapper / DiGraPAmpOptimWrapper / DiGraPHook through mmengine's builders and Runner."""
import copy
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

import _toy  # noqa: F401  (registers the toy model / dataset / metric)
import mmdigrap  # noqa: F401
from mmdigrap import DiGraP
from mmdigrap.engine import DiGraPOptimWrapper


def runner_cfg(work_dir, epochs=2, hook=None, **over):
    cfg = dict(
        model=dict(type='MMDiGraPToyModel'),
        work_dir=str(work_dir), experiment_name=f'{osp.basename(str(work_dir))}_{epochs}',
        train_dataloader=dict(dataset=dict(type='MMDiGraPToyDataset', num=64),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'), batch_size=8,
                              num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=dict(type='DiGraPOptimWrapper',
                           optimizer=dict(type='AdamW', lr=5e-2, weight_decay=0.0),
                           digrap=dict(mu=0.1, omega_init=0.5, exclude=[r'^fc2\.bias$']),
                           clip_grad=dict(max_norm=10.0)),
        custom_hooks=[hook or dict(type='RobustFTHook', log_interval=2, allow_random_init=True)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=2),
                           checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]),
        default_scope='mmengine',
        log_level='INFO')
    cfg.update(over)
    return cfg


def test_build_from_config_with_paramwise_cfg():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    ow = build_optim_wrapper(model, dict(
        type='DiGraPOptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        paramwise_cfg=dict(norm_decay_mult=0.0), accumulative_counts=2,
        digrap=dict(mu=0.25, hypergrad_norm='tensor')))
    assert isinstance(ow, DiGraPOptimWrapper) and isinstance(ow.optimizer, DiGraP)
    assert ow.optimizer.mu == 0.25 and ow.optimizer.hypergrad_norm == 'tensor'
    assert isinstance(ow.optimizer.base_optimizer, torch.optim.AdamW)
    decays = sorted(g['weight_decay'] for g in ow.param_groups)
    assert decays[0] == 0.0 and decays[-1] == 0.05  # paramwise_cfg reached the base
    assert ow._accumulative_counts == 2
    assert ow.get_lr()['lr'][0] == 1e-3


def test_bad_digrap_cfg_names_the_fix():
    model = torch.nn.Linear(3, 4)
    with pytest.raises(ValueError, match='mu'):
        build_optim_wrapper(model, dict(type='DiGraPOptimWrapper',
                                        optimizer=dict(type='AdamW', lr=1e-3),
                                        digrap=dict(mu=-0.1)))


def test_runner_two_epochs_logs_omegas(tmp_path):
    runner = Runner.from_cfg(runner_cfg(tmp_path))
    runner.train()
    opt = runner.optim_wrapper.optimizer
    omegas = opt.omegas()
    assert set(omegas) == {'fc1.weight', 'fc1.bias', 'fc2.weight'}  # fc2.bias excluded
    assert opt.hyper_step == 16
    assert all(0 <= w <= 1 for w in omegas.values())
    assert max(abs(w - 0.5) for w in omegas.values()) > 0.05  # omega was trained
    # the text log carries the summary scalars, the visualizer the per-layer ones
    log = open(glob.glob(osp.join(tmp_path, '*', '*.log'))[0]).read()
    assert 'omega_mean' in log and 'conflict_rate' in log and 'Excluded (1): fc2.bias' in log
    rows = [json.loads(line) for line in
            open(glob.glob(osp.join(tmp_path, '*', 'vis_data', 'scalars.json'))[0])]
    omega_rows = [r for r in rows if 'omega/fc1.weight' in r]
    assert len(omega_rows) == 8 and omega_rows[-1]['step'] == 16
    assert omega_rows[-1]['omega/fc1.weight'] == pytest.approx(omegas['fc1.weight'])
    # tools/analysis/plot_omega.py reads the same curves and draws them
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'plot_omega', osp.join(osp.dirname(__file__), '..', 'tools', 'analysis', 'plot_omega.py'))
    plot_omega = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_omega)
    curves = plot_omega.load_omegas(str(tmp_path))
    assert set(curves) == set(omegas) and curves['fc1.weight'][-1] == (16, omega_rows[-1]['omega/fc1.weight'])
    plot_omega.main([str(tmp_path)])
    png = open(osp.join(tmp_path, 'omega.png'), 'rb').read()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10000
    # the checkpoint carries omega state and anchors
    ckpt = torch.load(osp.join(tmp_path, 'epoch_2.pth'), weights_only=False)
    proj = ckpt['optimizer']['projection']
    assert proj['method'] == 'digrap' and proj['hyper_step'] == 16
    assert all('anchor' in st and 'omega' in st for st in proj['state'].values())


def test_hook_refuses_random_init(tmp_path):
    runner = Runner.from_cfg(runner_cfg(tmp_path, hook=dict(type='RobustFTHook')))
    with pytest.raises(RuntimeError, match='load_from'):
        runner.train()


def test_hook_accepts_load_from(tmp_path):
    first = Runner.from_cfg(runner_cfg(tmp_path / 'a', epochs=1))
    first.train()
    pre = copy.deepcopy(first.model.state_dict())
    runner = Runner.from_cfg(runner_cfg(tmp_path / 'b', epochs=1,
                                        hook=dict(type='RobustFTHook', log_interval=4),
                                        load_from=str(tmp_path / 'a' / 'epoch_1.pth')))
    runner.train()
    opt = runner.optim_wrapper.optimizer
    # theta0 is the loaded checkpoint, not the random init of the second model
    torch.testing.assert_close(opt.state[runner.model.fc1.weight]['anchor'], pre['fc1.weight'])


def test_amp_wrapper_on_cpu_trains_bf16(tmp_path):
    cfg = runner_cfg(tmp_path, epochs=1)
    cfg['optim_wrapper'].update(type='DiGraPAmpOptimWrapper')
    runner = Runner.from_cfg(cfg)
    runner.train()
    ow = runner.optim_wrapper
    assert ow.cast_dtype == torch.bfloat16 and ow.optimizer.hyper_step == 8
    assert max(ow.omegas().values()) >= 0
