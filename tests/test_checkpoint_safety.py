"""Checkpoint loading stays safe after ``import mmdigrap`` (issue 13.1; CPU, seconds).

* a checkpoint carrying a pickled object whose ``__reduce__`` runs code (it writes a marker
  file) is refused through ``load_from`` and through ``tools/train.py --resume``, with an error
  that names the file and the opt-in, and the code never runs;
* a normal Runner resume (DiGraP's optimizer wrapper state, LR schedulers, the message hub)
  works under ``weights_only=True``; every method's wrapper writes checkpoints that load so;
* the restricted ``getattr`` resolves only ``HistoryBuffer``'s statistics methods;
* the opt-in (``MMDIGRAP_TRUST_CHECKPOINTS=1`` / ``--trust-checkpoint``) loads the file fully,
  with a warning naming it.
"""
import importlib.util
import os
import pickle
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import mmengine.runner.checkpoint as mm_ckpt  # noqa: E402
from mmengine.logging import HistoryBuffer  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdigrap  # noqa: E402,F401
from mmdigrap.engine.runtime import (  # noqa: E402
    TRUST_ENV,
    UntrustedCheckpointError,
    trusted_checkpoint_loading_enabled,
)

import _toy  # noqa: E402,F401  (MMDiGraPToy* model / dataset / metric)


def write_marker(path):
    """What the malicious object runs when it is unpickled."""
    Path(path).write_text('pwned')
    return 'pwned'


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return write_marker, (self.marker,)


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    # set (not deleted), so that monkeypatch removes it afterwards even when tools/train.py
    # --trust-checkpoint wrote os.environ directly
    monkeypatch.setenv(TRUST_ENV, '0')
    assert not trusted_checkpoint_loading_enabled()


def _uniq(tag):
    return f'{tag}_{os.getpid()}_{time.time_ns()}'


def _runner(work_dir, epochs=1, wrapper='DiGraPOptimWrapper', **kw):
    extra = dict(digrap=dict(mu=0.1, omega_init=0.5)) if wrapper.startswith('DiGraP') else {}
    hooks = [dict(type='DiGraPHook', allow_random_init=True)] \
        if wrapper.startswith('DiGraP') else []
    cfg = dict(
        model=dict(type='MMDiGraPToyModel'), work_dir=str(work_dir),
        experiment_name=_uniq(Path(work_dir).name),
        train_dataloader=dict(batch_size=8, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'),
                              dataset=dict(type='MMDiGraPToyDataset', num=32)),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=dict(type=wrapper, optimizer=dict(type='AdamW', lr=1e-2), **extra),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                              end=6)],
        custom_hooks=hooks,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           exact_resume=dict(type='ExactResumeHook')),
        randomness=dict(seed=0), default_scope='mmengine', log_level='WARNING')
    cfg.update(kw)
    return Runner(**cfg)


def _state(runner):
    return ({k: v.detach().clone() for k, v in runner.model.state_dict().items()},
            runner.optim_wrapper.omegas())


@pytest.fixture(scope='module')
def digrap_runs(tmp_path_factory):
    """(1 epoch DiGraP: its checkpoint, 2 straight epochs: final weights and omegas)."""
    base = tmp_path_factory.mktemp('safety')
    _runner(base / 'one', epochs=1).train()
    straight = _runner(base / 'two', epochs=2)
    straight.train()
    return base / 'one' / 'epoch_1.pth', _state(straight)


def _evil_copy(ckpt, tmp_path, marker):
    """The real checkpoint plus a pickled code-running object in its meta."""
    data = torch.load(ckpt, map_location='cpu', weights_only=True)
    data['meta']['note'] = Evil(marker)
    out = tmp_path / 'evil.pth'
    torch.save(data, out)
    assert not marker.exists()
    return out


