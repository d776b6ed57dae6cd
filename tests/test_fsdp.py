"""FSDP2 (``fully_shard``, DTensor parameters) on CPU with gloo, 2 processes (issue 14).

One ``torch.multiprocessing`` spawn runs every scenario (start-up dominates the cost):

* N steps of each method under FSDP2, each rank on half of the global batch, equal N steps in
  one process on the whole batch (parameters and omegas / radii to 1e-6);
* a sharded run saved with ``torch.distributed.checkpoint`` (``save_sharded_checkpoint``) and
  resumed gives bit-identical parameters and state; its consolidated (full) checkpoint loads
  into a single-process run, which continues like the sharded one;
* each rank stores half of the single-process anchor memory;
* mmengine's FlexibleRunner with ``FSDP2Strategy`` (the strategy of the FSDP configs) trains
  two iterations, writes a sharded checkpoint and resumes from it.
"""
import copy
import os
import os.path as osp
import socket

import pytest
import torch
import torch.nn as nn

import mmdigrap  # noqa: F401
from mmdigrap import optim as mo

N_STEPS = 4
WORLD = 2


def _model(seed=0, uneven=False):
    torch.manual_seed(seed)  # every shape even: rank 0 and 1 hold the same number of rows
    if uneven:  # 5 and 3 rows: shards of 3 + 2 and 2 + 1 rows, biases of 3 + 2 and 2 + 1
        return nn.Sequential(nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3), nn.Linear(3, 2))
    return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4), nn.LayerNorm(4),
                         nn.Linear(4, 2))


def _data():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 8, generator=g), torch.randn(8, 2, generator=g))
            for _ in range(N_STEPS)]


def _make(method, model):
    base = torch.optim.AdamW(model.parameters(), lr=5e-2, weight_decay=0.0)
    named = model.named_parameters()
    if method == 'digrap':
        return mo.DiGraP(base, mu=0.5, omega_init=0.2, named_parameters=named)
    if method == 'digrap_lean_tensor':
        return mo.DiGraP(base, mu=0.5, omega_init=0.2, hypergrad_norm='tensor',
                         store_projection=False, named_parameters=named)
    if method == 'fixed':
        return mo.FixedDiGraP(base, omega=0.7, named_parameters=named)
    if method == 'l2sp':
        return mo.L2SP(base, weight=0.1, named_parameters=named)
    if method == 'ftp':
        return mo.FTP(base, mu=1e-2, named_parameters=named)
    if method == 'spd':
        return mo.SPD(base, weight=0.5, named_parameters=named)
    if method == 'spd_mars':
        return mo.SPD(base, weight=0.5, norm='mars', named_parameters=named)
    if method == 'tpgm':
        return mo.TPGM(base, max_iters=0, named_parameters=named)
    raise KeyError(method)


METHODS = ['digrap', 'digrap_lean_tensor', 'fixed', 'l2sp', 'ftp', 'spd', 'spd_mars', 'tpgm']
UNEVEN = ['digrap', 'ftp', 'spd_mars', 'tpgm']
SCALARS = {'digrap': 'omega', 'digrap_lean_tensor': 'omega', 'fixed': 'omega',
           'ftp': 'ftp_gamma', 'tpgm': 'tpgm_gamma'}


def _train(model, opt, method, batches, rank=0, world=1):
    for x, y in batches:
        n = len(x) // world
        x, y = x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if method == 'tpgm':
            opt.apply_projection()
        opt.zero_grad()


def _full_params(model):
    from mmdigrap.core.distributed import is_dtensor
    return {n: (p.full_tensor() if is_dtensor(p) else p).detach().clone()
            for n, p in model.named_parameters()}


def _anchor_bytes(opt):
    return sum(st['anchor'].numel() * st['anchor'].element_size()
               for st in opt.state.values() if 'anchor' in st)


def _sharded(seed=0, uneven=False):
    from mmdigrap.engine.fsdp_strategy import apply_fully_shard
    model = _model(seed, uneven)
    return apply_fully_shard(model, wrap_modules=[r'0', r'2'])


