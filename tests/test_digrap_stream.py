"""The tensor-by-tensor CPU transform (mmdigrap.core.digrap_stream) against the list path.

Full mode must be equal bit for bit to ``hypergradient`` + ``digrap_project_`` (same kernels,
other order); the lean mode takes <g, d> and ||d||^2 from the row sums and is checked to 1e-6.
"""
import pytest
import torch

from mmdigrap import DiGraP
from mmdigrap.core import digrap_stream
from mmdigrap.core.digrap_stream import SCRATCH_MIN_NUMEL, Scratch
from mmdigrap.optim import digrap as digrap_mod

#: ViT-like ranks and sizes: tensors above SCRATCH_MIN_NUMEL use the scratch buffers
SHAPES = [(6,), (160, 128), (1, 5, 3), (32, 8, 8, 8), (5, 7), (160,), (130, 160)]


class Lists(DiGraP):
    """DiGraP forced onto the list path (what CUDA and the variants run)."""

    def _streams(self, *_args):
        return False


def make_params(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]


def run(cls, params, steps=30, seed=1, val=False, **kw):
    """Adam steps on gradients that pull towards and away from the anchor in turn."""
    opt = cls(torch.optim.Adam(params, lr=3e-2), mu=0.05, omega_init=0.2, fused=False, **kw)
    gen = torch.Generator().manual_seed(seed)
    anchors = [p.detach().clone() for p in params]
    for t in range(steps):
        for p, a in zip(params, anchors):
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad = noise + 10 * (p.detach() - a) * (1.0 if t % 3 else -2.0)
        opt.step()
        if val:  # a held-out gradient for the next step's hyper-gradient
            opt.set_val_gradients([(p, torch.randn(p.shape, generator=gen)) for p in params])
    return opt


def max_diff(xs, ys):
    """max |x - y| / max(1, max |y|) per tensor."""
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1)).item() for x, y in zip(xs, ys))


@pytest.mark.parametrize('kw', [dict(), dict(hypergrad_norm='tensor'), dict(anchor='zero'),
                                dict(anchor_dtype=torch.bfloat16), dict(trainable=False),
                                dict(val=True, hypergrad_source='val'),
                                dict(dtype=torch.float64)],
                         ids=['row', 'tensor-norm', 'zero-anchor', 'bf16-anchor', 'fixed',
                              'val', 'float64'])
def test_full_mode_equals_the_list_path_bit_for_bit(kw):
    kw = dict(kw)
    dtype = kw.pop('dtype', torch.float32)
    pa, pb = make_params(dtype=dtype), make_params(dtype=dtype)
    lists = run(Lists, pa, **kw)
    stream = run(DiGraP, pb, **kw)
    assert stream._scratch_bufs is not None and lists.__dict__.get('_scratch_bufs') is None
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
        assert torch.equal(lists.state[a]['prev_proj'], stream.state[b]['prev_proj'])
        assert torch.equal(lists.state[a]['omega'], stream.state[b]['omega'])
    for key in ('omega', 'dot', 'sq_dist', 'conflict', 'hgrad'):
        torch.testing.assert_close(stream.last_stats[key], lists.last_stats[key], rtol=0,
                                   atol=0, equal_nan=True)
    if kw.get('trainable', True):
        assert len(set(stream.omegas().values())) > 1  # omega moved


@pytest.mark.parametrize('kw', [dict(), dict(hypergrad_norm='tensor'), dict(anchor='zero'),
                                dict(val=True, hypergrad_source='val')],
                         ids=['row', 'tensor-norm', 'zero-anchor', 'val'])
def test_lean_mode_equals_the_list_path_to_1e6(kw):
    pa, pb = make_params(), make_params()
    lists = run(Lists, pa, store_projection=False, **kw)
    stream = run(DiGraP, pb, store_projection=False, **kw)
    assert max_diff(pb, pa) <= 1e-6
    oa, ob = lists.omegas(), stream.omegas()
    assert max(abs(oa[k] - ob[k]) for k in oa) <= 1e-6 and len(set(ob.values())) > 1
    assert max_diff([stream.state[p]['prev_coef'] for p in pb],
                    [lists.state[p]['prev_coef'] for p in pa]) <= 1e-6
    assert stream.last_stats['conflict'].tolist() == lists.last_stats['conflict'].tolist()
    assert all('prev_proj' not in st for st in stream.state.values())


def test_scratch_is_reused_and_bounded():
    scratch = Scratch(max_numel=1 << 15)
    big, small, huge = torch.empty(130, 160), torch.empty(SCRATCH_MIN_NUMEL - 1), \
        torch.empty(1 << 16)
    view = scratch.get('product', big)
    assert view.shape == big.shape and view.is_contiguous()
    assert scratch.get('product', torch.empty(160, 128)).data_ptr() == view.data_ptr()
    assert scratch.get('product', small) is None and scratch.get('product', huge) is None
    assert scratch.nbytes == 160 * 130 * 4  # grown once to the largest request
    params = make_params()
    opt = run(DiGraP, params, steps=3, store_projection=False)
    ptrs = {k: v.data_ptr() for k, v in opt._scratch_bufs._bufs.items()}
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    assert {k: v.data_ptr() for k, v in opt._scratch_bufs._bufs.items()} == ptrs  # reused
    assert sorted(k[0] for k in ptrs) == ['offset', 'product']
    assert opt._scratch_bufs.nbytes == 2 * 160 * 130 * 4  # two of the largest tensor


def test_only_plain_cpu_buckets_stream(monkeypatch):
    calls = []
    real = digrap_stream.stream_project_

    def spy(*args, **kw):
        calls.append(len(args[0]))
        return real(*args, **kw)

    monkeypatch.setattr(digrap_mod, 'stream_project_', spy)
    run(DiGraP, make_params(), steps=2)
    assert calls == [len(SHAPES)] * 2
    calls.clear()
    run(DiGraP, make_params(), steps=2, track_update=True)  # the variant's list path
    half = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in make_params()]
    run(DiGraP, half, steps=2)  # half-precision weights: float32 copies, the list path
    assert calls == []
    monkeypatch.setattr(digrap_mod, 'STREAM_DEVICES', ())
    run(DiGraP, make_params(), steps=2)
    assert calls == []


@pytest.mark.parametrize('lean', [False, True], ids=['full', 'lean'])
def test_stream_reads_no_value_on_the_host(monkeypatch, lean):
    params = make_params()
    opt = run(DiGraP, params, steps=2, store_projection=not lean)
    for p in params:
        p.grad = torch.randn_like(p)

    def refuse(*_a, **_k):
        raise AssertionError('host sync in the streamed transform')

    for name in ('item', 'tolist', '__bool__', '__float__', '__int__'):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    opt._pre_step(*opt._params_with_grad())
