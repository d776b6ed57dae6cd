"""DiGraP (torch face) against the literal per-tensor reference of docs/algorithm.md §10."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn

from mmdigrap import DiGraP
from mmdigrap.core import digrap_project_, hypergradient
from mmdigrap.core.reference import ReferenceDiGraP

from _toy import batches, make_mlp


def train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize('norm', ['row', 'tensor'])
@pytest.mark.parametrize('mu', [0.5, 10.0])
def test_matches_reference_30_steps(norm, mu):
    data = batches(30)
    m_ref, m_new = make_mlp(), make_mlp()
    ref = ReferenceDiGraP(torch.optim.Adam(m_ref.parameters(), lr=5e-2), mu=mu,
                          hypergrad_norm=norm)
    opt = DiGraP(torch.optim.Adam(m_new.parameters(), lr=5e-2), mu=mu, hypergrad_norm=norm,
                 named_parameters=m_new.named_parameters())
    omegas = []
    for x, y in data:
        for m, o in ((m_ref, ref), (m_new, opt)):
            for p in m.parameters():
                p.grad = None
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
        omegas.append(list(opt.omegas().values()))
    for p, q in zip(m_ref.parameters(), m_new.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0)
    traj = torch.tensor(omegas, dtype=torch.float64)
    ref_traj = torch.tensor(ref.history, dtype=torch.float64)
    torch.testing.assert_close(traj, ref_traj, atol=1e-6, rtol=0)
    # the trajectory is not trivial: omega moved for some tensor, first at step 3 (algorithm.md §5)
    assert traj[:2].abs().max() == 0
    assert traj[2:].max() > 0.05
    assert set(opt.omegas()) == {n for n, _ in m_new.named_parameters()}


def test_float32_close_to_reference():
    data = batches(30, torch.float32)
    m_ref, m_new = make_mlp(torch.float32), make_mlp(torch.float32)
    ref = ReferenceDiGraP(torch.optim.Adam(m_ref.parameters(), lr=5e-2))
    opt = DiGraP(torch.optim.Adam(m_new.parameters(), lr=5e-2))
    train(m_ref, ref, data)
    train(m_new, opt, data)
    for p, q in zip(m_ref.parameters(), m_new.parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=0)


@pytest.mark.parametrize('kw', [dict(mu=0.0), dict(omega_max=0.0)])
@pytest.mark.parametrize('base', ['adamw', 'sgd'])
def test_reduces_to_base_optimizer(kw, base):
    data = batches(20)
    m_base, m_dg = make_mlp(), make_mlp()

    def build(params):
        if base == 'adamw':
            return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        opt = DiGraP(build(m_dg.parameters()), **kw)
    train(m_base, build(m_base.parameters()), data)
    train(m_dg, opt, data)
    for p, q in zip(m_base.parameters(), m_dg.parameters()):
        assert torch.equal(p, q)


def test_full_projection_removes_radial_component():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    opt = DiGraP(torch.optim.SGD([p], lr=1e-3), omega_init=1.0, trainable=False)
    p.grad = torch.zeros_like(p)
    opt.step()  # step 1 snapshots the anchor
    with torch.no_grad():
        p.add_(torch.randn_like(p))
    d = (p - opt.state[p]['anchor']).detach()
    g = -d + 0.3 * torch.randn_like(d)  # conflicting: <g, d> < 0
    assert torch.sum(g * d) < 0
    p.grad = g.clone()
    opt.step()
    assert abs(torch.sum(p.grad * d).item()) < 1e-6 * d.norm().item() * g.norm().item()
    # the orthogonal part is untouched
    ortho = g - torch.sum(g * d) / torch.sum(d * d) * d
    torch.testing.assert_close(p.grad, ortho)


def test_no_projection_without_conflict():
    p = nn.Parameter(torch.zeros(3, 3, dtype=torch.float64))
    opt = DiGraP(torch.optim.SGD([p], lr=1e-3), omega_init=1.0, trainable=False)
    p.grad = torch.zeros_like(p)
    opt.step()
    with torch.no_grad():
        p.add_(1.0)
    g = torch.ones(3, 3, dtype=torch.float64)  # aligned with d: no conflict
    p.grad = g.clone()
    opt.step()
    assert torch.equal(p.grad, g)


def test_l2sp_identity():
    """g' = g + lambda d with lambda = omega * max(0, -s) / (||d||^2 + 1e-8) (algorithm.md §7)."""
    torch.manual_seed(3)
    for trial in range(5):
        g = torch.randn(7, 5, dtype=torch.float64)
        d = torch.randn(7, 5, dtype=torch.float64)
        w = torch.tensor([0.37], dtype=torch.float64)
        g_new = [g.clone()]
        res = digrap_project_(g_new, [d.clone()], w, torch.zeros(1, dtype=torch.float64),
                              torch.zeros(1, dtype=torch.float64), None, step=1, mu=0.5,
                              proj_out=[torch.zeros_like(d)])
        s = torch.sum(g * d)
        lam = 0.37 * torch.clamp(-s, min=0) / (torch.sum(d * d) + 1e-8)
        torch.testing.assert_close(g_new[0], g + lam * d)
        assert bool(res.conflict[0]) == bool(s < 0)


