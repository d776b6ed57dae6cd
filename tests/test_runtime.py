"""Runtime fixes (mmdigrap.engine.runtime) and the tools/ entry points, on the CPU.

(a) torch>=2.6 ``weights_only``: resume of an mmengine Runner checkpoint works after
    ``import mmdigrap`` under ``weights_only=True`` (mmengine's classes allow-listed; the proxy in
    ``mmengine.runner.checkpoint`` is scoped, torch.load itself is unchanged), and 1 epoch +
    resume + 1 epoch is bit-identical to 2 straight epochs (more in test_checkpoint_safety.py).
    Also tools/train.py with --cfg-options and --resume, and the --amp wrapper mapping.
(b) a 2-process CPU run through tools/dist_train.sh (torchrun, gloo): completes, and both ranks
    end with identical parameters, equal to the saved checkpoint.
"""
import argparse
import importlib.util
import inspect
import json
import os
import shutil
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

import mmengine.runner.checkpoint as mm_ckpt  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdigrap  # noqa: E402,F401  (installs the checkpoint fix)
from mmdigrap.engine.runtime import (  # noqa: E402
    disable_trusted_checkpoint_loading,
    enable_trusted_checkpoint_loading,
    install_checkpoint_safety,
    setup_cpu_distributed,
    trusted_checkpoint_loading_enabled,
)

import _toy  # noqa: E402,F401  (registers MMDiGraPToy*)

TORCH_GE_26 = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 6)

TOY_CFG = """
custom_imports = dict(imports=['_toy'], allow_failed_imports=False)
model = dict(type='MMDiGraPToyModel')
train_dataloader = dict(batch_size=8, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='MMDiGraPToyDataset', num=64))
val_dataloader = dict(batch_size=16, num_workers=0,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='MMDiGraPToyDataset', num=32, seed=1))
test_dataloader = val_dataloader
val_evaluator = dict(type='MMDiGraPToyMetric')
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1),
                     logger=dict(type='LoggerHook', interval=4))
custom_hooks = [dict(type='MMDiGraPToyDumpParamsHook')]
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
"""


class _CountIters(Hook):
    def __init__(self):
        self.n = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.n += 1


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _toy_runner(work_dir, max_epochs, name, resume=False, load_from=None, hooks=()):
    """The tiny Runner: toy MLP, 64 in-memory samples, batch 8, OptimWrapper+AdamW."""
    return Runner(
        model=dict(type='MMDiGraPToyModel'),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(batch_size=8, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'),
                              dataset=dict(type='MMDiGraPToyDataset', num=64)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=4)),
        custom_hooks=list(hooks),
        randomness=dict(seed=0),
        resume=resume, load_from=load_from,
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        default_scope='mmengine')


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    """2 straight epochs; returns (final params, path of epoch_1.pth)."""
    wd = tmp_path_factory.mktemp('straight')
    runner = _toy_runner(wd, 2, f'straight_{os.getpid()}_{time.time_ns()}')
    runner.train()
    return _params(runner.model), wd / 'epoch_1.pth'


@pytest.fixture(scope='module')
def toy_cfg(tmp_path_factory):
    p = tmp_path_factory.mktemp('cfg') / 'toy_cfg.py'
    p.write_text(TOY_CFG)
    return p


# ------------------------------------------------------------------------------------ (a)
def test_proxy_is_scoped_and_safe_by_default():
    # import mmdigrap keeps weights_only=True: the opt-in is off unless asked for
    assert not trusted_checkpoint_loading_enabled()
    proxy = mm_ckpt.torch
    assert proxy is not torch and proxy.load is not torch.load
    assert proxy.Tensor is torch.Tensor and proxy.distributed is torch.distributed
    # torch.load itself is untouched: same function, same default
    assert torch.load is torch.serialization.load
    assert torch.load.__module__ == 'torch.serialization'
    assert inspect.signature(torch.load).parameters['weights_only'].default is None
    # idempotent
    assert install_checkpoint_safety() is False
    assert mm_ckpt.torch is proxy
    # the explicit opt-in round trip
    assert enable_trusted_checkpoint_loading() is True
    try:
        assert trusted_checkpoint_loading_enabled() and mm_ckpt.torch is proxy
        assert enable_trusted_checkpoint_loading() is False
    finally:
        assert disable_trusted_checkpoint_loading() is True
    assert not trusted_checkpoint_loading_enabled()
    assert disable_trusted_checkpoint_loading() is False


