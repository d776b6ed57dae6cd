"""The baselines (L2-SP, FTP, SPD, TPGM, FixedDiGraP) against literal per-tensor references,
their state_dict round trips, validation errors, and their mmengine faces (wrappers, TPGMHook)."""
import copy
import glob
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner
from torch.func import functional_call

import mmdigrap  # noqa: F401
import mmdigrap.engine.baseline_hooks  # noqa: F401  (registers TPGMHook)
import mmdigrap.engine.baseline_wrappers as bw
from mmdigrap.core.baselines import ftp_project_, mars_row_norms, tpgm_norms
from mmdigrap.core.reference import (
    ReferenceAdamSPD,
    ReferenceDiGraP,
    ReferenceFTP,
    ReferenceL2SPAdam,
    ReferenceTPGMTrainer,
)
from mmdigrap.optim import FTP, L2SP, SPD, TPGM, FixedDiGraP

import _toy  # noqa: F401  (registers the toy model / dataset / metric)
from _toy import batches, make_mlp


def backward(model, x, y):
    for p in model.parameters():
        p.grad = None
    F.cross_entropy(model(x), y).backward()


def assert_same_params(m_ref, m_new, atol=1e-6):
    for (n, p), q in zip(m_ref.named_parameters(), m_new.parameters()):
        torch.testing.assert_close(q, p, atol=atol, rtol=0, msg=lambda s: f'{n}: {s}')


def max_param_gap(m1, m2):
    return max((p - q).abs().max().item() for p, q in zip(m1.parameters(), m2.parameters()))


def adam_only(data, lr):
    m = make_mlp()
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    for x, y in data:
        backward(m, x, y)
        opt.step()
    return m


LR = 5e-2


# ------------------------------------------------------------------------------ references
@pytest.mark.parametrize('anchor', ['pretrained', 'zero'])
def test_l2sp_matches_reference(anchor):
    data = batches(30)
    m_ref, m_new = make_mlp(), make_mlp()
    ref = ReferenceL2SPAdam(m_ref.parameters(), lr=LR, weight=0.3, anchor=anchor)
    opt = L2SP(torch.optim.Adam(m_new.parameters(), lr=LR), weight=0.3, anchor=anchor)
    for x, y in data:
        for m, o in ((m_ref, ref), (m_new, opt)):
            backward(m, x, y)
            o.step()
    assert_same_params(m_ref, m_new)
    assert max_param_gap(m_new, adam_only(data, LR)) > 1e-3  # the pull did something
    # per-tensor statistics for RobustFTHook (conflict = the raw gradient pushes away from theta0)
    st = opt.last_stats
    assert st['dot'].shape == (6,) and st['conflict'].dtype == torch.bool
    assert torch.equal(st['conflict'], st['dot'] < 0)


def test_l2sp_zero_anchor_is_coupled_weight_decay():
    data = batches(10)
    m1, m2 = make_mlp(), make_mlp()
    o1 = L2SP(torch.optim.Adam(m1.parameters(), lr=LR), weight=0.1, anchor='zero')
    o2 = torch.optim.Adam(m2.parameters(), lr=LR, weight_decay=0.1)
    for x, y in data:
        for m, o in ((m1, o1), (m2, o2)):
            backward(m, x, y)
            o.step()
    assert_same_params(m2, m1, atol=1e-12)
    assert 'anchor' not in opt_state_keys(o1)


def opt_state_keys(opt):
    return set().union(*(st.keys() for st in opt.state.values()))


@pytest.mark.parametrize('base,k,anchor', [('adam', 1.0, 'pretrained'), ('adam', 0.5, 'pretrained'),
                                           ('sgd', 1.0, 'pretrained'), ('adam', 1.0, 'zero')])
