"""Exact resume (ExactResumeHook): issue 13.5 and issue 15.2 (CPU).

1. Resume in the middle of a gradient-accumulation window: ``accumulative_counts=3``, a
   checkpoint after iteration 4 (the window 4-6 is open), the run stopped there and resumed to
   iteration 9 == 9 uninterrupted iterations, bit for bit (weights, omegas, optimizer state).
   Without the saved partial gradient it is not (the control).
2. The random states survive a ``weights_only`` round trip and restore the same draws.
3. With random augmentation on (``RandomFlip``): the embedded DiGraP config, shrunk by
   ``--cfg-options`` (56 px, a 2-layer ViT, 20 synthetic Fashion-MNIST images, 2 epochs of 4
   iterations), stopped after epoch 1 and resumed with ``tools/train.py --resume`` in a NEW
   process == an uninterrupted run (weights and omegas bit-equal); without the random states
   it is not (the control).
4. Every shipped config has the hook (``default_hooks.exact_resume``).
"""
import glob
import os
import os.path as osp
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdigrap  # noqa: E402,F401
from mmdigrap.engine.checkpoint_hooks import ExactResumeHook, get_rng_state, set_rng_state  # noqa: E402

import _toy  # noqa: E402,F401  (MMDiGraPToy* model / dataset)


class _Stop(Exception):
    pass


class _StopAfter(Hook):
    """Stops the run (an exception) after iteration ``n``, once every other hook has run."""

    priority = 'LOWEST'

    def __init__(self, n):
        self.n = n

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.n:
            raise _Stop(self.n)


def _acc_runner(work_dir, resume_from=None, hooks=(), grads=True):
    return Runner(
        model=dict(type='MMDiGraPToyModel'), work_dir=str(work_dir),
        experiment_name=f'acc_{osp.basename(str(work_dir))}_{os.getpid()}_{time.time_ns()}',
        train_dataloader=dict(batch_size=8, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'),
                              dataset=dict(type='MMDiGraPToyDataset', num=64)),
        train_cfg=dict(by_epoch=False, max_iters=9),
        optim_wrapper=dict(type='DiGraPOptimWrapper', accumulative_counts=3,
                           optimizer=dict(type='AdamW', lr=5e-2, weight_decay=0.0),
                           digrap=dict(mu=0.1, omega_init=0.5), clip_grad=dict(max_norm=10.0)),
        custom_hooks=[dict(type='DiGraPHook', allow_random_init=True), *hooks],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4),
                           exact_resume=dict(type='ExactResumeHook', grads=grads),
                           logger=dict(type='LoggerHook', interval=100)),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0), default_scope='mmengine', log_level='WARNING',
        resume=resume_from is not None, load_from=resume_from)


def _final(runner):
    params = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    return params, runner.optim_wrapper.omegas(), runner.optim_wrapper.optimizer.hyper_step


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


# ---------------------------------------------------------------------------------------- 1
def test_resume_inside_an_accumulation_window(tmp_path):
    straight = _acc_runner(tmp_path / 'straight')
    straight.train()
    ref, ref_omegas, ref_steps = _final(straight)
    assert ref_steps == 3  # iterations 3, 6, 9 step the optimizer

    half = _acc_runner(tmp_path / 'half', hooks=[_StopAfter(4)])
    with pytest.raises(_Stop):
        half.train()
    ckpt = tmp_path / 'half' / 'iter_4.pth'
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)  # loads safely
    state = saved['exact_resume']
    assert state['iter'] == 3 and state['world_size'] == 1 and not state['epoch_end']
    grads = state['grads'][0]
    assert sorted(grads) == ['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']
    assert all(g.abs().sum() > 0 for g in grads.values())  # iteration 4's gradient (1/3)

    resumed = _acc_runner(tmp_path / 'half', resume_from=str(ckpt))
    resumed.train()
    got, omegas, steps = _final(resumed)
    assert resumed.iter == 9 and steps == 3
    assert omegas == ref_omegas
    for k in ref:
        assert torch.equal(got[k], ref[k]), (k, (got[k] - ref[k]).abs().max())

    # control: the same resume without the saved partial gradient loses iteration 4
    lossy = _acc_runner(tmp_path / 'half', resume_from=str(ckpt), grads=False)
    lossy.train()
    assert _max_diff(_final(lossy)[0], ref) > 1e-3


# ---------------------------------------------------------------------------------------- 2
def test_rng_state_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.randn()  # a cached gaussian in numpy's state
    state = get_rng_state()
    torch.save(state, tmp_path / 'rng.pth')
    first = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    done = set_rng_state(torch.load(tmp_path / 'rng.pth', weights_only=True))
    assert done[:3] == ['python', 'numpy', 'torch']
    again = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    assert first[:3] == again[:3] and torch.equal(first[3], again[3])


def test_hook_is_on_for_every_shipped_config():
    from mmengine.config import Config
    paths = [p for p in glob.glob(str(ROOT / 'configs' / '**' / '*.py'), recursive=True)
             if '_base_' not in Path(p).parts]
    assert len(paths) >= 40
    missing = []
    for p in paths:
        cfg = Config.fromfile(p, import_custom_modules=False)
        hook = cfg.get('default_hooks', {}).get('exact_resume')
        if not hook or hook.get('type') != 'ExactResumeHook':
            missing.append(osp.relpath(p, ROOT))
    assert not missing, missing
    assert ExactResumeHook.priority == 'LOW'  # before CheckpointHook (VERY_LOW) in after_train_*


