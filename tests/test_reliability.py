"""Reliability of DiGraP in real training conditions (CPU; CUDA-only parts are skipped).

One test (or a small group) per property, each asserting values:

1. resume is exact: N iterations straight == N/2, checkpoint, a NEW process running
   ``tools/train.py --resume``, N/2 (bit-identical parameters, omegas, hyper-moments,
   prev_proj, anchors, AdamW state);
2. AMP: a GradScaler-skipped (inf/NaN) step leaves every DiGraP state untouched; bf16 autocast
   on the CPU trains; fp16 + GradScaler on CUDA (skipped here);
3. gradient accumulation x4 == one step on the 4x batch; update order unscale -> clip ->
   projection -> base step (a spy on the base optimizer sees project(clip(g)));
4. distributed: a 2-process gloo torchrun keeps identical omegas and parameters on both ranks;
   sharded parameters (FSDP FlatParameter, DTensor / FSDP2) are refused with a clear error;
5. bad input: non-finite gradients, a parameter frozen mid-run, resuming across
   DiGraP/plain-optimizer checkpoints, anchors in another dtype/device;
6. data safety: a hard crash (os._exit) mid-run loses at most the iterations since the last
   (iteration-based) checkpoint, and the resumed run ends bit-identical to an uninterrupted one.

The mmengine runs use the toy MLP of ``_toy.py`` (8-16-1, 64 in-memory samples) with an
``IterBasedTrainLoop``: mmengine's EpochBasedTrainLoop replays a whole epoch after a
mid-epoch resume, so only iteration-based runs can resume mid-epoch exactly.
"""
import copy
import importlib.util
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmengine')

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from mmengine.logging import MessageHub  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402

import mmdigrap  # noqa: E402,F401  (registers the wrappers, installs the checkpoint fix)
from mmdigrap import DiGraP  # noqa: E402

import _reliability_toy  # noqa: E402,F401  (MMDiGraPRel* hooks)
import _toy  # noqa: E402,F401  (MMDiGraPToy* model / dataset)

CUDA = torch.cuda.is_available()
N_ITERS = 12  # 64 samples / batch 8 = 8 iterations per data epoch: the runs cross one
CKPT_EVERY = 3

CFG = """
custom_imports = dict(imports=['_toy', '_reliability_toy', 'mmdigrap'],
                      allow_failed_imports=False)
model = dict(type='MMDiGraPToyModel')
train_dataloader = dict(batch_size=8, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
                        dataset=dict(type='MMDiGraPToyDataset', num=64))
train_cfg = dict(by_epoch=False, max_iters={n_iters})
optim_wrapper = dict(type='{wrapper}',
                     optimizer=dict(type='AdamW', lr=5e-2, weight_decay=0.0),
                     {digrap}clip_grad=dict(max_norm=10.0))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval={ckpt}, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=4))
log_processor = dict(by_epoch=False)
custom_hooks = [{hooks}dict(type='MMDiGraPRelDumpStateHook'),
                dict(type='MMDiGraPRelCrashHook')]
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
"""
DIGRAP_OPTS = "digrap=dict(mu=0.1, omega_init=0.5),\n                     "
DIGRAP_HOOK = "dict(type='RobustFTHook', log_interval=4, allow_random_init=True),\n                "


def write_cfg(path, digrap=True, n_iters=N_ITERS, ckpt=CKPT_EVERY):
    path.write_text(CFG.format(
        n_iters=n_iters, ckpt=ckpt,
        wrapper='DiGraPOptimWrapper' if digrap else 'OptimWrapper',
        digrap=DIGRAP_OPTS if digrap else '', hooks=DIGRAP_HOOK if digrap else ''))
    return path


def _uniq(tag):
    return f'experiment_name={tag}_{os.getpid()}_{time.time_ns()}'


def _train_tool():
    spec = importlib.util.spec_from_file_location('_mmdigrap_tools_train_rel',
                                                  ROOT / 'tools' / 'train.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train_in_process(monkeypatch, cfg, work_dir, *extra):
    """``tools/train.py CFG --work-dir WD [extra]`` in this process (fast: no imports).

    Always on the CPU (like the subprocesses, which get ``CUDA_VISIBLE_DEVICES=''``), so the
    bit-exact comparisons hold on a GPU host too.
    """
    import mmengine.runner.runner as mm_runner
    train = _train_tool()
    monkeypatch.setattr(mm_runner, 'get_device', lambda: 'cpu')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv', ['train.py', str(cfg), '--work-dir', str(work_dir),
                                      *extra])
    train.main()


def _child_env(**extra):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), env.get('PYTHONPATH', '')]))
    env.pop('LOCAL_RANK', None)
    env.update(extra)
    return env


def train_subprocess(cfg, work_dir, *extra, env=None, timeout=180):
    """``python tools/train.py CFG --work-dir WD [extra]`` in a NEW process."""
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(cfg), '--work-dir',
         str(work_dir), *extra],
        cwd=str(work_dir.parent), env=env or _child_env(), capture_output=True, text=True,
        timeout=timeout)


def load_dump(work_dir, rank=0):
    return torch.load(Path(work_dir) / f'state_rank{rank}.pt', map_location='cpu',
                      weights_only=False)