def test_ftp_matches_reference(base, k, anchor):
    data = batches(30)
    m_ref, m_new = make_mlp(), make_mlp()
    if base == 'adam':
        ref = ReferenceFTP(m_ref.parameters(), 'adam', lr=LR, k=k, mu=5e-2, anchor=anchor)
        inner = torch.optim.Adam(m_new.parameters(), lr=LR)
    else:
        ref = ReferenceFTP(m_ref.parameters(), 'sgd', lr=0.2, momentum=0.9, nesterov=True, k=k,
                           mu=5e-2, anchor=anchor)
        inner = torch.optim.SGD(m_new.parameters(), lr=0.2, momentum=0.9, nesterov=True)
    opt = FTP(inner, k=k, mu=5e-2, anchor=anchor, named_parameters=m_new.named_parameters())
    theta0 = copy.deepcopy(m_new)
    if anchor == 'zero':  # LoRA convention (FRAMES-VQA): theta0 = 0
        for p in theta0.parameters():
            p.data.zero_()
    gammas = []
    for step, (x, y) in enumerate(data):
        for m, o in ((m_ref, ref), (m_new, opt)):
            backward(m, x, y)
            o.step()
        gammas.append(list(opt.radii().values()))
        if step == 0:  # gamma = 1e-8 at t = 1 pins the first step back to theta0
            assert max_param_gap(m_new, theta0) < 1e-7
    assert_same_params(m_ref, m_new)
    traj = torch.tensor(gammas, dtype=torch.float64)
    torch.testing.assert_close(traj, torch.tensor(ref.history, dtype=torch.float64), atol=1e-6,
                               rtol=0)
    assert traj[0].max() == 1e-8
    if anchor == 'pretrained':  # the radii were learned (with theta0 = 0 the whole MLP is
        assert traj[-1].max() > 1e-3  # pinned to 0 at step 1 and stays there: a LoRA setting)
    # every row of theta - theta0 lies inside its radius (row L1 <= gamma)
    radii = opt.radii()
    for (name, p), p0 in zip(m_new.named_parameters(), theta0.parameters()):
        assert (mars_row_norms(p.detach() - p0, 0.0) <= radii[name] * (1 + 1e-9)).all(), name
        assert ('anchor' in opt.state[p]) == (anchor == 'pretrained')


def test_ftp_excluded_tensor_is_base_optimizer_alone():
    data = batches(8)
    m_ref, m_new = make_mlp(), make_mlp()
    ref = ReferenceFTP(m_ref.parameters(), 'adam', lr=LR, exclude={4, 5})  # 3.weight, 3.bias
    opt = FTP(torch.optim.Adam(m_new.parameters(), lr=LR), exclude=[r'^3\.'],
              named_parameters=m_new.named_parameters())
    for x, y in data:
        for m, o in ((m_ref, ref), (m_new, opt)):
            backward(m, x, y)
            o.step()
    assert_same_params(m_ref, m_new)
    assert m_new[3].weight not in opt.state and set(opt.radii()) == {
        '0.weight', '0.bias', '1.weight', '1.bias'}


@pytest.mark.parametrize('norm,anchor', [('l2', 'pretrained'), ('mars', 'pretrained'),
                                         ('l2', 'zero')])
def test_spd_matches_reference(norm, anchor):
    data = batches(30)
    m_ref, m_new = make_mlp(), make_mlp()
    ref = ReferenceAdamSPD(m_ref.parameters(), lr=LR, weight=0.5, norm=norm, anchor=anchor)
    opt = SPD(torch.optim.Adam(m_new.parameters(), lr=LR), weight=0.5, norm=norm, anchor=anchor)
    decays = 0
    for x, y in data:
        for m, o in ((m_ref, ref), (m_new, opt)):
            backward(m, x, y)
            o.step()
        decays += int(opt.last_stats['decayed'].sum())
        # SPD's selection is the opposite of DiGraP's conflict test (algorithm.md §13.6)
        st = opt.last_stats
        assert torch.equal(st['selected'], st['dot'] > 0)
    assert_same_params(m_ref, m_new)
    assert decays == ref.decays and decays >= 5  # the decay really fired, as often
    assert max_param_gap(m_new, adam_only(data, LR)) > 1e-3