# ---------------------------------------------------------------------------------------- 3
CONFIG = 'configs/embedded/dinov2-s_fmnist_digrap.py'


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    """Synthetic Fashion-MNIST idx files and a 'pre-trained' 2-layer ViT backbone file."""
    from mmpretrain.models import VisionTransformer

    from test_datasets import make_images, write_idx
    base = tmp_path_factory.mktemp('embedded')
    root = base / 'fmnist'
    root.mkdir()
    for split, (n, seed) in dict(train=(60, 1), t10k=(20, 2)).items():
        x, y = make_images(n, seed)
        write_idx(root / f'{split}-images-idx3-ubyte', x, 'images', False)
        write_idx(root / f'{split}-labels-idx1-ubyte', y, 'labels', False)
    torch.manual_seed(0)
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
    backbone = VisionTransformer(arch=arch, img_size=56, patch_size=14,
                                 layer_scale_init_value=1e-5,
                                 norm_cfg=dict(type='LN', eps=1e-6), final_norm=True,
                                 out_type='cls_token', with_cls_token=True, pre_norm=False,
                                 qkv_bias=True)
    ckpt = base / 'backbone.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in backbone.state_dict().items()}),
               ckpt)
    opts = ['load_from=None', 'train_cfg.max_epochs=2',  # the fmnist config trains 1 epoch
            f'model.backbone.init_cfg.checkpoint={ckpt}',
            'model.backbone.img_size=56',
            'model.backbone.arch._delete_=True', 'model.head.in_channels=32',
            *(f'model.backbone.arch.{k}={v}' for k, v in arch.items()),
            'train_dataloader.dataset.pipeline.0.scale=56',
            f'train_dataloader.dataset.data_root={root}', 'train_dataloader.dataset.subset=20',
            'train_dataloader.dataset.val_size=10', 'train_dataloader.batch_size=5',
            'param_scheduler.0.end=3', 'default_hooks.logger.interval=1',
            'custom_hooks.0.log_interval=1']
    return base, opts


def _train(work_dir, opts, *cfg_extra, resume=None):
    """``tools/train.py CONFIG [--resume [PATH]]`` in a new process (started, not waited for)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    env.pop('LOCAL_RANK', None)
    flags = [] if resume is None else ['--resume'] if resume == 'auto' else ['--resume', resume]
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(ROOT / CONFIG), '--work-dir',
           str(work_dir), '--no-validate', *flags, '--cfg-options', *opts, *cfg_extra,
           f'experiment_name={osp.basename(str(work_dir))}_{os.getpid()}_{time.time_ns()}']
    return subprocess.Popen(cmd, cwd=str(work_dir.parent), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait(*procs, timeout=400):
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out[-4000:]
        p.log = out
    return procs


def _final_ckpt(work_dir):
    data = torch.load(Path(work_dir) / 'epoch_2.pth', map_location='cpu', weights_only=True)
    omegas = {i: st['omega'].item() for i, st in data['optimizer']['projection']['state'].items()}
    return data['state_dict'], omegas


def test_resume_with_random_flip_through_train_py(tiny_setup):
    base, opts = tiny_setup
    # the shrunk config really augments: RandomFlip is in the train pipeline
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / CONFIG), import_custom_modules=False)
    assert any(t['type'] == 'RandomFlip' and t['prob'] > 0
               for t in cfg.train_dataloader.dataset.pipeline)
    straight = _train(base / 'straight', opts)
    half = _train(base / 'half', opts, 'train_cfg.max_epochs=1')  # stopped after epoch 1
    _wait(straight, half)
    assert sorted(os.listdir(base / 'half')).count('epoch_2.pth') == 0
    ckpt = torch.load(base / 'half' / 'epoch_1.pth', map_location='cpu', weights_only=True)
    assert ckpt['exact_resume']['epoch_end'] and ckpt['exact_resume']['rng'][0] is not None

    # a NEW process resumes (auto: the work dir's last checkpoint); the control resumes the same
    # file without restoring the random states
    (base / 'ctl').mkdir()
    ctl_ckpt = base / 'ctl' / 'epoch_1.pth'
    ctl_ckpt.write_bytes((base / 'half' / 'epoch_1.pth').read_bytes())
    resumed = _train(base / 'half', opts, resume='auto')
    control = _train(base / 'ctl', opts, 'default_hooks.exact_resume.rng=False',
                     resume=str(ctl_ckpt))
    resumed, control = _wait(resumed, control)
    assert 'resumed epoch: 1, iter: 4' in resumed.log
    assert 'ExactResumeHook: restored the random states (python, numpy, torch)' in resumed.log

    ref_w, ref_om = _final_ckpt(base / 'straight')
    got_w, got_om = _final_ckpt(base / 'half')
    assert len(ref_om) > 10 and max(abs(w - 0.5) for w in ref_om.values()) > 0.01
    assert got_om == ref_om
    for k in ref_w:
        assert torch.equal(got_w[k], ref_w[k]), k
    ctl_w, ctl_om = _final_ckpt(base / 'ctl')
    # old behaviour: other flips after the resume (omegas may coincide where all sit at 0)
    assert max((ctl_w[k] - ref_w[k]).abs().max().item() for k in ref_w) > 0