def _worker(rank, port, out):
    import torch.distributed as dist

    from mmdigrap.engine.fsdp_strategy import (
        consolidate_sharded_checkpoint,
        load_sharded_checkpoint,
        save_sharded_checkpoint,
    )
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    res = {}
    batches = _data()
    # 1. every method: N sharded steps
    for method in METHODS + [m + '_uneven' for m in UNEVEN]:
        uneven = method.endswith('_uneven')
        method = method[:-len('_uneven')] if uneven else method
        model = _sharded(uneven=uneven)
        opt = _make(method, model)
        _train(model, opt, method, batches, rank, WORLD)
        key = SCALARS.get(method)
        res[method + ('_uneven' if uneven else '')] = dict(
            params=_full_params(model), scalars=opt.scalar_state(key) if key else {},
            sq_dist=opt.last_stats['sq_dist'].clone(), anchor_bytes=_anchor_bytes(opt))
    # 2. resume: 2 steps, sharded checkpoint, 2 steps == fresh run + load + 2 steps
    for method in ('digrap', 'ftp'):
        ckpt = osp.join(out, f'ckpt_{method}')
        model = _sharded()
        opt = _make(method, model)
        _train(model, opt, method, batches[:2], rank, WORLD)
        save_sharded_checkpoint(dict(state_dict=model.state_dict(), optimizer=opt.state_dict()),
                                ckpt)
        _train(model, opt, method, batches[2:], rank, WORLD)
        straight = (_full_params(model), copy.deepcopy(opt.state_dict()))
        model2 = _sharded(seed=123)  # other weights: everything must come from the checkpoint
        opt2 = _make(method, model2)
        loaded = load_sharded_checkpoint(ckpt, [next(model2.parameters()).device_mesh])
        model2.load_state_dict(loaded['state_dict'])
        opt2.load_state_dict(loaded['optimizer'])
        _train(model2, opt2, method, batches[2:], rank, WORLD)
        resumed = (_full_params(model2), opt2.state_dict())
        same = all(torch.equal(straight[0][k], resumed[0][k]) for k in straight[0])
        for i, st in straight[1]['projection']['state'].items():
            for k, v in st.items():
                w = resumed[1]['projection']['state'][i][k]
                if isinstance(v, torch.Tensor):
                    same = same and torch.equal(v.full_tensor() if hasattr(v, 'full_tensor')
                                                else v,
                                                w.full_tensor() if hasattr(w, 'full_tensor')
                                                else w)
        res[f'resume_{method}'] = dict(exact=same, params=straight[0])
        if rank == 0:
            consolidate_sharded_checkpoint(ckpt, osp.join(out, f'full_{method}.pth'))
    dist.barrier()
    # 3. FlexibleRunner + FSDP2Strategy: 2 iterations, sharded checkpoint, resume
    res['runner'] = _runner(rank, out)
    torch.save(res, osp.join(out, f'rank{rank}.pt'))
    dist.destroy_process_group()


def _runner_cfg(work_dir, iters, resume=False):
    from mmengine.config import Config
    fsdp = Config.fromfile(osp.join(osp.dirname(__file__), '..', 'configs', 'clip_imagenet',
                                    'vit-b16-clip_digrap_fsdp-8xb64-10e_in1k.py'))
    strategy = dict(fsdp.strategy, wrap_modules=['fc1'])  # the toy model's first layer
    return dict(
        runner_type=fsdp.runner_type, strategy=strategy, launcher='pytorch',
        model=dict(type='MMDiGraPToyModel'), work_dir=work_dir,
        train_dataloader=dict(dataset=dict(type='MMDiGraPToyDataset', num=32),
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate'), batch_size=4,
                              num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=iters),
        optim_wrapper=dict(fsdp.optim_wrapper, optimizer=dict(type='AdamW', lr=5e-2,
                                                              weight_decay=0.0)),
        custom_hooks=[dict(type='RobustFTHook', log_interval=1, allow_random_init=True)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0), resume=resume, default_scope='mmengine', log_level='WARNING')


def _runner(rank, out):
    from mmengine.config import Config
    from mmengine.registry import RUNNERS

    from mmdigrap.core.distributed import is_dtensor

    import _toy  # noqa: F401  (registers the toy model and dataset)

    work = osp.join(out, 'runner')
    runner = RUNNERS.build(Config(_runner_cfg(work, 2)))
    runner.train()
    omegas = runner.optim_wrapper.omegas()
    first = dict(iter=runner.iter, dtensor=all(is_dtensor(p) for p in runner.model.parameters()),
                 omegas=omegas, params=_full_params(runner.model),
                 ckpt_is_dir=osp.isdir(osp.join(work, 'iter_2.pth')))
    runner2 = RUNNERS.build(Config(_runner_cfg(work, 4, resume=True)))
    runner2.train()
    first['resumed_iter'] = runner2.iter
    first['resumed_omegas'] = runner2.optim_wrapper.omegas()
    return first


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def fsdp_results(tmp_path_factory):
    import torch.multiprocessing as mp
    out = str(tmp_path_factory.mktemp('fsdp'))
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    return out, [torch.load(osp.join(out, f'rank{r}.pt'), weights_only=False)
                 for r in range(WORLD)]