def test_spd_acts_only_when_gradient_points_along_offset():
    p = nn.Parameter(torch.zeros(4, 3, dtype=torch.float64))
    opt = SPD(torch.optim.SGD([p], lr=1.0), weight=1.0)
    p.grad = torch.zeros_like(p)
    opt.step()  # theta0 = 0
    with torch.no_grad():
        p.fill_(1.0)  # d = theta - theta0 = 1
    # <g, d> < 0: gradient descent moves away from theta0 -> DiGraP would act, SPD does not
    p.grad = -torch.ones_like(p)
    opt.step()
    assert torch.allclose(p, torch.full_like(p, 2.0)) and not opt.last_stats['selected'][0]
    # <g, d> > 0 but the candidate still grows the deviation (a rotated step): SPD decays
    with torch.no_grad():
        p.fill_(1.0)
    g = torch.full_like(p, 2.0)
    g[0] = -3.0  # <g, d> = -9 + 18 > 0, yet the SGD step grows ||theta - theta0||
    p.grad = g.clone()
    cand = p.detach() - g
    opt.step()
    prev, curr = torch.norm(torch.ones(4, 3, dtype=torch.float64)), torch.norm(cand)
    r = ((curr - prev) / curr).clamp(0, 1)
    assert r > 0 and opt.last_stats['selected'][0]
    torch.testing.assert_close(p.detach(), cand - r * cand)


@pytest.mark.parametrize('norm,exclude', [('l2', ()), ('mars', ('3.weight', '3.bias'))])
def test_tpgm_matches_reference(norm, exclude):
    train, val = batches(30), batches(7, seed=9)
    m_ref, m_new = make_mlp(), make_mlp()
    trainer = ReferenceTPGMTrainer(m_ref, val, norm_mode=norm, proj_lr=5e-2, max_iters=2,
                                   exclude_list=exclude)
    base_ref = torch.optim.Adam(m_ref.parameters(), lr=LR)
    opt = TPGM(torch.optim.Adam(m_new.parameters(), lr=LR), proj_lr=5e-2, norm=norm,
               max_iters=2, exclude=[f'^{n}$'.replace('.', r'\.') for n in exclude],
               named_parameters=m_new.named_parameters())
    pos = [0]

    def loss_fn(weights):
        x, y = val[pos[0] % len(val)]
        pos[0] += 1
        return F.cross_entropy(functional_call(m_new, weights, (x,)), y)

    active = 0
    for i, (x, y) in enumerate(train):
        backward(m_ref, x, y)
        base_ref.step()
        trainer.tpgm_iters(m_ref, apply=i % 3 != 0)
        backward(m_new, x, y)
        opt.step()
        if i % 3 == 0:
            losses = opt.tpgm_update(loss_fn)
            assert losses.shape == (2,) and torch.isfinite(losses).all()
        else:
            opt.apply_projection()
        active += int(opt.last_stats['active'].sum())
    assert_same_params(m_ref, m_new)
    radii = list(opt.radii().values())
    torch.testing.assert_close(torch.tensor(radii), torch.tensor(trainer.radii()), atol=1e-6,
                               rtol=0)
    assert active > 10 and pos[0] == 2 * 10
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m_new.parameters())
    # the constraint holds: n(theta - theta0) <= gamma for every projected tensor
    for name, p in m_new.named_parameters():
        if name in exclude:
            assert p not in opt.state or 'tpgm_gamma' not in opt.state[p]
            continue
        n = tpgm_norms([p.detach() - opt.state[p]['anchor']], norm)[0]
        assert (n <= opt.state[p]['tpgm_gamma'] + 1e-12).all(), name


def test_fixed_digrap_matches_reference():
    data = batches(30)
    m_ref, m_new = make_mlp(), make_mlp()
    ref = ReferenceDiGraP(torch.optim.Adam(m_ref.parameters(), lr=LR), trainable=False,
                          omega_init=0.7)
    opt = FixedDiGraP(torch.optim.Adam(m_new.parameters(), lr=LR), omega=0.7)
    for x, y in data:
        for m, o in ((m_ref, ref), (m_new, opt)):
            backward(m, x, y)
            o.step()
    assert_same_params(m_ref, m_new)
    assert set(opt.omegas().values()) == {0.7}
    assert 'prev_proj' not in opt_state_keys(opt)  # no projection buffer: anchor only
    assert max_param_gap(m_new, adam_only(data, LR)) > 1e-3