def test_grad_none_keeps_state():
    m = make_mlp()
    opt = DiGraP(torch.optim.Adam(m.parameters(), lr=1e-2),
                 named_parameters=m.named_parameters())
    data = batches(5)
    train(m, opt, data)
    frozen = m[0].weight
    before = copy.deepcopy(opt.state[frozen])
    base_before = copy.deepcopy(opt.base_optimizer.state[frozen])
    value = frozen.detach().clone()
    for x, y in batches(4, seed=7):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        frozen.grad = None
        opt.step()
    for k, v in before.items():
        now = opt.state[frozen][k]
        assert torch.equal(now, v) if isinstance(v, torch.Tensor) else now == v, k
    assert torch.equal(opt.base_optimizer.state[frozen]['exp_avg'], base_before['exp_avg'])
    assert torch.equal(frozen, value)
    # the others did move on
    assert opt.hyper_step == 9


def test_state_dict_round_trip():
    data = batches(12)
    m1 = make_mlp()
    o1 = DiGraP(torch.optim.Adam(m1.parameters(), lr=5e-2), mu=2.0)
    train(m1, o1, data[:6])
    sd = copy.deepcopy(o1.state_dict())
    m2 = copy.deepcopy(m1)
    o2 = DiGraP(torch.optim.Adam(m2.parameters(), lr=5e-2), mu=2.0)
    o2.load_state_dict(sd)
    assert o2.hyper_step == 6
    train(m1, o1, data[6:])
    train(m2, o2, data[6:])
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert o1.omegas() == o2.omegas()
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(o1.state[p]['anchor'], o2.state[q]['anchor'])


def test_plain_state_dict_is_refused_with_fix():
    m = make_mlp()
    base = torch.optim.Adam(m.parameters())
    opt = DiGraP(torch.optim.Adam(m.parameters()))
    with pytest.raises(ValueError, match='load_from'):
        opt.load_state_dict(base.state_dict())
    # the reverse works: the layout is flat, a plain optimizer resumes the base state
    train(m, opt, batches(2))
    base.load_state_dict(opt.state_dict())
    assert torch.equal(base.state[m[0].weight]['exp_avg'],
                       opt.base_optimizer.state[m[0].weight]['exp_avg'])


def test_lean_mode_close_and_smaller():
    data = batches(30)
    m_full, m_lean = make_mlp(), make_mlp()
    full = DiGraP(torch.optim.Adam(m_full.parameters(), lr=5e-2))
    lean = DiGraP(torch.optim.Adam(m_lean.parameters(), lr=5e-2), store_projection=False)
    train(m_full, full, data)
    train(m_lean, lean, data)
    assert all('prev_proj' not in st for st in lean.state.values())
    # one step stale direction: a different but close trajectory
    for p, q in zip(m_full.parameters(), m_lean.parameters()):
        torch.testing.assert_close(q, p, atol=0.3, rtol=0)
    assert max(lean.omegas().values()) > 0
    # the lean hyper-gradient is exact when the offset keeps its direction:
    # Norm(g, c * d) == sign(c) * Norm(g, d)
    g, d = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    for c in (-0.7, 0.0, 2.5):
        want = hypergradient([g], [c * d], 'row')[0]
        got = torch.sign(torch.tensor(c, dtype=torch.float64)) * hypergradient([g], [d], 'row')[0]
        torch.testing.assert_close(got, want)


def test_zero_anchor_stores_nothing_and_moves_from_step_2():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(4, 6, dtype=torch.float64))  # like LoRA-A: away from 0
    opt = DiGraP(torch.optim.Adam([a], lr=1e-2), anchor='zero', mu=0.5)
    a.grad = -a.detach()  # step 1: conflict (pushes away from 0), P_1 != 0 already
    opt.step()
    assert opt.omegas()['param0'] == 0
    a.grad = a.detach().clone()  # step 2: the gradient flips: h = cos(a, -a) = -1 < 0
    opt.step()
    assert 'anchor' not in opt.state[a]
    # first hyper-step at T=2 moves omega by ~0.74 mu (algorithm.md §5)
    assert opt.omegas()['param0'] == pytest.approx(0.5 * (0.1 / (1 - 0.9 ** 2))
                                                   / ((0.001 / (1 - 0.999 ** 2)) ** 0.5 + 1e-8),
                                                   rel=1e-6)