def _single(method, batches, uneven=False):
    model = _model(uneven=uneven)
    opt = _make(method, model)
    _train(model, opt, method, batches)
    key = SCALARS.get(method)
    return model, opt, (opt.scalar_state(key) if key else {})


@pytest.mark.parametrize('method', METHODS + [m + '_uneven' for m in UNEVEN])
def test_fsdp_steps_equal_single_process(fsdp_results, method):
    _, ranks = fsdp_results
    uneven = method.endswith('_uneven')
    model, opt, scalars = _single(method.replace('_uneven', ''), _data(), uneven)
    for res in ranks:  # every rank holds the same full parameters and omegas
        got = res[method]
        # ||theta - theta0||^2 of every tensor (L2-SP's only reduction) over the whole tensor
        assert torch.allclose(got['sq_dist'], opt.last_stats['sq_dist'], rtol=1e-5, atol=1e-9)
        for name, p in model.named_parameters():
            diff = (got['params'][name] - p.detach()).abs().max().item()
            assert diff <= 1e-6, (method, name, diff)
        assert set(got['scalars']) == set(scalars)
        for name, w in scalars.items():
            assert abs(got['scalars'][name] - w) <= 1e-6, (method, name)
    if method == 'digrap':  # the run moved, and omega is not trivially its initial value
        assert any(abs(w - 0.2) > 1e-3 for w in scalars.values())


def test_fsdp_anchor_memory_is_halved(fsdp_results):
    _, ranks = fsdp_results
    _, opt, _ = _single('digrap', _data()[:1])
    single = _anchor_bytes(opt)
    assert single == sum(p.numel() * 4 for p in _model().parameters())
    assert [r['digrap']['anchor_bytes'] for r in ranks] == [single // 2] * WORLD


@pytest.mark.parametrize('method', ['digrap', 'ftp'])
def test_fsdp_resume_is_exact_and_full_checkpoint_loads_in_one_process(fsdp_results, method):
    out, ranks = fsdp_results
    assert all(r[f'resume_{method}']['exact'] for r in ranks)
    ckpt = torch.load(osp.join(out, f'full_{method}.pth'), weights_only=False)
    batches = _data()
    model = _model(seed=123)
    opt = _make(method, model)
    model.load_state_dict(ckpt['state_dict'])
    opt.load_state_dict(ckpt['optimizer'])
    _train(model, opt, method, batches[2:])
    ref, _, _ = _single(method, batches)  # and equal to 4 single-process steps
    for name, p in model.named_parameters():
        assert (ranks[0][f'resume_{method}']['params'][name] - p.detach()).abs().max() <= 1e-6
        assert (ref.state_dict()[name] - p.detach()).abs().max() <= 1e-6


def test_flexible_runner_fsdp2_trains_and_resumes(fsdp_results):
    _, ranks = fsdp_results
    for r in ranks:
        run = r['runner']
        assert run['iter'] == 2 and run['dtensor'] and run['ckpt_is_dir']
        assert run['resumed_iter'] == 4
        assert run['omegas'] == ranks[0]['runner']['omegas']  # identical on every rank
        assert set(run['omegas']) == {'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'}
    a, b = ranks[0]['runner']['params'], ranks[1]['runner']['params']
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flat_parameters_and_zero3_keep_a_clear_refusal():
    p = nn.Parameter(torch.zeros(3))
    p._fsdp_flattened = True
    with pytest.raises(NotImplementedError, match='FSDP2'):
        mo.DiGraP(torch.optim.SGD([p], lr=0.1))
    q = nn.Parameter(torch.zeros(3))
    q.ds_tensor = torch.zeros(1)
    with pytest.raises(NotImplementedError, match='ZeRO-3'):
        mo.L2SP(torch.optim.SGD([q], lr=0.1))