# ----------------------------------------------------------------------- state / validation
def _builders():
    return {
        'l2sp': lambda m: L2SP(torch.optim.Adam(m.parameters(), lr=LR), weight=0.2),
        'ftp': lambda m: FTP(torch.optim.Adam(m.parameters(), lr=LR), mu=5e-2),
        'spd': lambda m: SPD(torch.optim.Adam(m.parameters(), lr=LR), norm='mars'),
        'tpgm': lambda m: TPGM(torch.optim.Adam(m.parameters(), lr=LR), proj_lr=5e-2,
                               named_parameters=m.named_parameters()),
        'digrap_fixed': lambda m: FixedDiGraP(torch.optim.Adam(m.parameters(), lr=LR),
                                              omega=0.5),
    }


def _run(model, opt, data, val):
    for i, (x, y) in enumerate(data):
        backward(model, x, y)
        opt.step()
        if isinstance(opt, TPGM):
            xv, yv = val[i % len(val)]
            opt.tpgm_update(lambda w: F.cross_entropy(functional_call(model, w, (xv,)), yv))


@pytest.mark.parametrize('method', ['l2sp', 'ftp', 'spd', 'tpgm', 'digrap_fixed'])
def test_state_dict_round_trip_is_bit_exact(method):
    build = _builders()[method]
    data, val = batches(12), batches(3, seed=4)
    m1 = make_mlp()
    o1 = build(m1)
    _run(m1, o1, data[:6], val)
    sd = copy.deepcopy(o1.state_dict())
    assert sd['projection']['method'] == method and sd['projection']['hyper_step'] == 6
    m2 = copy.deepcopy(m1)
    o2 = build(m2)
    o2.load_state_dict(sd)
    _run(m1, o1, data[6:], val)
    _run(m2, o2, data[6:], val)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(m1.parameters(), m2.parameters()):
        for key, val_ in o1.state[p].items():
            same = (torch.equal(o2.state[q][key], val_) if isinstance(val_, torch.Tensor)
                    else o2.state[q][key] == val_)
            assert same, key
    # another method's checkpoint is refused with the fix
    other = 'spd' if method != 'spd' else 'ftp'
    o3 = _builders()[other](copy.deepcopy(m1))
    with pytest.raises(ValueError, match='load_from'):
        o3.load_state_dict(o1.state_dict())


def test_grad_none_keeps_state_ftp_and_spd():
    for method in ('ftp', 'spd'):
        m = make_mlp()
        opt = _builders()[method](m)
        _run(m, opt, batches(4), [])
        frozen = m[0].weight
        before = copy.deepcopy(opt.state[frozen])
        value = frozen.detach().clone()
        for x, y in batches(3, seed=7):
            backward(m, x, y)
            frozen.grad = None
            opt.step()
        assert torch.equal(frozen, value)
        for k, v in before.items():
            now = opt.state[frozen][k]
            assert torch.equal(now, v) if isinstance(v, torch.Tensor) else now == v, (method, k)


def test_half_precision_weights_reduce_in_float32():
    for build in _builders().values():
        m = make_mlp(torch.bfloat16)
        opt = build(m)
        _run(m, opt, batches(4, torch.bfloat16), batches(2, torch.bfloat16, seed=3))
        assert all(torch.isfinite(p).all() for p in m.parameters())
        st = opt.state[m[0].weight]
        assert all(v.dtype == torch.float32 for k, v in st.items()
                   if isinstance(v, torch.Tensor) and v.dim() == 0), type(opt).__name__


