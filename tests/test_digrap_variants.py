"""DiGraP's variants (docs/algorithm.md section 14) against their literal reference loop, their
edge cases, the diagnostics of ``track_update`` and the mmengine face."""
import copy
import glob
import json
import os.path as osp
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

import mmdigrap.engine
from mmdigrap import DiGraP
from mmdigrap.core.digrap_variants import update_project_
from mmdigrap.core.reference import ReferenceDiGraP, ReferenceDiGraPVariant

import _toy  # noqa: F401  (registers the toy model / dataset)
from _toy import batches, make_mlp


def loss_of(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def val_grads(model, batch):
    params = list(model.parameters())
    return list(torch.autograd.grad(loss_of(model, batch), params))


def run_pair(kw, steps=30, lr=5e-2, val=False, base='adam'):
    """Train the reference and DiGraP side by side; returns (models, ref, opt, omega traj)."""
    data, vdata = batches(steps), batches(steps, seed=11)
    m_ref, m_new = make_mlp(), make_mlp()

    def build(params):
        if base == 'adam':
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    ref = ReferenceDiGraPVariant(build(m_ref.parameters()), **kw)
    opt = DiGraP(build(m_new.parameters()), named_parameters=m_new.named_parameters(), **kw)
    omegas = []
    for batch, vbatch in zip(data, vdata):
        for m, o in ((m_ref, ref), (m_new, opt)):
            for p in m.parameters():
                p.grad = None
            loss_of(m, batch).backward()
            o.step()
            if val:
                g = val_grads(m, vbatch)
                if o is ref:
                    ref.set_val_gradients(g)
                else:
                    opt.set_val_gradients(zip(m.parameters(), g))
        omegas.append(list(opt.omegas().values()))
    return m_ref, m_new, ref, opt, torch.tensor(omegas, dtype=torch.float64)


def assert_same(m_ref, m_new, ref, traj, atol=1e-6):
    for p, q in zip(m_ref.parameters(), m_new.parameters()):
        torch.testing.assert_close(q, p, atol=atol, rtol=0)
    torch.testing.assert_close(traj, torch.tensor(ref.history, dtype=torch.float64),
                               atol=atol, rtol=0)


def test_reference_variant_defaults_equal_the_faithful_reference():
    data = batches(20)
    m1, m2 = make_mlp(), make_mlp()
    r1 = ReferenceDiGraP(torch.optim.Adam(m1.parameters(), lr=5e-2))
    r2 = ReferenceDiGraPVariant(torch.optim.Adam(m2.parameters(), lr=5e-2))
    for batch in data:
        for m, r in ((m1, r1), (m2, r2)):
            r.zero_grad()
            loss_of(m, batch).backward()
            r.step()
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert r1.history == r2.history


@pytest.mark.parametrize('kw', [
    dict(project='update', mu=0.5), dict(project='update', mu=10.0, hypergrad_norm='tensor'),
    dict(project='update', omega_init=1.0, trainable=False),
    dict(project='update', omega_init=0.5, mu=0.05, omega_max=1e6)])
def test_update_projection_matches_reference_30_steps(kw):
    m_ref, m_new, ref, opt, traj = run_pair(kw)
    assert_same(m_ref, m_new, ref, traj)
    if kw.get('trainable', True):  # omega moved (first at step 3, algorithm.md §5)
        assert traj[:2].sub(kw.get('omega_init', 0.0)).abs().max() == 0
        assert (traj[2:] - traj[:1]).abs().max() > 0.01


@pytest.mark.parametrize('kw', [
    dict(hypergrad_source='val', mu=0.5), dict(hypergrad_source='val', mu=2.0,
                                              hypergrad_norm='tensor'),
    dict(hypergrad_source='val', project='update', mu=0.5, omega_init=0.5)])
def test_val_hypergradient_matches_reference_30_steps(kw):
    m_ref, m_new, ref, opt, traj = run_pair(kw, val=True)
    assert_same(m_ref, m_new, ref, traj)
    assert (traj[2:] - traj[:1]).abs().max() > 0.01
    # the training-gradient run differs: the source matters
    *_, traj_train = run_pair({k: v for k, v in kw.items() if k != 'hypergrad_source'})
    assert (traj_train - traj).abs().max() > 1e-3


def test_val_source_without_val_gradients_warns_and_keeps_omega():
    m = make_mlp()
    opt = DiGraP(torch.optim.Adam(m.parameters(), lr=5e-2), hypergrad_source='val',
                 omega_init=0.3)
    with pytest.warns(UserWarning, match='DiGraPValHook'):
        for batch in batches(5):
            opt.zero_grad()
            loss_of(m, batch).backward()
            opt.step()
    assert all(w == 0.3 for w in opt.omegas().values())
    assert torch.isnan(opt.last_stats['hgrad']).all()


@pytest.mark.parametrize('kw', [dict(project='update', mu=0.0), dict(project='update',
                                                                     omega_max=0.0),
                                dict(hypergrad_source='val', mu=0.0)])
@pytest.mark.parametrize('base', ['adam', 'sgd'])
def test_omega_zero_is_the_base_optimizer_exactly(kw, base):
    data = batches(15)
    m_base, m_dg = make_mlp(), make_mlp()

    def build(params):
        if base == 'adam':
            return torch.optim.Adam(params, lr=1e-2)
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        opt = DiGraP(build(m_dg.parameters()), **kw)
    for m, o in ((m_base, build(m_base.parameters())), (m_dg, opt)):
        for batch in data:
            o.zero_grad()
            loss_of(m, batch).backward()
            o.step()
    for p, q in zip(m_base.parameters(), m_dg.parameters()):
        assert torch.equal(p, q)


def setup_offset(kw, seed=0):
    """One float64 tensor moved away from its anchor (after step 1 took theta0)."""
    torch.manual_seed(seed)
    p = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    opt = DiGraP(torch.optim.SGD([p], lr=0.1), **kw)
    p.grad = torch.zeros_like(p)
    opt.step()
    with torch.no_grad():
        p.add_(torch.randn_like(p))
    return p, opt, (p - opt.state[p]['anchor']).detach()


def test_update_no_conflict_leaves_the_step_alone():
    p, opt, d = setup_offset(dict(project='update', omega_init=1.0, trainable=False))
    before = p.detach().clone()
    p.grad = d.clone()  # SGD step -0.1 d: towards theta0, <Delta, d> < 0
    opt.step()
    assert torch.equal(p.detach(), before.add(d, alpha=-0.1))  # what SGD alone does
    assert not opt.last_stats['conflict'].any()
    assert torch.equal(p.grad, d)  # gradients are never changed in update mode


def test_update_full_projection_is_orthogonal_to_d():
    p, opt, d = setup_offset(dict(project='update', omega_init=1.0, trainable=False,
                                  track_update=True))
    before = p.detach().clone()
    g = -d + 0.3 * torch.randn_like(d)  # the SGD step grows ||d||
    p.grad = g.clone()
    opt.step()
    delta = p.detach() - before
    base = -0.1 * g
    assert torch.sum(base * d) > 0
    want = base - torch.sum(base * d) / (torch.sum(d * d) + 1e-8) * d
    torch.testing.assert_close(delta, want)
    assert abs(torch.sum(delta * d).item()) < 1e-9
    st = opt.last_stats
    assert st['conflict'].all() and st['base_update_cos'][0] > 0.5
    assert abs(st['update_cos'][0].item()) < 1e-7 and abs(st['radial_update'][0].item()) < 1e-7
    # Q_t = d theta_t / d omega = -c d is what the next hyper-gradient uses
    c = torch.sum(base * d) / (torch.sum(d * d) + 1e-8)
    torch.testing.assert_close(opt.state[p]['prev_proj'], -c * d)
    # a half step: omega = 0.5 removes half the radial part
    res = update_project_([before.clone() + base], [base], [d.clone()],
                          torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(res.final_dot, 0.5 * res.dot)


def test_track_update_gradient_mode_numbers():
    """Adam undoes a gradient projection: with omega = 1 the projected gradient is orthogonal
    to d, yet Adam's first step (-lr sign(g~)) has a radial component; the stats say so.

    d = (2, 1), g = (-10, 1): s = -19, g~ = g + 19/5 d = (-2.4, 4.8) (orthogonal to d), the
    Adam step is c (1, -1) with c > 0 and cos(Delta, d) = 1 / sqrt(10) > 0: the distance
    grows again.
    """
    p = nn.Parameter(torch.zeros(1, 2, dtype=torch.float64))
    opt = DiGraP(torch.optim.Adam([p], lr=0.1), omega_init=1.0, trainable=False,
                 track_update=True)
    p.grad = torch.zeros_like(p)
    opt.step()  # anchor = 0; Adam's moments stay 0
    d = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    with torch.no_grad():
        p.copy_(d)
    g = torch.tensor([[-10.0, 1.0]], dtype=torch.float64)
    p.grad = g.clone()
    opt.step()
    st = opt.last_stats
    delta = p.detach() - d
    assert delta[0, 0] > 0.05 and abs(delta[0, 0] + delta[0, 1]) < 1e-9  # c (1, -1), c > 0
    torch.testing.assert_close(st['grad_cos'][0], torch.tensor(19 / (101 ** 0.5 * 5 ** 0.5),
                                                              dtype=torch.float64))
    assert abs(st['proj_grad_cos'][0].item()) < 1e-7
    torch.testing.assert_close(st['update_cos'][0], torch.tensor(10 ** -0.5, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(st['radial_update'][0], torch.sum(delta * d) / d.norm())
    assert st['base_update_cos'][0] == st['update_cos'][0]
    # the same step in update mode: the radial part of Adam's step is removed
    q = nn.Parameter(torch.zeros(1, 2, dtype=torch.float64))
    upd = DiGraP(torch.optim.Adam([q], lr=0.1), omega_init=1.0, trainable=False,
                 track_update=True, project='update')
    q.grad = torch.zeros_like(q)
    upd.step()
    with torch.no_grad():
        q.copy_(d)
    q.grad = g.clone()
    upd.step()
    st = upd.last_stats
    assert st['base_update_cos'][0] > 0.05 and abs(st['update_cos'][0].item()) < 1e-7
    assert torch.sum((q.detach() - d) * d).abs() < 1e-9


def test_faithful_default_stats_and_hgrad():
    m = make_mlp()
    opt = DiGraP(torch.optim.Adam(m.parameters(), lr=5e-2), hypergrad_norm='tensor')
    ref_P = None
    for i, batch in enumerate(batches(4)):
        opt.zero_grad()
        loss_of(m, batch).backward()
        g = m[0].weight.grad.detach().clone()
        if i == 3:
            ref_P = opt.state[m[0].weight]['prev_proj'].clone()
        opt.step()
    assert set(opt.last_stats) == {'params', 'omega', 'dot', 'sq_dist', 'conflict', 'hgrad'}
    want = nn.functional.cosine_similarity(g.flatten(), ref_P.flatten(), 0)
    torch.testing.assert_close(opt.last_stats['hgrad'][0], want.to(torch.float64))


def test_bad_variant_options_raise_with_fix():
    m = make_mlp()
    with pytest.raises(ValueError, match='update'):
        DiGraP(torch.optim.Adam(m.parameters()), project='weights')
    with pytest.raises(ValueError, match='val'):
        DiGraP(torch.optim.Adam(m.parameters()), hypergrad_source='test')
    with pytest.raises(ValueError, match='store_projection=True'):
        DiGraP(torch.optim.Adam(m.parameters()), project='update', store_projection=False)


def test_update_mode_per_param_group_and_state_dict():
    """project is a param-group key: one group in update mode, one faithful; resumable."""
    data = batches(12)

    def build(model):
        groups = [dict(params=list(model[0].parameters()), project='update'),
                  dict(params=[p for i in (1, 3) for p in model[i].parameters()])]
        return DiGraP(torch.optim.Adam(groups, lr=5e-2), mu=1.0, track_update=True)

    m1 = make_mlp()
    o1 = build(m1)
    for batch in data[:6]:
        o1.zero_grad()
        loss_of(m1, batch).backward()
        o1.step()
    assert [g['project'] for g in o1.param_groups] == ['update', 'gradient']
    assert set(o1.last_stats) >= {'update_cos', 'radial_update', 'grad_cos'}
    assert len(o1.last_stats['omega']) == 6
    sd = copy.deepcopy(o1.state_dict())
    m2 = make_mlp()
    m2.load_state_dict(m1.state_dict())
    o2 = build(m2)
    o2.load_state_dict(sd)
    for m, o in ((m1, o1), (m2, o2)):
        for batch in data[6:]:
            o.zero_grad()
            loss_of(m, batch).backward()
            o.step()
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


# ------------------------------------------------------------------------ the mmengine face
def test_wrapper_and_paramwise_cfg_carry_the_variant_options():
    """digrap=dict(project=...) reaches every group; a custom key overrides it for one group
    (like mu); the update-mode group then equals its reference loop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    ref_model = copy.deepcopy(model)
    ow = build_optim_wrapper(model, dict(
        type='DiGraPOptimWrapper', constructor='RobustFTOptimWrapperConstructor',
        optimizer=dict(type='Adam', lr=5e-2),
        paramwise_cfg=dict(custom_keys={'2.': dict(project='gradient')}),
        digrap=dict(mu=0.5, project='update', track_update=True)))
    modes = {ow.optimizer.param_name(p): g['project'] for g in ow.optimizer.param_groups
             for p in g['params']}
    assert modes == {'0.weight': 'update', '0.bias': 'update', '1.weight': 'update',
                     '1.bias': 'update', '2.weight': 'gradient', '2.bias': 'gradient'}
    assert "project='update'" in ow.optimizer.extra_repr()
    body = list(ref_model[0].parameters()) + list(ref_model[1].parameters())
    refs = [ReferenceDiGraPVariant(torch.optim.Adam(body, lr=5e-2), project='update'),
            ReferenceDiGraPVariant(torch.optim.Adam(ref_model[2].parameters(), lr=5e-2))]
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        x = torch.randn(8, 3, generator=g, dtype=torch.float64)
        y = torch.randint(0, 2, (8,), generator=g)
        ow.update_params(nn.functional.cross_entropy(model(x), y))
        ref_model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ref_model(x), y).backward()
        for r in refs:
            r.step()
    for p, q in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="Did you mean 'project'"):
        build_optim_wrapper(model, dict(type='DiGraPOptimWrapper', optimizer=dict(type='Adam'),
                                        digrap=dict(projekt='update')))


def _runner_cfg(work_dir, digrap, hooks, **over):
    cfg = dict(
        model=dict(type='MMDiGraPToyModel'), work_dir=str(work_dir),
        experiment_name=osp.basename(str(work_dir)),
        train_dataloader=dict(dataset=dict(type='MMDiGraPToyDataset', num=64),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'), batch_size=8,
                              num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(type='DiGraPOptimWrapper',
                           optimizer=dict(type='Adam', lr=5e-2), digrap=digrap),
        custom_hooks=[dict(type='RobustFTHook', log_interval=1, allow_random_init=True),
                      *hooks],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=2),
                           checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]),
        default_scope='mmengine', log_level='WARNING')
    cfg.update(over)
    return cfg


VAL_LOADER = dict(dataset=dict(type='MMDiGraPToyDataset', num=24, seed=5),
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'), batch_size=8, num_workers=0)


def test_runner_val_hook_feeds_omega_and_logs_dynamics(tmp_path):
    """DiGraPValHook gives every step after the first a validation hyper-gradient; the
    RobustFTHook logs h_t, <g, d> and the update statistics per layer."""
    cfg = _runner_cfg(tmp_path, dict(mu=0.5, hypergrad_source='val', project='update',
                                     omega_init=0.5, track_update=True),
                      [dict(type='DiGraPValHook', dataloader=VAL_LOADER)])
    runner = Runner.from_cfg(cfg)
    runner.train()
    opt = runner.optim_wrapper.optimizer
    hook = [h for h in runner.hooks if type(h).__name__ == 'DiGraPValHook'][0]
    assert opt.hyper_step == 8 and hook._consumed == 8  # one val batch after every step
    assert torch.isfinite(opt.last_stats['hgrad']).all()  # step 8 used the val h of step 7
    assert any(w != 0.5 for w in opt.omegas().values())
    assert runner.model.training
    rows = [json.loads(line) for line in
            open(glob.glob(osp.join(str(tmp_path), '*', 'vis_data', 'scalars.json'))[0])]
    layer = [r for r in rows if 'omega/fc1.weight' in r]
    assert len(layer) == 8
    assert 'hgrad/fc1.weight' not in layer[0]  # step 1: no hyper-step (NaN left out)
    assert all(k in layer[-1] for k in ('hgrad/fc1.weight', 'dot/fc1.weight',
                                        'update_cos/fc1.weight', 'radial_update/fc1.weight',
                                        'base_update_cos/fc1.weight'))
    ckpt = torch.load(osp.join(str(tmp_path), 'epoch_1.pth'), weights_only=False)
    assert ckpt['meta']['digrap_val_batches'] == 8
    assert ckpt['optimizer']['param_groups'][0]['hypergrad_source'] == 'val'


def test_val_hook_needs_a_val_digrap(tmp_path):
    cfg = _runner_cfg(tmp_path, dict(mu=0.5), [dict(type='DiGraPValHook',
                                                    dataloader=VAL_LOADER)])
    with pytest.raises(RuntimeError, match="hypergrad_source='val'"):
        Runner.from_cfg(cfg).train()
    with pytest.raises(ValueError, match='interval'):
        mmdigrap.engine.DiGraPValHook(interval=0)


def test_dynamics_tool_reads_runs_and_tests_the_sign_rule(tmp_path):
    """tools/analysis/digrap_dynamics.py on two toy runs (FT as omega_max=0, DiGraP with the
    whole-tensor cosine): plots written, and sign(h_t) = sign(s_{t-1} s_t) holds (up to the
    one-step change of d) -- the rule of docs/algorithm.md section 14.4."""
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location('digrap_dynamics', osp.join(
        osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'analysis',
        'digrap_dynamics.py'))
    tool = module_from_spec(spec)
    spec.loader.exec_module(tool)
    dirs = {}
    for label, kw in (('ft', dict(omega_max=0.0)), ('digrap', dict(hypergrad_norm='tensor'))):
        cfg = _runner_cfg(tmp_path / label, dict(mu=0.5, track_update=True, **kw), [],
                          train_cfg=dict(by_epoch=True, max_epochs=4))
        cfg['optim_wrapper']['optimizer']['lr'] = 1e-2
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            Runner.from_cfg(cfg).train()
        dirs[label] = str(tmp_path / label)
    summary = tool.analyse(dirs, str(tmp_path / 'out'))
    for name in ('omega', 'signs', 'dist', 'radial'):
        assert osp.getsize(tmp_path / 'out' / f'digrap_dynamics_{name}.png') > 1000
    rule = summary['digrap']['sign_rule']['fc1.weight']
    assert rule['n'] == 30 and rule['agree'] > 0.8  # steps 3..32 (h_2 = 0: P_1 = 0)
    assert set(summary['digrap']['sign_rule']) == {'fc1.weight', 'fc1.bias', 'fc2.weight',
                                                   'fc2.bias'}
    # FT's omega never moves; the per-layer numbers are the logged ones
    assert summary['ft']['sign_rule']['fc1.weight']['omega_last'] == 0.0
    run, steps = tool.load_run(dirs['digrap'])
    assert len(steps) == 32 and np.isnan(run['hgrad']['fc1.weight'][0])
    saved = json.load(open(tmp_path / 'out' / 'digrap_dynamics.json'))
    assert saved['digrap']['dist_total_last'] == pytest.approx(
        float(np.sqrt(sum(v[-1] ** 2 for v in run['dist'].values()))))