def test_hypergradient_row_equals_normalize():
    g, P = torch.randn(6, 5, 3, 3), torch.randn(6, 5, 3, 3)
    want = torch.sum(nn.functional.normalize(g, dim=1) * nn.functional.normalize(P, dim=1))
    torch.testing.assert_close(hypergradient([g], [P], 'row')[0], want)
    assert hypergradient([torch.zeros(3, 3)], [torch.zeros(3, 3)], 'row')[0] == 0


def test_nonfinite_gradient_never_poisons_omega():
    m = make_mlp()
    opt = DiGraP(torch.optim.SGD(m.parameters(), lr=1e-2), mu=1.0)
    train(m, opt, batches(4))
    before = opt.omegas()
    opt.zero_grad()
    for p in m.parameters():
        p.grad = torch.full_like(p, float('nan'))
    opt.step()
    train(m, opt, [])
    assert opt.omegas() == before
    for p in m.parameters():  # restore finite weights and train on
        with torch.no_grad():
            p.copy_(torch.randn_like(p))
    train(m, opt, batches(4, seed=5))
    assert all(torch.isfinite(torch.tensor(list(opt.omegas().values()))))


@pytest.mark.parametrize('kw,match', [
    (dict(mu=-1), 'mu'), (dict(omega_max=-1), 'omega_max'), (dict(hypergrad_norm='l1'), 'row'),
    (dict(anchor='init'), 'zero'), (dict(omega_init=2.0), 'omega_init'),
    (dict(betas=(0.9, 1.0)), 'betas'), (dict(exclude=['(']), 'regex')])
def test_bad_values_raise_with_fix(kw, match):
    m = make_mlp()
    with pytest.raises(ValueError, match=match):
        DiGraP(torch.optim.Adam(m.parameters()), **kw)


def test_exclude_warns_on_no_match_and_excludes():
    m = make_mlp()
    with pytest.warns(UserWarning, match='matches no parameter'):
        DiGraP(torch.optim.Adam(m.parameters()), exclude=[r'^head\.'],
               named_parameters=m.named_parameters())
    opt = DiGraP(torch.optim.Adam(m.parameters()), exclude=[r'^3\.'],
                 named_parameters=m.named_parameters())
    train(m, opt, batches(3))
    assert set(opt.omegas()) == {'0.weight', '0.bias', '1.weight', '1.bias'}
    assert m[3].weight not in opt.state
    with pytest.raises(TypeError, match='already built'):
        DiGraP(m.parameters())


def test_exclude_without_names_is_clear():
    m = make_mlp()
    opt = DiGraP(torch.optim.Adam(m.parameters()), exclude=[r'^3\.'])
    with pytest.raises(RuntimeError, match='named_parameters'):
        train(m, opt, batches(1))


def test_lr_scheduler_and_param_groups_shared():
    m = make_mlp()
    base = torch.optim.AdamW(m.parameters(), lr=1.0)
    opt = DiGraP(base)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(m, opt, batches(2))
    sched.step()
    assert base.param_groups[0]['lr'] == 0.5 and opt.param_groups is base.param_groups


def test_bf16_params_reduce_in_float32():
    m = make_mlp(torch.bfloat16)
    opt = DiGraP(torch.optim.Adam(m.parameters(), lr=1e-2), mu=1.0)
    train(m, opt, batches(8, torch.bfloat16))
    st = opt.state[m[0].weight]
    assert st['anchor'].dtype == torch.bfloat16 and st['omega'].dtype == torch.float32
    assert all(0 <= w <= 1 for w in opt.omegas().values())


# ------------------------------------------------------- the torch.optim protocol (issue 12)
def test_torch_hooks_fire():
    m = make_mlp()
    opt = DiGraP(torch.optim.Adam(m.parameters(), lr=1e-2))
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append('step_pre'))
    opt.register_step_post_hook(lambda o, a, k: calls.append('step_post'))
    opt.register_state_dict_pre_hook(lambda o: calls.append('sd_pre'))

    def sd_post(o, sd):
        calls.append('sd_post')
        sd['extra'] = 1
        return sd
    opt.register_state_dict_post_hook(sd_post)
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append('load_pre'))
    opt.register_load_state_dict_post_hook(lambda o: calls.append('load_post'))
    train(m, opt, batches(1))
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    assert calls == ['step_pre', 'step_post', 'sd_pre', 'sd_post', 'load_pre', 'load_post']
    assert sd['extra'] == 1