def assert_bit_identical(a, b, path='state'):
    """Recursive torch.equal over nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f'{path} differs (max |diff| {(a - b).abs().max()})'
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f'{path}: keys {sorted(a)} != {sorted(b)}'
        for k in a:
            assert_bit_identical(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_identical(x, y, f'{path}[{i}]')
    else:
        assert a == b, f'{path}: {a!r} != {b!r}'


def assert_same_run(d1, d2):
    """Two DumpStateHook dumps describe the same training state, bit for bit."""
    assert d1['iter'] == d2['iter']
    assert_bit_identical(d1['params'], d2['params'], 'params')
    assert_bit_identical(d1['optim'], d2['optim'], 'optim')  # base + omegas + anchors
    assert d1['omegas'] == d2['omegas']


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
    """N_ITERS straight (in this process); returns the DumpStateHook dump."""
    wd = tmp_path_factory.mktemp('straight')
    cfg = write_cfg(wd.parent / f'{wd.name}_cfg.py')
    mp = pytest.MonkeyPatch()
    try:
        train_in_process(mp, cfg, wd, '--cfg-options', _uniq('straight'))
    finally:
        mp.undo()
    dump = load_dump(wd)
    proj = dump['optim']['projection']
    # the run is not trivial: 4 tensors with DiGraP state, omegas moved away from 0.5
    assert dump['iter'] == N_ITERS and proj['hyper_step'] == N_ITERS
    assert len(proj['state']) == 4
    assert all({'anchor', 'omega', 'omega_exp_avg', 'omega_exp_avg_sq', 'prev_proj'} <= set(st)
               for st in proj['state'].values())
    assert max(abs(w - 0.5) for w in dump['omegas'].values()) > 0.02
    return dump


# ---------------------------------------------------------------------------------------- 1
def test_1_resume_in_new_process_is_bit_identical(straight_run, tmp_path, monkeypatch):
    cfg = write_cfg(tmp_path / 'cfg.py')
    wd = tmp_path / 'work'
    half = N_ITERS // 2
    train_in_process(monkeypatch, cfg, wd, '--cfg-options', f'train_cfg.max_iters={half}',
                     _uniq('half'))
    first = load_dump(wd)
    assert first['iter'] == half and first['optim']['projection']['hyper_step'] == half
    assert (wd / f'iter_{half}.pth').is_file()
    assert (wd / 'last_checkpoint').read_text().strip().endswith(f'iter_{half}.pth')

    proc = train_subprocess(cfg, wd, '--resume', '--cfg-options', _uniq('resumed'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'resumed epoch: 0, iter: {half}' in proc.stdout + proc.stderr
    resumed = load_dump(wd)
    assert resumed['iter'] == N_ITERS
    assert resumed['optim']['projection']['hyper_step'] == N_ITERS
    assert_same_run(resumed, straight_run)


# ---------------------------------------------------------------------------------------- 2
def _toy_model(seed=0):
    torch.manual_seed(seed)
    return _toy.ToyModel()


def _toy_batches(n, bs=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, generator=g)
    out = []
    for _ in range(n):
        x = torch.randn(bs, 8, generator=g)
        out.append((x, x @ w))
    return out


def _digrap_state(ow):
    """Deep copy of everything DiGraP and the base optimizer keep, plus hyper_step."""
    return copy.deepcopy(dict(ow.optimizer.state_dict(), hyper_step=ow.optimizer.hyper_step))


def _train_steps(ow, model, batches):
    losses = []
    for x, y in batches:
        with ow.optim_context(model):
            loss = model(x, y, mode='loss')['loss']
        ow.update_params(loss)
        losses.append(loss.item())
    return losses


def _amp_wrapper(model, **kw):
    MessageHub.get_current_instance()
    cfg = dict(type='DiGraPAmpOptimWrapper',
               optimizer=dict(type='AdamW', lr=2e-2, weight_decay=0.0),
               digrap=dict(mu=0.1, omega_init=0.5))
    cfg.update(kw)
    return build_optim_wrapper(model, cfg)


@pytest.mark.skipif(CUDA, reason='CPU code path of the AMP wrapper (bf16 + GradScaler(cpu))')
@pytest.mark.parametrize('how', ['nan_input', 'inf_grad_element'])
def test_2_amp_skipped_step_changes_no_digrap_state(how):
    model = _toy_model()
    ow = _amp_wrapper(model, loss_scale=dict(init_scale=2.0 ** 10))  # dynamic
    assert isinstance(ow.loss_scaler, torch.amp.GradScaler) and ow.loss_scaler._device == 'cpu'
    _train_steps(ow, model, _toy_batches(4))
    assert ow.optimizer.hyper_step == 4
    before = _digrap_state(ow)
    params = copy.deepcopy(model.state_dict())
    scale = ow.loss_scaler.get_scale()

    x, y = _toy_batches(1, seed=9)[0]
    if how == 'nan_input':  # a real non-finite loss -> NaN gradients everywhere
        x[0, 0] = float('nan')
        with ow.optim_context(model):
            loss = model(x, y, mode='loss')['loss']
        assert not torch.isfinite(loss)
        ow.update_params(loss)
    else:  # one inf element in one (scaled) gradient
        with ow.optim_context(model):
            loss = model(x, y, mode='loss')['loss']
        ow.backward(loss)
        model.fc1.weight.grad[0, 0] = float('inf')
        ow.step()
        ow.zero_grad()

    assert ow.loss_scaler.get_scale() == scale / 2  # GradScaler saw the inf and backed off
    after = _digrap_state(ow)
    assert after['hyper_step'] == 4
    assert_bit_identical(after, before, 'digrap+base state')  # omega, moments, prev_proj, anchors
    assert_bit_identical(dict(model.state_dict()), params, 'params')
    # and training continues normally afterwards
    _train_steps(ow, model, _toy_batches(2, seed=4))
    assert ow.optimizer.hyper_step == 6
    assert all(math.isfinite(w) for w in ow.omegas().values())


@pytest.mark.skipif(CUDA, reason='CPU bf16 autocast path')
def test_2_amp_bf16_autocast_trains_on_cpu():
    model = _toy_model()
    ow = _amp_wrapper(model)
    assert ow.cast_dtype == torch.bfloat16
    x_eval, y_eval = _toy_batches(1, bs=64, seed=11)[0]
    with torch.no_grad():
        before = model(x_eval, y_eval, mode='loss')['loss'].item()
    with ow.optim_context(model):
        assert model.fc1(x_eval).dtype == torch.bfloat16  # autocast really is on
    _train_steps(ow, model, _toy_batches(30, seed=11))
    with torch.no_grad():
        after = model(x_eval, y_eval, mode='loss')['loss'].item()
    assert after < 0.7 * before, (before, after)
    omegas = ow.omegas()
    assert len(omegas) == 4 and all(math.isfinite(w) and 0 <= w <= 1 for w in omegas.values())
    assert ow.optimizer.hyper_step == 30
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(not CUDA, reason='fp16 autocast + GradScaler needs CUDA')
def test_2_amp_fp16_gradscaler_cuda():
    model = _toy_model().cuda()
    ow = _amp_wrapper(model, dtype='float16', loss_scale='dynamic')
    batches = [(x.cuda(), y.cuda()) for x, y in _toy_batches(20, seed=11)]
    losses = _train_steps(ow, model, batches[:10])
    before, scale = _digrap_state(ow), ow.loss_scaler.get_scale()
    hyper = ow.optimizer.hyper_step
    x, y = batches[10]
    with ow.optim_context(model):
        loss = model(x, y, mode='loss')['loss']
    ow.backward(loss)
    model.fc2.weight.grad[0, 0] = float('inf')
    ow.step()
    ow.zero_grad()
    assert ow.loss_scaler.get_scale() < scale and ow.optimizer.hyper_step == hyper
    assert_bit_identical(_digrap_state(ow), before)
    losses += _train_steps(ow, model, batches[11:])
    assert all(math.isfinite(w) for w in ow.omegas().values())
    assert sum(losses[-3:]) < sum(losses[:3])


# ---------------------------------------------------------------------------------------- 3
def test_3_accumulation_equals_big_batch():
    model_acc, model_big = _toy_model(), _toy_model()
    cfg = dict(type='DiGraPOptimWrapper', optimizer=dict(type='AdamW', lr=5e-2,
                                                         weight_decay=0.0),
               digrap=dict(mu=0.1, omega_init=0.5))
    ow_acc = build_optim_wrapper(model_acc, dict(cfg, accumulative_counts=4))
    ow_big = build_optim_wrapper(model_big, cfg)
    micro = _toy_batches(6 * 4, bs=8, seed=5)
    for step in range(6):
        chunk = micro[4 * step:4 * step + 4]
        for i, (x, y) in enumerate(chunk):
            with ow_acc.optim_context(model_acc):
                loss = model_acc(x, y, mode='loss')['loss']  # mean over 8
            ow_acc.update_params(loss)  # mmengine divides by accumulative_counts
            # omega and the hyper-step counter advance once per real optimizer step
            assert ow_acc.optimizer.hyper_step == step + (i == 3)
        x = torch.cat([c[0] for c in chunk])
        y = torch.cat([c[1] for c in chunk])
        ow_big.update_params(model_big(x, y, mode='loss')['loss'])  # mean over 32
        assert ow_big.optimizer.hyper_step == step + 1
    w_acc, w_big = ow_acc.omegas(), ow_big.omegas()
    assert w_acc.keys() == w_big.keys() and len(w_acc) == 4
    for k in w_acc:
        assert w_acc[k] == pytest.approx(w_big[k], abs=1e-6), k
    assert max(abs(w - 0.5) for w in w_big.values()) > 0.02  # omegas did move
    for (n, p), q in zip(model_acc.named_parameters(), model_big.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    sa, sb = ow_acc.optimizer.state_dict(), ow_big.optimizer.state_dict()
    for k, st in sa['projection']['state'].items():
        torch.testing.assert_close(st['prev_proj'], sb['projection']['state'][k]['prev_proj'],
                                   rtol=1e-4, atol=1e-6)


def _spy_base(opt):
    """Record the gradients the base optimizer sees at each of its steps."""
    seen = []
    base = opt.base_optimizer
    orig = base.step

    def spy(*a, **kw):
        seen.append([p.grad.detach().clone() for g in base.param_groups for p in g['params']])
        return orig(*a, **kw)

    base.step = spy
    return seen


def _conflict_setup(model, seed=0):
    """Offsets d = theta - theta0 and raw gradients: conflicting (<g,d> < 0) on fc1.*,
    agreeing on fc2.*; returns (d, g) lists in parameter order."""
    gen = torch.Generator().manual_seed(seed)
    d, g = [], []
    for n, p in model.named_parameters():
        di = 0.1 * torch.randn(p.shape, generator=gen)
        noise = 0.3 * torch.randn(p.shape, generator=gen)
        noise -= torch.sum(noise * di) / torch.sum(di * di) * di  # orthogonal to d
        gi = (-2.0 if n.startswith('fc1') else 2.0) * di + noise  # <g, d> = -+2 ||d||^2
        d.append(di)
        g.append(gi)
    return d, g


def _project(g, d, omega):
    s = torch.sum(g * d)
    if s < 0:
        return g - omega * (s / (torch.sum(d * d) + 1e-8)) * d
    return g.clone()


@pytest.mark.parametrize('amp', [False, True])
def test_3_order_unscale_clip_project_step(amp):
    if amp and CUDA:
        pytest.skip('the CPU GradScaler path is checked here')
    model = _toy_model()
    max_norm, scale = 0.5, 2.0 ** 8
    cfg = dict(type='DiGraPAmpOptimWrapper' if amp else 'DiGraPOptimWrapper',
               optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.0),
               digrap=dict(mu=0.0, omega_init=1.0),  # fixed omega = 1: full projection
               clip_grad=dict(max_norm=max_norm))
    if amp:
        cfg['loss_scale'] = scale
    MessageHub.get_current_instance()
    ow = build_optim_wrapper(model, cfg)
    assert ow.optimizer.capture_anchors() == 4
    d, g = _conflict_setup(model)
    with torch.no_grad():
        for p, di in zip(model.parameters(), d):
            p.add_(di)
    d = [p.detach() - ow.optimizer.state[p]['anchor'] for p in model.parameters()]
    if amp:
        ow.loss_scaler.scale(torch.zeros(()))  # what backward() does first: init the scale
        assert ow.loss_scaler.get_scale() == scale
    for p, gi in zip(model.parameters(), g):
        p.grad = gi * scale if amp else gi.clone()
    seen = _spy_base(ow.optimizer)
    ow.step()
    assert len(seen) == 1 and ow.optimizer.hyper_step == 1

    total = torch.sqrt(sum(torch.sum(gi * gi) for gi in g))
    assert total > 2 * max_norm  # clipping is active
    coef = max_norm / (total + 1e-6)
    expected = [_project(gi * coef, di, 1.0) for gi, di in zip(g, d)]
    assert [bool(torch.sum(gi * di) < 0) for gi, di in zip(g, d)] == [True, True, False, False]
    for got, exp in zip(seen[0], expected):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-7)
    # the test discriminates: clip after projection (other norm) would give another gradient
    proj = [_project(gi, di, 1.0) for gi, di in zip(g, d)]
    pnorm = torch.sqrt(sum(torch.sum(x * x) for x in proj))
    wrong = [x * max_norm / (pnorm + 1e-6) for x in proj]
    assert not torch.allclose(seen[0][0], wrong[0], rtol=1e-3, atol=0)


# ---------------------------------------------------------------------------------------- 4
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_4_ddp_two_gloo_ranks_hold_identical_omegas(tmp_path):
    cfg = write_cfg(tmp_path / 'cfg.py', n_iters=6, ckpt=6)
    wd = tmp_path / 'dist'
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={_free_port()}', str(ROOT / 'tools' / 'train.py'), str(cfg),
         '--work-dir', str(wd), '--launcher', 'pytorch'],
        cwd=str(tmp_path), env=_child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d0, d1 = load_dump(wd, 0), load_dump(wd, 1)
    for r, d in enumerate((d0, d1)):
        assert (d['rank'], d['world_size'], d['iter']) == (r, 2, 6)
        assert d['model_wrapper'] == 'MMDistributedDataParallel'
        assert d['optim']['projection']['hyper_step'] == 6
    assert len(d0['omegas']) == 4
    assert max(abs(w - 0.5) for w in d0['omegas'].values()) > 0.01  # omegas trained
    assert d0['omegas'] == d1['omegas']
    assert_bit_identical(d0['params'], d1['params'], 'params')
    assert_bit_identical(d0['optim'], d1['optim'], 'optim')  # omegas, moments, P, anchors


@pytest.fixture
def gloo_world_of_one():
    import torch.distributed as dist
    if dist.is_initialized():
        pytest.skip('a process group already exists in this process')
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('use_orig_params', [False, True])
def test_4_fsdp_flat_parameters_are_refused(gloo_world_of_one, use_orig_params):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    model = FSDP(_toy_model(), device_id=torch.device('cpu'), use_orig_params=use_orig_params)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=r'(?s)DiGraP.*(FSDP|shard)'):
        opt = DiGraP(torch.optim.AdamW(model.parameters(), lr=1e-2))
        model(torch.randn(4, 8)).sum().backward()
        opt.step()


def test_4_dtensor_parameters_are_supported(gloo_world_of_one):
    """FSDP2 (``fully_shard``) parameters are DTensors: supported since issue 14 (the sums are
    all-reduced over the shards, tests/test_fsdp.py); in a world of one, equal to plain."""
    import copy

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    model = _toy_model()
    plain = copy.deepcopy(model)
    fully_shard(model, mesh=init_device_mesh('cpu', (1,)))
    x = torch.randn(4, 8)
    opts = [DiGraP(torch.optim.AdamW(m.parameters(), lr=1e-2), omega_init=0.3)
            for m in (model, plain)]
    for _ in range(3):
        for m, opt in zip((model, plain), opts):
            m(x).sum().backward()
            opt.step()
            opt.zero_grad()
    for (n, p), q in zip(model.named_parameters(), plain.parameters()):
        assert torch.allclose(p.full_tensor(), q, atol=1e-6), n
    assert opts[0].omegas() == pytest.approx(opts[1].omegas(), abs=1e-6)


# ---------------------------------------------------------------------------------------- 5
def _mlp_and_opt(**kw):
    model = _toy_model()
    opt = DiGraP(torch.optim.AdamW(model.parameters(), lr=5e-2, weight_decay=0.0),
                 named_parameters=model.named_parameters(), **dict(dict(mu=0.1, omega_init=0.5),
                                                                   **kw))
    return model, opt


def _loss_step(model, opt, x, y):
    opt.zero_grad()
    model(x, y, mode='loss')['loss'].backward()
    opt.step()


def test_5_nonfinite_gradients_never_make_omega_nan():
    model, opt = _mlp_and_opt()
    data = _toy_batches(12, seed=21)
    scalars = ('omega', 'omega_exp_avg', 'omega_exp_avg_sq')
    for i, (x, y) in enumerate(data):
        opt.zero_grad()
        model(x, y, mode='loss')['loss'].backward()
        if i == 3:
            model.fc1.weight.grad[0, 0] = float('nan')
            model.fc2.weight.grad[0, 1] = float('inf')
        if i == 4:
            model.fc1.bias.grad.fill_(float('-inf'))
        if i == 5:
            for p in model.parameters():
                p.grad.fill_(float('nan'))
        opt.step()
        for p in model.parameters():
            st = opt.state[p]
            for k in scalars:
                assert torch.isfinite(st[k]), (i, opt.param_name(p), k)
            assert 0.0 <= st['omega'].item() <= 1.0
    assert opt.hyper_step == 12
    assert all(math.isfinite(w) for w in opt.omegas().values())


def test_5_param_frozen_mid_run_keeps_its_state():
    model, opt = _mlp_and_opt()
    data = _toy_batches(9, seed=22)
    for x, y in data[:3]:
        _loss_step(model, opt, x, y)
    frozen = model.fc1.weight
    keep_digrap = copy.deepcopy(opt.state[frozen])
    keep_base = copy.deepcopy(opt.base_optimizer.state[frozen])
    keep_value = frozen.detach().clone()
    keep_other = opt.state[model.fc2.weight]['omega'].clone()
    frozen.requires_grad_(False)
    frozen.grad = None
    for x, y in data[3:6]:
        _loss_step(model, opt, x, y)
        assert frozen.grad is None
    assert opt.hyper_step == 6
    assert_bit_identical(opt.state[frozen], keep_digrap, 'frozen digrap state')
    assert_bit_identical(opt.base_optimizer.state[frozen], keep_base, 'frozen base state')
    assert torch.equal(frozen, keep_value)
    assert not torch.equal(opt.state[model.fc2.weight]['omega'], keep_other)  # others go on
    # state keyed per parameter, not by position: a state_dict round trip while frozen keeps
    # every tensor's state with its own parameter
    model2, opt2 = _mlp_and_opt()
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(opt.state_dict())
    for p, q in zip(model.parameters(), model2.parameters()):
        assert_bit_identical(opt2.state[q], opt.state[p], opt.param_name(p))
    # unfreezing resumes from the kept state
    frozen.requires_grad_(True)
    _loss_step(model, opt, *data[6])
    assert opt.base_optimizer.state[frozen]['step'].item() == 4
    assert not torch.equal(frozen, keep_value)
    assert torch.equal(opt.state[frozen]['anchor'], keep_digrap['anchor'])


def test_5_plain_checkpoint_resumed_into_digrap_says_load_from(tmp_path, monkeypatch):
    plain = write_cfg(tmp_path / 'plain.py', digrap=False, n_iters=3)
    wd = tmp_path / 'w'
    train_in_process(monkeypatch, plain, wd, '--cfg-options', _uniq('plain'))
    ckpt = wd / 'iter_3.pth'
    assert ckpt.is_file()
    digrap_cfg = write_cfg(tmp_path / 'digrap.py', n_iters=6)
    with pytest.raises(ValueError, match=r'(?s)without digrap state.*load_from'):
        train_in_process(monkeypatch, digrap_cfg, tmp_path / 'w2', '--resume', str(ckpt),
                         '--cfg-options', _uniq('digrap_resume'))
    # the advice works: load_from starts a DiGraP run from those weights
    wd3 = tmp_path / 'w3'
    train_in_process(monkeypatch, digrap_cfg, wd3, '--cfg-options', f'load_from={ckpt}',
                     _uniq('digrap_load'))
    dump = load_dump(wd3)
    weights = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    anchors = {k: st['anchor'] for k, st in dump['optim']['projection']['state'].items()}
    assert torch.equal(anchors[0], weights['fc1.weight'])  # theta0 = the loaded weights


def test_5_digrap_checkpoint_resumed_into_plain_wrapper(tmp_path, monkeypatch):
    """The reverse direction: a DiGraP checkpoint resumed into a plain OptimWrapper run."""
    digrap_cfg = write_cfg(tmp_path / 'digrap.py', n_iters=3)
    wd = tmp_path / 'w'
    train_in_process(monkeypatch, digrap_cfg, wd, '--cfg-options', _uniq('dg'))
    plain = write_cfg(tmp_path / 'plain.py', digrap=False, n_iters=6)
    try:
        train_in_process(monkeypatch, plain, tmp_path / 'w2', '--resume',
                         str(wd / 'iter_3.pth'), '--cfg-options', _uniq('plain_resume'))
    except Exception as err:  # noqa: BLE001  (documented below)
        outcome = f'{type(err).__name__}: {err}'
    else:
        outcome = 'ok'
    # Either it is refused with a message that names the way out, or it works by dropping
    # the DiGraP state (base AdamW state restored). Anything else (a bare KeyError) is a bug.
    # the state_dict is flat (base keys + 'projection'): the plain run resumes the base state
    assert outcome == 'ok', outcome


def test_5_anchor_dtype_bfloat16_and_dtype_on_load():
    torch.manual_seed(0)
    model, opt = _mlp_and_opt(anchor_dtype='bfloat16')
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    for x, y in _toy_batches(6, seed=23):
        _loss_step(model, opt, x, y)
    for n, p in model.named_parameters():
        a = opt.state[p]['anchor']
        assert a.dtype == torch.bfloat16 and a.device == p.device
        assert torch.equal(a, theta0[n].bfloat16())
    omegas = opt.omegas()
    assert all(math.isfinite(w) for w in omegas.values())
    assert max(abs(w - 0.5) for w in omegas.values()) > 0.01
    sd = opt.state_dict()
    # bf16 anchors loaded into a DiGraP without anchor_dtype: stored in the parameter's dtype
    model2, opt2 = _mlp_and_opt()
    opt2.load_state_dict(copy.deepcopy(sd))
    for n, q in model2.named_parameters():
        assert opt2.state[q]['anchor'].dtype == torch.float32
        assert torch.equal(opt2.state[q]['anchor'], theta0[n].bfloat16().float())
    # and float32 anchors loaded with anchor_dtype=bfloat16 are cast down
    model3, opt3 = _mlp_and_opt(anchor_dtype=torch.bfloat16)
    opt3.load_state_dict(opt2.state_dict())
    assert all(opt3.state[q]['anchor'].dtype == torch.bfloat16 for q in model3.parameters())
    # both continue to train with finite omegas
    for x, y in _toy_batches(3, seed=24):
        _loss_step(model2, opt2, x, y)
        _loss_step(model3, opt3, x, y)
    assert all(math.isfinite(w) for w in list(opt2.omegas().values())
               + list(opt3.omegas().values()))


def test_5_loaded_state_is_not_aliased():
    """load_state_dict copies tensors (a later in-place update must not write into the dict
    that was loaded, e.g. a checkpoint kept in memory)."""
    model, opt = _mlp_and_opt()
    for x, y in _toy_batches(3, seed=25):
        _loss_step(model, opt, x, y)
    sd = opt.state_dict()
    model2, opt2 = _mlp_and_opt()
    opt2.load_state_dict(sd)
    for i, q in enumerate(model2.parameters()):
        for k in ('anchor', 'prev_proj', 'omega'):
            assert opt2.state[q][k].data_ptr() != sd['projection']['state'][i][k].data_ptr()


@pytest.mark.skipif(not CUDA, reason='needs a CUDA device for a cross-device load')
def test_5_anchors_follow_the_parameter_device_on_load():
    model, opt = _mlp_and_opt()
    model.cuda()
    opt = DiGraP(torch.optim.AdamW(model.parameters(), lr=5e-2), mu=0.1, omega_init=0.5)
    for x, y in _toy_batches(3, seed=26):
        _loss_step(model, opt, x.cuda(), y.cuda())
    sd = opt.state_dict()  # CUDA tensors
    model_cpu, opt_cpu = _mlp_and_opt()
    opt_cpu.load_state_dict(sd)
    for q in model_cpu.parameters():
        assert all(t.device.type == 'cpu' for t in opt_cpu.state[q].values()
                   if isinstance(t, torch.Tensor))
    _loss_step(model_cpu, opt_cpu, *_toy_batches(1, seed=27)[0])
    # and back: CPU state into a CUDA model
    model_gpu, opt_gpu = _mlp_and_opt()
    model_gpu.cuda()
    opt_gpu = DiGraP(torch.optim.AdamW(model_gpu.parameters(), lr=5e-2), mu=0.1)
    opt_gpu.load_state_dict(opt_cpu.state_dict())
    for q in model_gpu.parameters():
        assert opt_gpu.state[q]['anchor'].device == q.device
    x, y = _toy_batches(1, seed=28)[0]
    _loss_step(model_gpu, opt_gpu, x.cuda(), y.cuda())


# ---------------------------------------------------------------------------------------- 6
def test_6_crash_loses_at_most_work_since_last_checkpoint(straight_run, tmp_path, monkeypatch):
    cfg = write_cfg(tmp_path / 'cfg.py')
    wd = tmp_path / 'work'
    crash_at = 2 * CKPT_EVERY + 2  # iteration 8: mid-run, 2 iterations after a checkpoint
    proc = train_subprocess(cfg, wd, '--cfg-options', _uniq('crash'),
                            env=_child_env(**{_reliability_toy.CRASH_ENV: str(crash_at)}))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (wd / 'state_rank0.pt').exists()  # it really died (after_run never ran)
    saved = sorted(int(p.stem.split('_')[1]) for p in wd.glob('iter_*.pth'))
    assert saved == [CKPT_EVERY, 2 * CKPT_EVERY]
    last = (wd / 'last_checkpoint').read_text().strip()
    assert last.endswith(f'iter_{2 * CKPT_EVERY}.pth')
    lost = crash_at - 2 * CKPT_EVERY
    assert 0 < lost < CKPT_EVERY  # at most the work since the last checkpoint is lost
    ck = torch.load(last, map_location='cpu', weights_only=False)
    assert ck['meta']['iter'] == 2 * CKPT_EVERY
    assert ck['optimizer']['projection']['hyper_step'] == 2 * CKPT_EVERY

    # auto-resume (--resume without a path picks last_checkpoint) finishes the run ...
    monkeypatch.delenv(_reliability_toy.CRASH_ENV, raising=False)
    train_in_process(monkeypatch, cfg, wd, '--resume', '--cfg-options', _uniq('after_crash'))
    resumed = load_dump(wd)
    assert resumed['iter'] == N_ITERS
    # ... bit-identical to the uninterrupted run
    assert_same_run(resumed, straight_run)


# =====================================================================================
# issue 13 (defects 3, 4, 6): each test fails on the code before the fix
# =====================================================================================
import warnings  # noqa: E402

import torch.nn as nn  # noqa: E402

from mmdigrap.optim import FTP, L2SP, SPD, TPGM, FixedDiGraP  # noqa: E402


def _grads(seed, n, shape=(4, 3)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(n)]


def _two_params(seed=0):
    torch.manual_seed(seed)
    return (nn.Parameter(torch.randn(4, 3, dtype=torch.float64)),
            nn.Parameter(torch.randn(4, 3, dtype=torch.float64)))


def test_13_3_late_tensor_starts_fresh_in_digrap():
    """b first gets a gradient at step 3; 4 steps later its omega equals a fresh DiGraP's on
    the same gradients (before: 0.560444, global bias-correction counter; now 0.568859)."""
    a, b = _two_params()
    b0 = b.detach().clone()
    opt = DiGraP(torch.optim.Adam([a, b], lr=0.1), mu=0.05, omega_init=0.5)
    ga, gb = _grads(1, 6), _grads(2, 4)
    for t in range(6):
        a.grad, b.grad = ga[t], (gb[t - 2].clone() if t >= 2 else None)
        opt.step()
    fb = nn.Parameter(b0.clone())
    fresh = DiGraP(torch.optim.Adam([fb], lr=0.1), mu=0.05, omega_init=0.5)
    for t in range(4):
        fb.grad = gb[t].clone()
        fresh.step()
    assert torch.equal(b, fb)
    assert opt.state[b]['omega'].item() == fresh.state[fb]['omega'].item()
    assert opt.state[b]['omega'].item() == pytest.approx(0.568859, abs=1e-6)
    assert (opt.state[a]['step'], opt.state[b]['step'], opt.hyper_step) == (6, 4, 6)


def test_13_3_usual_case_per_tensor_count_is_the_global_counter():
    from _toy import batches, make_mlp
    m = make_mlp()
    opt = DiGraP(torch.optim.Adam(m.parameters(), lr=5e-2))
    for x, y in batches(7):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    assert {st['step'] for st in opt.state.values()} == {opt.hyper_step} == {7}


def test_13_3_tpgm_late_tensor_gets_its_radius_after_its_first_gradient():
    """Before: radius state for b at step 1 from n = 0 (1e-8), final radius 0.158507; now no
    state before b's first gradient and the final radius equals a fresh TPGM's, 0.392745."""
    a, b = _two_params()
    b0 = b.detach().clone()
    tgt = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def loss_fn(w):  # only b matters for the validation loss; b is absent until projected
        return sum(((v - tgt) ** 2).sum() for n, v in w.items() if n == 'b') + 0.0 * w['a'].sum()

    opt = TPGM(torch.optim.SGD([a, b], lr=0.1), proj_lr=0.05,
               named_parameters=[('a', a), ('b', b)])
    ga = _grads(3, 6)
    for t in range(6):
        a.grad, b.grad = ga[t], ((b.detach() - tgt) if t >= 2 else None)
        opt.step()
        opt.tpgm_update(loss_fn)
        if t < 2:
            assert 'tpgm_gamma' not in opt.state.get(b, {})
    fb = nn.Parameter(b0)
    fresh = TPGM(torch.optim.SGD([fb], lr=0.1), proj_lr=0.05, named_parameters=[('b', fb)])
    for _ in range(4):
        fb.grad = fb.detach() - tgt
        fresh.step()
        fresh.tpgm_update(lambda w: ((w['b'] - tgt) ** 2).sum())
    assert opt.state[b]['tpgm_gamma'].item() == fresh.state[fb]['tpgm_gamma'].item()
    assert opt.state[b]['tpgm_gamma'].item() == pytest.approx(0.392745, abs=1e-6)
    assert torch.equal(b, fb)


@pytest.mark.parametrize('wtype,key', [('DiGraPOptimWrapper', 'digrap'),
                                       ('FTPOptimWrapper', 'ftp'), ('TPGMOptimWrapper', 'tpgm'),
                                       ('L2SPOptimWrapper', 'l2sp'), ('SPDOptimWrapper', 'spd')])
def test_13_4_lr_zero_group_holds_no_method_state(wtype, key):
    """``lr_mult=0`` on fc1: fc1 bitwise unchanged, no method state, not logged; when its lr
    becomes > 0 (a schedule starting at 0) it gets its state then, anchored at theta0."""
    model = _toy_model()
    ow = build_optim_wrapper(model, {
        'type': wtype, 'constructor': 'RobustFTOptimWrapperConstructor',
        'optimizer': dict(type='AdamW', lr=5e-2, weight_decay=0.01),
        'paramwise_cfg': dict(custom_keys={'fc1': dict(lr_mult=0.0, decay_mult=0.0)}), key: {}})
    opt = ow.optimizer
    fc1 = [model.fc1.weight, model.fc1.bias]
    theta0 = [p.detach().clone() for p in fc1]
    opt.capture_anchors()
    for x, y in _toy_batches(3):
        ow.update_params(torch.nn.functional.mse_loss(model(x), y))
        if isinstance(opt, TPGM):
            opt.tpgm_update(lambda w: sum(v.sum() for v in w.values()) * 0.0 + 1.0)
    assert all(torch.equal(p, p0) for p, p0 in zip(fc1, theta0))
    assert all(p not in opt.state or not opt.state[p] for p in fc1)
    assert not any(p is q for p in fc1 for q in opt.last_stats['params'])
    assert opt.state[model.fc2.weight]  # the others have state
    # the schedule reaches fc1's group: from now on it is handled, anchored at theta0
    for g in opt.param_groups:
        if any(p is model.fc1.weight for p in g['params']):
            g['lr'] = 1e-2
    x, y = _toy_batches(1, seed=9)[0]
    ow.update_params(torch.nn.functional.mse_loss(model(x), y))
    if isinstance(opt, TPGM):
        opt.apply_projection()
    if opt.anchor_policy.stored:
        assert torch.equal(opt.state[model.fc1.weight]['anchor'], theta0[0])
    assert any(p is model.fc1.weight for p in opt.last_stats['params'])


def test_13_6_unknown_option_lists_the_valid_ones():
    model = _toy_model()
    with pytest.raises(TypeError, match=r"digrap\.muu\. Did you mean 'mu'\?.*omega_max"):
        build_optim_wrapper(model, dict(type='DiGraPOptimWrapper',
                                        optimizer=dict(type='AdamW', lr=1e-3),
                                        digrap=dict(muu=0.5)))


NUMERIC = [(DiGraP, o) for o in ('mu', 'eps', 'omega_max', 'omega_init')] + [
    (FTP, o) for o in ('k', 'mu', 'eps')] + [(TPGM, o) for o in ('proj_lr', 'eps')] + [
    (L2SP, 'weight'), (SPD, 'weight'), (FixedDiGraP, 'omega')]


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
@pytest.mark.parametrize('cls,option', NUMERIC)
def test_13_6_non_finite_options_are_refused(cls, option, bad):
    model = _toy_model()
    with pytest.raises(ValueError, match=f'{option} must be a finite number'):
        cls(torch.optim.AdamW(model.parameters()), **{option: bad})


@pytest.mark.parametrize('cls', [DiGraP, FTP, TPGM])
def test_13_6_non_finite_betas_are_refused(cls):
    with pytest.raises(ValueError, match='betas must be two numbers in'):
        cls(torch.optim.AdamW(_toy_model().parameters()), betas=(float('nan'), 0.9))
    with pytest.raises(ValueError, match=r'param group 0\).*mu must be a finite'):
        DiGraP(torch.optim.AdamW([{'params': _toy_model().parameters(), 'mu': float('inf')}]))


def test_13_6_omega_max_message_says_zero_is_allowed():
    with pytest.raises(ValueError, match='omega_max must be >= 0, got -1'):
        DiGraP(torch.optim.AdamW(_toy_model().parameters()), omega_max=-1)


def test_13_6_shared_module_error_names_bypass_duplicate():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Sequential(self.a)  # the same module under two parents

    cfg = dict(type='DiGraPOptimWrapper', constructor='RobustFTOptimWrapperConstructor',
               optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
               paramwise_cfg=dict(norm_decay_mult=0.0))
    with pytest.raises(ValueError, match=r'bypass_duplicate=True'):
        build_optim_wrapper(Shared(), cfg)
    cfg['paramwise_cfg']['bypass_duplicate'] = True
    assert build_optim_wrapper(Shared(), cfg).optimizer.method == 'digrap'


def test_13_6_overflowing_distance_warns_once_naming_the_tensor():
    big = nn.Parameter(torch.zeros(4, 3, dtype=torch.bfloat16))
    small = nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    opt = DiGraP(torch.optim.SGD([big, small], lr=0.0 + 1e-3), omega_init=1.0,
                 named_parameters=[('head.big', big), ('head.small', small)])
    big.grad, small.grad = torch.ones_like(big), torch.ones_like(small)
    opt.step()
    with torch.no_grad():
        big.fill_(1e30)  # ||theta - theta0||^2 ~ 1e61: inf in float32
        small.fill_(1.0)
    big.grad, small.grad = -torch.ones_like(big), -torch.ones_like(small)
    opt.step()
    with pytest.warns(UserWarning, match="'head.big' is not finite in float32"):
        assert opt.warn_nonfinite_distances() == ['head.big']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert opt.warn_nonfinite_distances() == []  # once per tensor
    assert torch.equal(big.grad, -torch.ones_like(big))  # projection skipped, grad untouched


def test_13_6_hook_reports_where_the_anchors_came_from(tmp_path):
    """A fresh TPGM run: TPGMHook snapshots the anchors first; the report says so (before:
    '0 snapshotted now, 4 restored')."""
    from mmengine.runner import Runner
    val = dict(dataset=dict(type='MMDiGraPToyDataset', num=16, seed=5),
               sampler=dict(type='DefaultSampler', shuffle=False),
               collate_fn=dict(type='default_collate'), batch_size=8, num_workers=0)
    cfg = dict(
        model=dict(type='MMDiGraPToyModel'), work_dir=str(tmp_path), experiment_name='rep',
        train_dataloader=dict(dataset=dict(type='MMDiGraPToyDataset', num=16),
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate'), batch_size=8,
                              num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(type='TPGMOptimWrapper',
                           constructor='RobustFTOptimWrapperConstructor',
                           optimizer=dict(type='SGD', lr=1e-2), tpgm=dict()),
        custom_hooks=[dict(type='RobustFTHook', allow_random_init=True),
                      dict(type='TPGMHook', dataloader=val)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100)),
        default_scope='mmengine', log_level='INFO')
    Runner.from_cfg(cfg).train()
    log = open(next(Path(tmp_path).glob('*/*.log'))).read()
    assert '0 restored from the checkpoint, 4 snapshotted from the weights (0 by this hook' in log
