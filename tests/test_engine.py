"""The mmengine face: wrappers, RobustFTOptimWrapperConstructor, RobustFTHook, param schedulers."""
import copy
import glob
import json
import os.path as osp
import pickle
import warnings

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

import mmdigrap  # noqa: F401
import mmdigrap.engine as engine
from mmdigrap import DiGraP
from mmdigrap.core.reference import ReferenceDiGraP
from mmdigrap.engine import DiGraPOptimWrapper

import _toy  # noqa: F401  (registers the toy model / dataset / metric)

WRAPPERS = [n for n in engine.__all__
            if n.endswith('OptimWrapper') and n != 'CPUCompatibleAmpOptimWrapper']


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
    assert set(curves) == set(omegas)
    assert curves['fc1.weight'][-1] == (16, omega_rows[-1]['omega/fc1.weight'])
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


# ------------------------------------------------------------------ explicit classes (issue 12)
def test_every_wrapper_is_an_explicit_picklable_class():
    from mmengine.registry import OPTIM_WRAPPERS
    assert len(WRAPPERS) == 12
    src = {m: open(osp.join(osp.dirname(engine.__file__), f'{m}.py')).read()
           for m in ('optim_wrapper', 'baseline_wrappers')}
    for name in WRAPPERS:
        cls = getattr(engine, name)
        assert pickle.loads(pickle.dumps(cls)) is cls
        assert OPTIM_WRAPPERS.get(name) is cls and cls.__qualname__ == name
        module = cls.__module__.rsplit('.', 1)[-1]
        assert f'class {name}(' in src[module], name  # grep finds it


def _mlp_model():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4),
                               torch.nn.Linear(4, 2))


def test_constructor_gives_names_without_hook_and_module_prefix():
    model = _toy.ToyModelWrapper(_mlp_model())  # names of the wrapper start with 'module.'
    ow = build_optim_wrapper(model, dict(
        type='DiGraPOptimWrapper', constructor='RobustFTOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.0),
        digrap=dict(exclude=[r'^2\.'])))
    opt = ow.optimizer
    assert {n for n, _, ex in opt.managed_parameters() if ex} == {'2.weight', '2.bias'}
    x = torch.randn(5, 3)
    ow.update_params(model(x).square().mean())  # no exclude-needs-names error, no hook
    assert set(opt.omegas()) == {'0.weight', '0.bias', '1.weight', '1.bias'}


def test_per_group_mu_from_paramwise_cfg_equals_reference():
    torch.manual_seed(0)
    model = _mlp_model().double()
    ref_model = copy.deepcopy(model)
    ow = build_optim_wrapper(model, dict(
        type='DiGraPOptimWrapper', constructor='RobustFTOptimWrapperConstructor',
        optimizer=dict(type='Adam', lr=5e-2),
        paramwise_cfg=dict(custom_keys={'2.': dict(mu=4.0)}), digrap=dict(mu=0.5)))
    mus = {ow.optimizer.param_name(p): g['mu'] for g in ow.optimizer.param_groups
           for p in g['params']}
    assert mus == {'0.weight': 0.5, '0.bias': 0.5, '1.weight': 0.5, '1.bias': 0.5,
                   '2.weight': 4.0, '2.bias': 4.0}
    head = list(ref_model[2].parameters())
    body = list(ref_model[0].parameters()) + list(ref_model[1].parameters())
    refs = [ReferenceDiGraP(torch.optim.Adam(body, lr=5e-2), mu=0.5),
            ReferenceDiGraP(torch.optim.Adam(head, lr=5e-2), mu=4.0)]
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        x, y = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (8,),
                                                                                generator=g)
        ow.update_params(torch.nn.functional.cross_entropy(model(x), y))
        ref_model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(ref_model(x), y).backward()
        for r in refs:
            r.step()
    for p, q in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0)
    omegas = ow.omegas()
    want = dict(zip(['0.weight', '0.bias', '1.weight', '1.bias'], refs[0].w))
    want.update(zip(['2.weight', '2.bias'], refs[1].w))
    for name, w in want.items():
        assert omegas[name] == pytest.approx(w, abs=1e-6), name
    assert max(want.values()) > 0.05


def test_mmengine_param_scheduler_schedules_mu():
    from mmengine.optim.scheduler import LinearParamScheduler
    torch.manual_seed(0)
    model = _mlp_model()
    ow = build_optim_wrapper(model, dict(
        type='DiGraPOptimWrapper', constructor='RobustFTOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.0),
        digrap=dict(mu=1.0, omega_init=0.5)))
    sched = LinearParamScheduler(ow, param_name='mu', start_factor=1.0, end_factor=0.0,
                                 begin=0, end=4, by_epoch=False)
    # with several param groups too (mmengine adds its own settings "group" then)
    ow2 = build_optim_wrapper(_mlp_model(), dict(
        type='DiGraPOptimWrapper', constructor='RobustFTOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.01),
        paramwise_cfg=dict(norm_decay_mult=0.0)))
    LinearParamScheduler(ow2, param_name='mu', start_factor=0.5, by_epoch=False)
    assert {g['mu'] for g in ow2.param_groups} == {0.25}
    mus, omegas = [], []
    for _ in range(7):
        mus.append(ow.param_groups[0]['mu'])
        ow.update_params(model(torch.randn(6, 3)).square().mean())
        sched.step()
        omegas.append(ow.omegas()['0.weight'])
    assert mus == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.0, 0.0])
    assert omegas[0] == omegas[1] != omegas[2]  # omega trains from step 3 (P_1 = 0)
    assert omegas[2] == omegas[3] == omegas[4] == omegas[6]  # mu = 0 from step 4: frozen
    state = sched.state_dict()
    assert state['base_values'] == [1.0]


def test_digrap_hook_is_a_deprecated_alias():
    from mmengine.registry import HOOKS
    with pytest.warns(DeprecationWarning, match='RobustFTHook'):
        hook = HOOKS.build(dict(type='DiGraPHook', log_interval=3))
    assert isinstance(hook, engine.RobustFTHook) and hook.log_interval == 3
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        HOOKS.build(dict(type='RobustFTHook'))
    with pytest.warns(DeprecationWarning, match='mmdigrap.optim'):
        import importlib

        import mmdigrap.optim.baselines as old
        importlib.reload(old)
    assert old.FTP is mmdigrap.FTP
