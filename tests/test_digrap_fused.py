"""The fused DiGraP transform (mmdigrap.core.digrap_fused) against the eager reference path.

The math is checked through the uncompiled two-pass functions (the ones ``torch.compile``
wraps), so these tests build no kernels; one small test compiles for real (inductor, C++).
"""
import copy
from shutil import which

import pytest
import torch

from mmdigrap import DiGraP
from mmdigrap.core import digrap_fused
from mmdigrap.core.digrap import hypergradient
from mmdigrap.core.digrap_fused import chunk_bounds, compile_available, reduce_pass
from mmdigrap.optim import digrap as digrap_mod

#: ranks 1-4 as in a ViT: bias, weight, pos_embed, patch-embedding conv kernel
SHAPES = [(6,), (5, 7), (1, 4, 3), (4, 3, 2, 2), (8, 5), (5,)]


class TwoPass(DiGraP):
    """DiGraP forced onto the uncompiled two-pass math (what fused=True compiles)."""

    def _fused_mode(self, params, group=None):
        return False


def make_params(dtypes=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dtypes = dtypes or [torch.float32] * len(SHAPES)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dt))
            for s, dt in zip(SHAPES, dtypes)]


def run(cls, params, steps=30, seed=1, **kw):
    """``steps`` Adam steps of ``cls`` on gradients that alternate between pulling towards
    and away from the anchor (so the projection is on in some steps, off in others)."""
    opt = cls(torch.optim.Adam(params, lr=3e-2), mu=0.05, omega_init=0.2, **kw)
    gen = torch.Generator().manual_seed(seed)
    anchors = [p.detach().float().clone() for p in params]
    for t in range(steps):
        for p, a in zip(params, anchors):
            noise = torch.randn(p.shape, generator=gen).to(p.device)
            pull = (p.detach().float() - a) * (1.0 if t % 3 else -2.0)
            p.grad = (noise + 10 * pull).to(p.dtype)
        opt.step()
    return opt


def max_diff(xs, ys):
    """max |x - y| / max(1, max |y|) per tensor: absolute for tensors of scale <= 1."""
    return max(((x.float() - y.float()).abs().max() / y.float().abs().max().clamp_min(1)).item()
               for x, y in zip(xs, ys))


@pytest.mark.parametrize('kw', [dict(), dict(store_projection=False),
                                dict(hypergrad_norm='tensor'), dict(anchor='zero'),
                                dict(store_projection=False, anchor='zero')],
                         ids=['full', 'lean', 'tensor-norm', 'zero-anchor', 'lean-zero-anchor'])