@pytest.mark.parametrize('cls,kw,match', [
    (L2SP, dict(weight=-1.0), 'weight'), (L2SP, dict(weight='a'), 'number'),
    (FTP, dict(k=1.5), 'k=1.0'), (FTP, dict(mu=0.0), 'mu=1e-2'),
    (FTP, dict(betas=(0.9, 1.0)), 'betas'), (SPD, dict(weight=-0.5), '0.5'),
    (SPD, dict(norm='l1'), 'mars'), (TPGM, dict(proj_lr=0), 'proj_lr'),
    (TPGM, dict(norm='linf'), 'l2'), (TPGM, dict(max_iters=-1), 'max_iters'),
    (FixedDiGraP, dict(omega=-1), 'omega=1.0'), (L2SP, dict(anchor='init'), 'zero'),
    (SPD, dict(exclude=['(']), 'regex')])
def test_bad_values_raise_with_fix(cls, kw, match):
    m = make_mlp()
    with pytest.raises(ValueError, match=match):
        cls(torch.optim.Adam(m.parameters()), **kw)


def test_warnings_and_tpgm_needs_names():
    m = make_mlp()
    with pytest.warns(UserWarning, match='base optimizer alone'):
        L2SP(torch.optim.Adam(m.parameters()), weight=0)
    with pytest.warns(UserWarning, match='over-projects'):
        FixedDiGraP(torch.optim.Adam(m.parameters()), omega=2.0)
    opt = TPGM(torch.optim.Adam(m.parameters()))
    with pytest.raises(RuntimeError, match='named_parameters'):
        opt.tpgm_update(lambda w: torch.zeros(()))
    with pytest.raises(ValueError, match='apply_projection'):
        opt.tpgm_update(None, max_iters=1)


def test_ftp_core_pins_first_step_and_clips():
    g = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    c = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    prev = [torch.zeros_like(t) for t in c]
    scales = [torch.zeros(3, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
    z = torch.zeros(2, dtype=torch.float64)
    cc = [t.clone() for t in c]
    res = ftp_project_(cc, g, prev, scales, torch.full((2,), 1e-8, dtype=torch.float64), z, z,
                       torch.ones(2, dtype=torch.float64))
    assert res.gamma.tolist() == [1e-8, 1e-8] and res.active.all()
    assert max(t.abs().max().item() for t in cc) < 1e-7
    torch.testing.assert_close(prev[0], c[0])
    torch.testing.assert_close(scales[1], 1 / (c[1].abs().sum().reshape(1) + 1e-8))


# ----------------------------------------------------------------------------------- engine
@pytest.mark.parametrize('wtype,key,opts,cls,attr', [
    ('L2SPOptimWrapper', 'l2sp', dict(weight=0.05), L2SP, ('weight', 0.05)),
    ('FTPOptimWrapper', 'ftp', dict(k=0.5, mu=0.02), FTP, ('k', 0.5)),
    ('SPDOptimWrapper', 'spd', dict(weight=0.3, norm='mars'), SPD, ('norm', 'mars')),
    ('TPGMOptimWrapper', 'tpgm', dict(proj_lr=0.1, norm='mars', max_iters=3), TPGM,
     ('max_iters', 3)),
    ('FixedDiGraPOptimWrapper', 'digrap', dict(omega=0.8), FixedDiGraP, ('omega_init', 0.8)),
    ('SPDAmpOptimWrapper', 'spd', dict(weight=0.2), SPD, ('weight', 0.2)),
])
def test_build_from_config(wtype, key, opts, cls, attr):
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    ow = build_optim_wrapper(model, {
        'type': wtype, 'optimizer': dict(type='AdamW', lr=1e-3, weight_decay=0.0),
        'paramwise_cfg': dict(norm_decay_mult=0.0), key: opts})
    assert type(ow) is getattr(bw, wtype) and isinstance(ow.optimizer, cls)
    assert getattr(ow.optimizer, attr[0]) == attr[1]
    assert isinstance(ow.optimizer.base_optimizer, torch.optim.AdamW)
    assert ow.get_lr()['lr'][0] == 1e-3
    with pytest.raises(ValueError):
        build_optim_wrapper(model, {'type': wtype, 'optimizer': dict(type='AdamW', lr=1e-3),
                                    key: dict(opts, anchor='init')})


def runner_cfg(work_dir, wtype, key, opts, hooks=(), epochs=1, **over):
    cfg = dict(
        model=dict(type='MMDiGraPToyModel'),
        work_dir=str(work_dir), experiment_name=f'{osp.basename(str(work_dir))}',
        train_dataloader=dict(dataset=dict(type='MMDiGraPToyDataset', num=64),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'), batch_size=8,
                              num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper={'type': wtype, 'optimizer': dict(type='AdamW', lr=5e-2, weight_decay=0.0),
                       key: opts, 'clip_grad': dict(max_norm=10.0)},
        custom_hooks=[dict(type='RobustFTHook', log_interval=2, allow_random_init=True),
                      *hooks],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=2),
                           checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]),
        default_scope='mmengine', log_level='WARNING')
    cfg.update(over)
    return cfg