def _train_tool():
    spec = importlib.util.spec_from_file_location('_mmdigrap_tools_train_safety',
                                                  ROOT / 'tools' / 'train.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOY_CFG = """
custom_imports = dict(imports=['_toy', 'mmdigrap'], allow_failed_imports=False)
default_scope = 'mmengine'
model = dict(type='MMDiGraPToyModel')
train_dataloader = dict(batch_size=8, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='MMDiGraPToyDataset', num=32))
train_cfg = dict(by_epoch=True, max_epochs=2)
optim_wrapper = dict(type='DiGraPOptimWrapper', optimizer=dict(type='AdamW', lr=1e-2),
                     digrap=dict(mu=0.1, omega_init=0.5))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6)]
custom_hooks = [dict(type='DiGraPHook', allow_random_init=True)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1),
                     exact_resume=dict(type='ExactResumeHook'))
randomness = dict(seed=0)
log_level = 'WARNING'
"""


def _train_py(monkeypatch, tmp_path, *argv):
    import mmengine.runner.runner as mm_runner
    cfg = tmp_path / 'toy_cfg.py'
    cfg.write_text(TOY_CFG)
    monkeypatch.setattr(mm_runner, 'get_device', lambda: 'cpu')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv', ['train.py', str(cfg), '--work-dir',
                                      str(tmp_path / 'w'), *argv, '--cfg-options',
                                      f'experiment_name={_uniq("tool")}'])
    _train_tool().main()


# ------------------------------------------------------------------------------- refusals
def test_code_running_checkpoint_is_refused_through_load_from(digrap_runs, tmp_path):
    marker = tmp_path / 'MARKER'
    evil = _evil_copy(digrap_runs[0], tmp_path, marker)
    runner = _runner(tmp_path / 'w', load_from=str(evil))
    with pytest.raises(UntrustedCheckpointError) as err:
        runner.train()
    msg = str(err.value)
    assert str(evil) in msg and TRUST_ENV in msg and '--trust-checkpoint' in msg
    assert 'write_marker' in msg  # what torch refused
    assert isinstance(err.value, pickle.UnpicklingError)
    assert not marker.exists()  # the code never ran
    # the same through mmengine's loader directly, and through init_cfg=Pretrained
    with pytest.raises(UntrustedCheckpointError):
        mm_ckpt._load_checkpoint(str(evil), map_location='cpu')
    model = _toy.ToyModel(init_cfg=dict(type='Pretrained', checkpoint=str(evil)))
    with pytest.raises(UntrustedCheckpointError):
        model.init_weights()
    assert not marker.exists()


def test_code_running_checkpoint_is_refused_through_resume(digrap_runs, tmp_path,
                                                           monkeypatch):
    marker = tmp_path / 'MARKER'
    evil = _evil_copy(digrap_runs[0], tmp_path, marker)
    with pytest.raises(UntrustedCheckpointError, match=r'(?s)Refusing.*evil\.pth.*'
                       + TRUST_ENV):
        _train_py(monkeypatch, tmp_path, '--resume', str(evil))
    assert not marker.exists()
    # Runner level too
    with pytest.raises(UntrustedCheckpointError):
        _runner(tmp_path / 'w2', epochs=2, resume=True, load_from=str(evil)).train()
    assert not marker.exists()


# ------------------------------------------------------------------------------ normal use
def test_runner_resume_of_digrap_under_weights_only(digrap_runs, tmp_path):
    ckpt, (weights, omegas) = digrap_runs
    data = torch.load(ckpt, map_location='cpu', weights_only=True)  # plain torch, safe mode
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers',
            'exact_resume'} <= set(data)
    assert data['optimizer']['projection']['hyper_step'] == 4
    buf = data['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.statistics('mean') == buf.mean()
    resumed = _runner(tmp_path / 'r', epochs=2, resume=True, load_from=str(ckpt))
    resumed.train()
    w, om = _state(resumed)
    assert resumed.iter == 8 and om == omegas and len(om) == 4
    for k in weights:
        assert torch.equal(w[k], weights[k]), k


@pytest.mark.parametrize('wrapper', ['OptimWrapper', 'L2SPOptimWrapper', 'FTPOptimWrapper',
                                     'SPDOptimWrapper', 'FixedDiGraPOptimWrapper'])
def test_every_method_checkpoint_loads_under_weights_only(wrapper, tmp_path):
    kw = dict(optim_wrapper=dict(type=wrapper, optimizer=dict(type='AdamW', lr=1e-2),
                                 **(dict(digrap=dict(omega=0.5))
                                    if wrapper.startswith('Fixed') else {})),
              custom_hooks=[])
    _runner(tmp_path / 'w', wrapper=wrapper, **kw).train()
    data = mm_ckpt._load_checkpoint(str(tmp_path / 'w' / 'epoch_1.pth'), map_location='cpu')
    assert data['meta']['epoch'] == 1 and data['optimizer']['state']


def test_tpgm_checkpoint_loads_under_weights_only(tmp_path):
    val = dict(batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
               collate_fn=dict(type='default_collate'),
               dataset=dict(type='MMDiGraPToyDataset', num=16, seed=1))
    _runner(tmp_path / 'w', wrapper='TPGMOptimWrapper',
            optim_wrapper=dict(type='TPGMOptimWrapper', optimizer=dict(type='AdamW', lr=1e-2)),
            custom_hooks=[dict(type='TPGMHook', dataloader=val)]).train()
    data = torch.load(tmp_path / 'w' / 'epoch_1.pth', weights_only=True)
    assert data['optimizer']['state']


def test_restricted_getattr_resolves_only_history_buffer_methods(tmp_path):
    class Ok:
        def __reduce__(self):
            return getattr, (HistoryBuffer, 'mean')

    class Bad:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    torch.save({'f': Ok()}, tmp_path / 'ok.pth')
    assert torch.load(tmp_path / 'ok.pth', weights_only=True)['f'] is HistoryBuffer.mean
    torch.save({'f': Bad()}, tmp_path / 'bad.pth')
    with pytest.raises(pickle.UnpicklingError, match='statistics'):
        torch.load(tmp_path / 'bad.pth', weights_only=True)
    with pytest.raises(pickle.UnpicklingError):  # a module is no allowed global at all
        torch.save({'f': os.getcwd}, tmp_path / 'mod.pth')
        torch.load(tmp_path / 'mod.pth', weights_only=True)


# --------------------------------------------------------------------------------- opt-in
def test_opt_in_environment_variable_loads_with_a_warning(digrap_runs, tmp_path,
                                                          monkeypatch):
    ckpt, (weights, omegas) = digrap_runs
    marker = tmp_path / 'MARKER'
    evil = _evil_copy(ckpt, tmp_path, marker)
    monkeypatch.setenv(TRUST_ENV, '1')
    resumed = _runner(tmp_path / 'r', epochs=2, resume=True, load_from=str(evil))
    with pytest.warns(UserWarning, match=rf'(?s)unpickling checkpoint {evil}.*weights_only='
                                         r'False.*trust'):
        resumed.train()
    assert marker.read_text() == 'pwned'  # full unpickling really happened
    w, om = _state(resumed)
    assert om == omegas and all(torch.equal(w[k], weights[k]) for k in weights)


def test_opt_in_flag_of_train_py(digrap_runs, tmp_path, monkeypatch):
    marker = tmp_path / 'MARKER'
    evil = _evil_copy(digrap_runs[0], tmp_path, marker)
    with pytest.warns(UserWarning, match=f'unpickling checkpoint {evil}'):
        _train_py(monkeypatch, tmp_path, '--resume', str(evil), '--trust-checkpoint')
    assert marker.exists() and os.environ[TRUST_ENV] == '1'  # undone by _no_opt_in
    assert (tmp_path / 'w' / 'epoch_2.pth').is_file()