def test_two_pass_equals_eager_30_steps_float32(kw):
    pa, pb = make_params(), make_params()
    ea = run(DiGraP, pa, fused=False, **kw)
    fb = run(TwoPass, pb, **kw)
    assert max_diff(pa, pb) <= 1e-6
    oa, ob = ea.omegas(), fb.omegas()
    assert max(abs(oa[k] - ob[k]) for k in oa) <= 1e-6
    assert 0 < max(oa.values()) <= 1 and len(set(oa.values())) > 1  # omegas did move
    if kw.get('store_projection', True):
        assert max_diff([ea.state[p]['prev_proj'] for p in pa],
                        [fb.state[p]['prev_proj'] for p in pb]) <= 1e-6
    else:
        assert max_diff([ea.state[p]['prev_coef'] for p in pa],
                        [fb.state[p]['prev_coef'] for p in pb]) <= 1e-6
    conflicts = ea.last_stats['conflict'].tolist()
    assert fb.last_stats['conflict'].tolist() == conflicts
    torch.testing.assert_close(fb.last_stats['sq_dist'], ea.last_stats['sq_dist'],
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('lean', [False, True], ids=['full', 'lean'])
def test_two_pass_equals_eager_mixed_fp32_bf16(lean):
    dtypes = [torch.float32, torch.bfloat16, torch.float32, torch.bfloat16, torch.float32,
              torch.bfloat16]
    pa, pb = make_params(dtypes), make_params(dtypes)
    ea = run(DiGraP, pa, fused=False, store_projection=not lean)
    fb = run(TwoPass, pb, store_projection=not lean)
    f32 = [i for i, d in enumerate(dtypes) if d == torch.float32]
    assert max_diff([pa[i] for i in f32], [pb[i] for i in f32]) <= 1e-6
    for i, dt in enumerate(dtypes):  # bf16 tensors: within bf16 rounding of each other
        assert pb[i].dtype == dt
        if dt == torch.bfloat16:
            torch.testing.assert_close(pb[i], pa[i], rtol=2e-2, atol=2e-2)
    oa, ob = ea.omegas(), fb.omegas()
    assert max(abs(oa[f'param{i}'] - ob[f'param{i}']) for i in f32) <= 1e-6


def test_reduce_pass_values_match_the_eager_functions():
    params = make_params()
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    anchors = [p.detach() + 0.1 * torch.randn(p.shape, generator=gen) for p in params]
    prev = [torch.randn(p.shape, generator=gen) for p in params]
    d = [p.detach() - a for p, a in zip(params, anchors)]
    for row in (True, False):
        red = reduce_pass(grads, params, anchors, prev, row)
        norm = 'row' if row else 'tensor'
        torch.testing.assert_close(red[0], hypergradient(grads, prev, norm))
        torch.testing.assert_close(red[1], torch.stack([(g * x).sum() for g, x in zip(grads, d)]))
        torch.testing.assert_close(red[2], torch.stack([(x * x).sum() for x in d]))
        lean = reduce_pass(grads, params, anchors, None, row)  # partner of h is d itself
        torch.testing.assert_close(lean[0], hypergradient(grads, d, norm))
        torch.testing.assert_close(lean[1:], red[1:])


def test_fused_transform_reads_no_value_on_the_host(monkeypatch):
    params = make_params()
    opt = run(TwoPass, params, steps=2)
    for p in params:
        p.grad = torch.randn_like(p)

    def refuse(*_a, **_k):
        raise AssertionError('host sync in the fused transform')

    for name in ('item', 'tolist', '__bool__', '__float__', '__int__'):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    opt._pre_step(*opt._params_with_grad())


def test_chunks_of_a_vit_list_repeat_per_block():
    block = [(384,), (384,), (1152, 384), (1152,), (384, 384), (384,), (384,), (384,),
             (1536, 384), (1536,), (384, 1536), (384,)]
    sigs = [(384, 3, 16, 16), (384,), (1, 1, 384), (1, 197, 384)] + block * 12 + [(384,)] * 2
    bounds = chunk_bounds(sigs)
    assert bounds[0] == (0, 12) and bounds[-1] == (144, 150) and len(bounds) == 13
    assert len({tuple(sigs[i:j]) for i, j in bounds}) == 3  # 3 graphs serve 13 windows
    assert chunk_bounds(sigs[:20]) == [(0, 20)]


def test_fused_option_is_checked_and_auto_picks_a_path(monkeypatch):
    params = make_params()
    with pytest.raises(ValueError, match="fused must be True, False or 'auto'"):
        DiGraP(torch.optim.Adam(params), fused='yes')
    full = DiGraP(torch.optim.Adam(params))
    lean = DiGraP(torch.optim.Adam(params), store_projection=False)
    assert full.fused == 'auto' and 'fused=' in repr(full)
    assert full._fused_mode(params) is None  # small bucket: the eager path
    assert lean._fused_mode(params) is None  # CPU: the eager path, tensor by tensor
    monkeypatch.setattr(digrap_mod, 'STREAM_DEVICES', ())
    assert lean._fused_mode(params) is False  # elsewhere (CUDA) lean: the two-pass math
    monkeypatch.setattr(digrap_mod, 'STREAM_DEVICES', ('cpu',))
    monkeypatch.setattr(digrap_mod, 'AUTO_COMPILE_NUMEL', 10)
    monkeypatch.setattr(digrap_mod, 'compile_available', lambda device: True)
    assert full._fused_mode(params) is None  # 'auto' does not compile on the CPU
    monkeypatch.setattr(digrap_mod, 'AUTO_COMPILE_DEVICES', ('cpu',))
    assert full._fused_mode(params) is True
    assert DiGraP(torch.optim.Adam(params), fused=False)._fused_mode(params) is None
    assert DiGraP(torch.optim.Adam(params), anchor_device='meta')._fused_mode(params) is None


def test_failed_compile_warns_once_and_falls_back(monkeypatch):
    def broken(fn, **_kw):
        def call(*_a, **_k):
            raise RuntimeError('no compiler here')
        return call

    monkeypatch.setattr(digrap_fused.torch, 'compile', broken)
    monkeypatch.setattr(digrap_fused, '_COMPILE_OK', {'cpu': True})
    pa, pb = make_params(), make_params()
    with pytest.warns(UserWarning, match='torch.compile failed on cpu'):
        fb = run(DiGraP, pb, steps=3, fused=True)
    run(DiGraP, pa, steps=3, fused=False)
    assert max_diff(pa, pb) <= 1e-6
    assert fb._fused_impl[True]._failed == {'cpu'}


@pytest.mark.skipif(not which('g++') or not compile_available(torch.device('cpu')),
                    reason='inductor needs a C++ compiler on the CPU')
def test_compiled_equals_eager_and_resume_keeps_the_compiled_graphs():
    """The one test that compiles (3 small float32 tensors; tens of seconds on 2 cores)."""
    global SHAPES
    saved, SHAPES = SHAPES, [(6,), (5, 7), (4, 3, 2, 2)]
    try:
        pa, pb = make_params(), make_params()
        ea = run(DiGraP, pa, steps=8, fused=False)
        fb = run(DiGraP, pb, steps=8, fused=True)
    finally:
        SHAPES = saved
    assert max_diff(pa, pb) <= 1e-6
    oa, ob = ea.omegas(), fb.omegas()
    assert max(abs(oa[k] - ob[k]) for k in oa) <= 1e-6
    assert len(fb.compile_seconds) == 1 and list(fb.compile_seconds.values())[0] > 0
    from torch._dynamo.utils import counters
    frames = counters['stats']['unique_graphs']
    fb.load_state_dict(copy.deepcopy(fb.state_dict()))  # resume: the compiled graphs stay
    for p in pb:
        p.grad = torch.randn_like(p)
    fb.step()
    assert counters['stats']['unique_graphs'] == frames
    assert len(fb.compile_seconds) == 1


CUDA = torch.cuda.is_available()


@pytest.mark.skipif(not CUDA, reason='the Triton path needs CUDA (tools/benchmark/gpu_check.sh)')
def test_cuda_compiled_equals_eager_without_syncs_and_under_fp16_gradscaler():
    dtypes = [torch.float32, torch.bfloat16] * 3
    pa = [torch.nn.Parameter(p.detach().cuda()) for p in make_params(dtypes)]
    pb = [torch.nn.Parameter(p.detach().cuda()) for p in make_params(dtypes)]
    ea = run(DiGraP, pa, steps=10, fused=False)
    fb = run(DiGraP, pb, steps=10, fused=True)
    f32 = [i for i, d in enumerate(dtypes) if d == torch.float32]
    assert max_diff([pa[i] for i in f32], [pb[i] for i in f32]) <= 1e-6
    oa, ob = ea.omegas(), fb.omegas()
    assert max(abs(oa[f'param{i}'] - ob[f'param{i}']) for i in f32) <= 1e-6
    assert fb.compile_seconds
    for p in pb:
        p.grad = torch.randn_like(p)
    args = fb._params_with_grad()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        fb._pre_step(*args)  # the compiled transform: no host sync
    finally:
        torch.cuda.set_sync_debug_mode(0)
    # fp16 GradScaler: a skipped (inf) step leaves every DiGraP state untouched
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 4)).cuda()
    opt = DiGraP(torch.optim.AdamW(model.parameters(), lr=1e-2), fused=True)
    scaler = torch.amp.GradScaler('cuda')
    x, y = torch.randn(32, 8, device='cuda'), torch.randint(0, 4, (32,), device='cuda')
    for t in range(6):
        with torch.autocast('cuda', dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if t == 5:
            model[0].weight.grad[0, 0] = float('inf')
            before = copy.deepcopy(opt.state_dict()['projection'])
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    after = opt.state_dict()['projection']
    assert after['hyper_step'] == before['hyper_step'] == 5
    for k, st in before['state'].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                assert torch.equal(val, after['state'][k][key]), key