def test_resume_under_weights_only_is_bit_identical(straight, tmp_path):
    final_straight, ckpt = straight
    assert ckpt.is_file()

    if TORCH_GE_26:
        # mmengine's own classes are allow-listed: even a plain weights_only load works ...
        assert 'message_hub' in torch.load(ckpt, map_location='cpu', weights_only=True)
    # ... and mmengine's loader (weights_only=True through the proxy)
    assert 'message_hub' in mm_ckpt._load_checkpoint(str(ckpt), map_location='cpu')

    counter = _CountIters()
    runner = _toy_runner(tmp_path, 2, f'resumed_{os.getpid()}_{time.time_ns()}',
                         resume=True, load_from=str(ckpt), hooks=[counter])
    runner.train()
    assert counter.n == 8  # only epoch 2 was trained (64 / 8 iters)
    assert runner.iter == 16 and runner.epoch == 2
    _assert_same(_params(runner.model), final_straight)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f'_mmdigrap_tools_{name}',
                                                  ROOT / 'tools' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_tool_cfg_options_and_resume(straight, toy_cfg, tmp_path, monkeypatch):
    train = _load_tool('train')
    monkeypatch.setenv('LOCAL_RANK', '0')
    wd = tmp_path / 'w'

    def run(*extra):
        monkeypatch.setattr(sys, 'argv', ['train.py', str(toy_cfg), '--work-dir', str(wd),
                                          *extra])
        train.main()
        return json.loads((wd / 'info_rank0.json').read_text())

    info = run('--cfg-options', 'train_cfg.max_epochs=1',
               f'experiment_name=t1_{os.getpid()}_{time.time_ns()}')
    assert info['epoch'] == 1 and info['iter'] == 8
    assert (wd / 'epoch_1.pth').is_file() and not (wd / 'epoch_2.pth').exists()

    info = run('--resume', '--cfg-options', f'experiment_name=t2_{os.getpid()}_{time.time_ns()}')
    assert info['epoch'] == 2 and info['iter'] == 16
    _assert_same(torch.load(wd / 'params_rank0.pt'), straight[0])


def _args(**kw):
    d = dict(no_validate=False, launcher='none', work_dir=None, config='x/my_cfg.py',
             amp=False, resume=None, auto_scale_lr=False, no_pin_memory=False,
             no_persistent_workers=False, cfg_options=None)
    d.update(kw)
    return argparse.Namespace(**d)