@pytest.mark.parametrize('wtype,key,opts,method', [
    ('L2SPOptimWrapper', 'l2sp', dict(weight=0.5), 'l2sp'),
    ('FTPOptimWrapper', 'ftp', dict(mu=0.05, exclude=[r'^fc2\.bias$']), 'ftp'),
    ('SPDOptimWrapper', 'spd', dict(weight=0.5), 'spd'),
    ('FixedDiGraPOptimWrapper', 'digrap', dict(omega=1.0), 'digrap_fixed'),
])
def test_runner_trains_each_method(tmp_path, wtype, key, opts, method):
    runner = Runner.from_cfg(runner_cfg(tmp_path / method, wtype, key, opts))
    runner.train()
    opt = runner.optim_wrapper.optimizer
    assert opt.method == method and opt.hyper_step == 8
    model = runner.model
    anchors = {n: opt.state[p]['anchor'] for n, p in model.named_parameters()
               if 'anchor' in opt.state.get(p, {})}
    dist = {n: (p.detach() - anchors[n]).norm().item() for n, p in model.named_parameters()
            if n in anchors}
    assert dist and all(d > 0 for d in dist.values())
    if method == 'ftp':  # every row inside its trained radius; the head bias excluded
        assert 'fc2.bias' not in anchors
        radii = opt.radii()
        for n, p in model.named_parameters():
            if n in anchors:
                assert (mars_row_norms(p.detach() - anchors[n], 0.0) <= radii[n] * (1 + 1e-5)).all()
    # the RobustFTHook summary shows up in the scalars, and the checkpoint carries the state
    rows = [json.loads(line) for line in
            open(glob.glob(osp.join(tmp_path, method, '*', 'vis_data', 'scalars.json'))[0])]
    dist_rows = [r for r in rows if 'dist/fc1.weight' in r]
    assert len(dist_rows) == 4 and dist_rows[-1]['step'] == 8
    if method == 'ftp':  # post-projection distance; pre-step methods log it before the step
        assert dist_rows[-1]['dist/fc1.weight'] == pytest.approx(dist['fc1.weight'], rel=1e-5)
    else:
        assert 0 < dist_rows[-1]['dist/fc1.weight'] <= 2 * dist['fc1.weight']
    ckpt = torch.load(osp.join(tmp_path, method, 'epoch_1.pth'), weights_only=False)
    proj = ckpt['optimizer']['projection']
    assert proj['method'] == method and proj['hyper_step'] == 8