def test_hyper_params_live_in_the_param_groups():
    m = make_mlp()
    base = torch.optim.Adam([{'params': m[0].parameters(), 'mu': 2.0},
                             {'params': list(m[1].parameters()) + list(m[3].parameters())}],
                            lr=5e-2)
    opt = DiGraP(base, mu=0.5, betas=(0.8, 0.99), omega_max=0.9)
    g0, g1 = opt.param_groups
    assert (g0['mu'], g1['mu']) == (2.0, 0.5)  # a group's own value wins over the default
    assert g1['hyper_betas'] == (0.8, 0.99) and g1['betas'] == (0.9, 0.999)  # Adam's own
    assert g1['omega_max'] == 0.9 and g1['hypergrad_norm'] == 'row' and opt.mu == 0.5
    with pytest.raises(AttributeError, match="group\\['mu'\\]"):
        opt.mu = 1.0
    assert opt.state_dict()['param_groups'][0]['mu'] == 2.0  # checkpointed with the groups
    with pytest.raises(ValueError, match='param group 1'):
        DiGraP(torch.optim.Adam([{'params': m[0].parameters()},
                                 {'params': m[3].parameters(), 'mu': -1.0}]))
    opt.add_param_group({'params': [nn.Parameter(torch.zeros(2, dtype=torch.float64))]})
    assert opt.param_groups[-1]['mu'] == 0.5


def test_per_group_mu_equals_per_tensor_reference():
    """Two groups with two mu == two reference loops, one per subset (Adam is per tensor)."""
    data = batches(30)
    m_ref, m_new = make_mlp(), make_mlp()
    first = list(m_ref[0].parameters())
    rest = list(m_ref[1].parameters()) + list(m_ref[3].parameters())
    refs = [ReferenceDiGraP(torch.optim.Adam(first, lr=5e-2), mu=5.0),
            ReferenceDiGraP(torch.optim.Adam(rest, lr=5e-2), mu=0.5)]
    opt = DiGraP(torch.optim.Adam(
        [{'params': m_new[0].parameters(), 'mu': 5.0},
         {'params': list(m_new[1].parameters()) + list(m_new[3].parameters())}], lr=5e-2),
        mu=0.5)
    for x, y in data:
        for p in list(m_ref.parameters()) + list(m_new.parameters()):
            p.grad = None
        nn.functional.cross_entropy(m_ref(x), y).backward()
        nn.functional.cross_entropy(m_new(x), y).backward()
        for r in refs:
            r.step()
        opt.step()
    for p, q in zip(m_ref.parameters(), m_new.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0)
    got = [opt.state[p]['omega'].item() for p in m_new.parameters()]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(refs[0].w + refs[1].w),
                               atol=1e-6, rtol=0)
    # and the group's mu mattered: one mu for all gives other omegas on the first layer
    m_one = make_mlp()
    one = DiGraP(torch.optim.Adam(m_one.parameters(), lr=5e-2), mu=0.5)
    train(m_one, one, data)
    assert max(abs(one.state[p]['omega'].item() - w)
               for p, w in zip(m_one[0].parameters(), got[:2])) > 1e-3


def test_mixed_bf16_fp32_tensors_bucketed_exactly():
    """A model with bf16 and fp32 tensors works; each dtype gives what it gives alone."""
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5, 4))
    b = nn.Parameter(torch.randn(3, 4).bfloat16())
    a2, b2 = nn.Parameter(a.detach().clone()), nn.Parameter(b.detach().clone())
    mixed = DiGraP(torch.optim.Adam([a, b], lr=1e-2), mu=1.0, omega_init=0.3)
    alone = [DiGraP(torch.optim.Adam([a2], lr=1e-2), mu=1.0, omega_init=0.3),
             DiGraP(torch.optim.Adam([b2], lr=1e-2), mu=1.0, omega_init=0.3)]
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        ga, gb = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g).bfloat16()
        a.grad, b.grad, a2.grad, b2.grad = ga.clone(), gb.clone(), ga.clone(), gb.clone()
        mixed.step()
        for o in alone:
            o.step()
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert torch.equal(mixed.state[a]['omega'], alone[0].state[a2]['omega'])
    assert torch.equal(mixed.state[b]['omega'], alone[1].state[b2]['omega'])
    assert mixed.last_stats['omega'].shape == (2,) and len(mixed.last_stats['params']) == 2


def test_checkpoint_without_group_keys_still_loads():
    """A checkpoint from before the hyper-parameters moved into the groups (no group keys, no
    per-tensor step count) resumes bit-exactly."""
    data = batches(12)
    m1 = make_mlp()
    o1 = DiGraP(torch.optim.Adam(m1.parameters(), lr=5e-2), mu=2.0)
    train(m1, o1, data[:6])
    sd = copy.deepcopy(o1.state_dict())
    for group in sd['param_groups']:
        for key in o1.method_defaults:
            del group[key]
    for st in sd['projection']['state'].values():
        del st['step']
    m2 = copy.deepcopy(m1)
    o2 = DiGraP(torch.optim.Adam(m2.parameters(), lr=5e-2), mu=2.0)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]['mu'] == 2.0 and o2.state[m2[0].weight]['step'] == 6
    train(m1, o1, data[6:])
    train(m2, o2, data[6:])
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