def test_train_tool_merge_args(toy_cfg):
    train = _load_tool('train')
    amp = train.amp_optim_wrapper_type
    assert amp('OptimWrapper') == 'AmpOptimWrapper'
    assert amp('AmpOptimWrapper') == 'AmpOptimWrapper'
    assert amp('mmengine.OptimWrapper') == 'mmengine.AmpOptimWrapper'
    assert amp('MMDiGraPToyOptimWrapper') == 'MMDiGraPToyAmpOptimWrapper'
    assert amp(_toy.ToyOptimWrapper) is _toy.ToyAmpOptimWrapper
    with pytest.warns(UserWarning, match='no AMP flavour'):
        assert amp('MMDiGraPNoSuchOptimWrapper') == 'MMDiGraPNoSuchOptimWrapper'
    from mmengine.registry import OPTIM_WRAPPERS
    if 'DiGraPAmpOptimWrapper' in train._registered_optim_wrappers():
        assert amp('DiGraPOptimWrapper') == 'DiGraPAmpOptimWrapper'
    assert OPTIM_WRAPPERS.get('MMDiGraPToyAmpOptimWrapper') is _toy.ToyAmpOptimWrapper

    cfg = Config.fromfile(str(toy_cfg))
    cfg.optim_wrapper.type = 'MMDiGraPToyOptimWrapper'
    cfg = train.merge_args(cfg, _args(amp=True, resume='auto'))
    assert cfg.optim_wrapper.type == 'MMDiGraPToyAmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    if not torch.cuda.is_available():
        assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.work_dir == os.path.join('./work_dirs', 'my_cfg')
    assert cfg.resume is True and cfg.load_from is None
    # num_workers=0: the persistent_workers default must not make torch's DataLoader raise
    assert cfg.train_dataloader.persistent_workers is False
    # pin_memory=True only where an accelerator is (on the CPU torch warns and ignores it)
    from mmdigrap.engine.launch import _has_accelerator
    assert cfg.train_dataloader.pin_memory is _has_accelerator()

    # --amp sees the wrapper type set by --cfg-options
    cfg = train.merge_args(Config.fromfile(str(toy_cfg)), _args(
        amp=True, cfg_options={'optim_wrapper.type': 'MMDiGraPToyOptimWrapper'}))
    assert cfg.optim_wrapper.type == 'MMDiGraPToyAmpOptimWrapper'

    cfg = train.merge_args(Config.fromfile(str(toy_cfg)),
                           _args(no_validate=True, resume='a.pth', work_dir='wd',
                                 cfg_options={'train_dataloader.num_workers': 2}))
    assert cfg.val_cfg is None and cfg.val_dataloader is None and cfg.val_evaluator is None
    assert cfg.resume is True and cfg.load_from == 'a.pth' and cfg.work_dir == 'wd'
    assert cfg.train_dataloader.num_workers == 2 and cfg.train_dataloader.persistent_workers


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU (no CUDA) code path')
def test_setup_cpu_distributed_in_process(monkeypatch):
    import torch.distributed as dist
    import torch.multiprocessing as mp
    assert not dist.is_initialized()
    start_method = mp.get_start_method(allow_none=True)  # setup_* may set 'spawn' (as mmengine)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60))))
    assert setup_cpu_distributed(cfg, 'none') is False
    assert 'model_wrapper_cfg' not in cfg and cfg.env_cfg.dist_cfg.backend == 'nccl'

    # slurm: RANK / WORLD_SIZE / LOCAL_RANK derived from SLURM_* (MASTER_ADDR given)
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('SLURM_PROCID', '0')
    monkeypatch.setenv('SLURM_NTASKS', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'localhost')
    monkeypatch.setenv('SLURM_LOCALID', '0')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    try:
        assert setup_cpu_distributed(cfg, 'slurm') is True
        assert dist.is_initialized() and dist.get_backend() == 'gloo'
        assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == \
            ('0', '1', '0')
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                             device_ids=None, broadcast_buffers=False)
        # a config's own DDP wrapper cfg is kept, only device_ids=None is added
        cfg2 = Config(dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                                  find_unused_parameters=True)))
        assert setup_cpu_distributed(cfg2, 'pytorch') is True  # group exists: no re-init
        assert cfg2.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                              find_unused_parameters=True, device_ids=None)
        assert cfg2.env_cfg.dist_cfg.backend == 'gloo'
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        mp.set_start_method(start_method, force=True)


# ------------------------------------------------------------------------------------ (b)
@pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')
def test_dist_train_two_cpu_processes(toy_cfg, tmp_path):
    wd = tmp_path / 'dist'
    env = dict(os.environ)
    env.update(PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='',  # force the CPU path even on a GPU host
               PYTHONPATH=os.pathsep.join([str(HERE), env.get('PYTHONPATH', '')]))
    env.pop('LOCAL_RANK', None)
    proc = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(toy_cfg), '2',
         '--work-dir', str(wd), '--cfg-options', 'train_cfg.val_interval=2'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    infos = [json.loads((wd / f'info_rank{r}.json').read_text()) for r in (0, 1)]
    for r, info in enumerate(infos):
        assert info == dict(rank=r, world_size=2, wrapper='MMDistributedDataParallel',
                            backend='gloo', iter=8, epoch=2)  # 64 samples / (2 x 8) x 2
    p0, p1 = (torch.load(wd / f'params_rank{r}.pt') for r in (0, 1))
    _assert_same(p0, p1)
    state = torch.load(wd / 'epoch_2.pth', map_location='cpu', weights_only=False)['state_dict']
    _assert_same(p0, {k: state[k] for k in p0})