VAL_LOADER = dict(dataset=dict(type='MMDiGraPToyDataset', num=24, seed=5),
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'), batch_size=8, num_workers=0)


def test_runner_tpgm_hook_trains_radii_on_val_batches(tmp_path):
    cfg = runner_cfg(tmp_path, 'TPGMOptimWrapper', 'tpgm',
                     dict(proj_lr=0.05, norm='l2', max_iters=2), epochs=2,
                     hooks=[dict(type='TPGMHook', interval=3, dataloader=VAL_LOADER)])
    cfg['optim_wrapper']['accumulative_counts'] = 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    opt = runner.optim_wrapper.optimizer
    assert opt.hyper_step == 8  # 16 iterations, 2 accumulated per optimizer step
    # radius updates after steps 0, 3, 6 only: 3 updates x 2 Adam iterations each
    steps = {n: opt.state[p]['tpgm_step'].item() for n, p in runner.model.named_parameters()}
    assert set(steps.values()) == {6.0}
    hook = [h for h in runner.hooks if type(h).__name__ == 'TPGMHook'][0]
    assert hook._consumed == 6
    # the projection was applied after every step: every tensor inside its L2 ball
    for n, p in runner.model.named_parameters():
        st = opt.state[p]
        dist = (p.detach() - st['anchor']).norm()
        assert dist <= st['tpgm_gamma'] * (1 + 1e-5) + 1e-6, n  # float32 rounding of theta0
    assert opt.last_stats['val_loss'].numel() == 0  # step 7 only projected
    assert opt.last_stats['active'].any()
    assert runner.message_hub.get_scalar('train/tpgm_val_loss').current() > 0
    assert runner.model.training  # the hook restored the mode
    ckpt = torch.load(osp.join(tmp_path, 'epoch_2.pth'), weights_only=False)
    assert ckpt['meta']['tpgm_val_batches'] == 6


def test_runner_tpgm_resume_is_bit_exact(tmp_path):
    def cfg(name, epochs, **over):
        return runner_cfg(tmp_path / name, 'TPGMOptimWrapper', 'tpgm',
                          dict(proj_lr=0.05, norm='mars', max_iters=1), epochs=epochs,
                          hooks=[dict(type='TPGMHook', interval=2, dataloader=VAL_LOADER)],
                          **over)
    straight = Runner.from_cfg(cfg('straight', 2))
    straight.train()
    Runner.from_cfg(cfg('first', 1)).train()
    resumed = Runner.from_cfg(cfg('resumed', 2, resume=True,
                                  load_from=str(tmp_path / 'first' / 'epoch_1.pth')))
    resumed.train()
    for (n, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n
    o1, o2 = straight.optim_wrapper.optimizer, resumed.optim_wrapper.optimizer
    assert o1.radii() == o2.radii() and o2.hyper_step == 16


def test_post_hoc_tpgm(tmp_path):
    cfg = runner_cfg(tmp_path, 'TPGMOptimWrapper', 'tpgm', dict(norm='l2'),
                     hooks=[dict(type='TPGMHook', interval=0, apply_every_iter=False,
                                 final_iters=5, dataloader=VAL_LOADER)])
    runner = Runner.from_cfg(cfg)
    runner.train()
    opt = runner.optim_wrapper.optimizer
    assert opt.last_stats['val_loss'].shape == (5,)
    assert {st['tpgm_step'].item() for st in opt.state.values()} == {5.0}
    ckpt = torch.load(osp.join(tmp_path, 'epoch_1.pth'), weights_only=False)
    for n, p in runner.model.named_parameters():  # the last checkpoint holds the projection
        assert torch.equal(ckpt['state_dict'][n], p.detach()), n


def test_tpgm_hook_needs_val_data(tmp_path):
    cfg = runner_cfg(tmp_path, 'TPGMOptimWrapper', 'tpgm', dict(), hooks=[dict(type='TPGMHook')])
    with pytest.raises(RuntimeError, match='val_dataloader'):
        Runner.from_cfg(cfg).train()
    cfg = runner_cfg(tmp_path / 'b', 'L2SPOptimWrapper', 'l2sp', dict(),
                     hooks=[dict(type='TPGMHook')])
    with pytest.raises(RuntimeError, match='TPGMOptimWrapper'):
        Runner.from_cfg(cfg).train()


def test_tpgm_hook_defaults_to_the_run_val_dataloader(tmp_path):
    cfg = runner_cfg(tmp_path, 'TPGMOptimWrapper', 'tpgm', dict(), hooks=[dict(type='TPGMHook')],
                     val_dataloader=VAL_LOADER, val_cfg=dict(),
                     val_evaluator=dict(type='MMDiGraPToyMetric'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    opt = runner.optim_wrapper.optimizer
    hook = [h for h in runner.hooks if type(h).__name__ == 'TPGMHook'][0]
    assert hook._loader is runner.val_dataloader and hook._consumed == 8
    assert {st['tpgm_step'].item() for st in opt.state.values()} == {8.0}
