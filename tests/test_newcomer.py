"""A new user's path (issue 15, items 3-7): ``--quick``, the input-size warning of
tools/test.py, plot_omega's messages and row labels, TensorBoard, the data/weights checker and
the log noise. The runs are the tiny real-stack config of ``_tiny.py``, trained in-process.
"""
import copy
import importlib.util
import json
import logging
import os.path as osp
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmengine')

from _tiny import write_tiny_config  # noqa: E402

import mmdigrap  # noqa: E402,F401
from mmdigrap.datasets.checks import main as checks_main  # noqa: E402
from mmdigrap.datasets.checks import missing_model_paths  # noqa: E402
from mmdigrap.engine import launch  # noqa: E402
from mmdigrap.engine.launch import (  # noqa: E402
    MMEngineLogFilter,
    apply_quick,
    build_runner,
    input_size_mismatch,
    load_config,
)

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / 'configs' / 'embedded' / 'dinov2-s_fmnist_digrap.py'
REAL_FMNIST = '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz'
#: AdamW as the embedded configs set it (a paramwise_cfg: mmengine then logs per-tensor lines)
PLAIN_ADAMW = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
                   paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.0)}))


def _tool(name, rel):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


train_tool = _tool('mmdigrap_train_tool', 'tools/train.py')
test_tool = _tool('mmdigrap_test_tool', 'tools/test.py')
plot_omega = _tool('mmdigrap_plot_omega', 'tools/analysis/plot_omega.py')


def _train_args(monkeypatch, argv):
    monkeypatch.setattr(sys, 'argv', ['train.py', *argv])
    return train_tool.parse_args()


def _train(cfg_path, work_dir, **overrides):
    """Train a config in this process (as tools/train.py does, without argument parsing)."""
    cfg = load_config(str(cfg_path))
    cfg.work_dir = str(work_dir)
    cfg.merge_from_dict(copy.deepcopy(overrides))  # merging consumes '_delete_'
    launch.apply_dataloader_defaults(cfg, dict(pin_memory=True, persistent_workers=True,
                                               collate_fn=dict(type='default_collate')))
    launch.fix_persistent_workers(cfg)
    runner = build_runner(cfg)
    runner.train()
    return runner


def _log_text(work_dir):
    return next(Path(work_dir).glob('*/*.log')).read_text()


# ------------------------------------------------------------------------------- 3: --quick
def test_quick_shrinks_the_embedded_run(monkeypatch, tmp_path):
    args = _train_args(monkeypatch, [str(EMBEDDED), '--quick', '--work-dir', str(tmp_path),
                                     '--cfg-options', 'val_dataloader.dataset.subset=32'])
    cfg = train_tool.merge_args(load_config(str(EMBEDDED)), args)
    assert cfg.model.backbone.img_size == 56
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.pipeline[0].scale == 56
    assert cfg.train_dataloader.dataset.subset == 160
    assert cfg.val_dataloader.dataset.subset == 32  # --cfg-options wins over quick
    assert cfg.test_dataloader.dataset.subset == 64
    assert list(cfg.test_dataloader.dataset.severities) == [3]
    # tools/test.py --quick: the same sizes
    monkeypatch.setattr(sys, 'argv', ['test.py', str(EMBEDDED), 'x.pth', '--quick'])
    tcfg = test_tool.merge_args(load_config(str(EMBEDDED)), test_tool.parse_args())
    assert tcfg.test_dataloader.dataset.pipeline[0].scale == 56
    assert tcfg.test_dataloader.dataset.subset == 64
    # without --quick nothing changes
    args = _train_args(monkeypatch, [str(EMBEDDED), '--work-dir', str(tmp_path)])
    full = train_tool.merge_args(load_config(str(EMBEDDED)), args)
    assert full.model.backbone.img_size == 56 and full.train_dataloader.dataset.subset == 2400

    if not osp.exists(REAL_FMNIST):
        pytest.skip('the real Fashion-MNIST (dataset-fashion-mnist) is not installed')
    # images of the quick size reach the model, and the training set has the quick size
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, MODELS
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(ds) == 160
    model = MODELS.build(cfg.model)
    batch = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), training=True)
    assert tuple(batch['inputs'].shape) == (2, 3, 56, 56)
    assert model.backbone.patch_resolution == (4, 4)
    with torch.no_grad():
        feats = model.extract_feat(batch['inputs'])
        losses = model.loss(batch['inputs'], batch['data_samples'])
    assert tuple(feats[-1].shape) == (2, 384)
    assert torch.isfinite(losses['loss'])


def test_quick_without_quick_dict_is_a_clear_error(monkeypatch, tmp_path):
    cfg_path = write_tiny_config(tmp_path, name='noquick.py')
    args = _train_args(monkeypatch, [cfg_path, '--quick'])
    with pytest.raises(KeyError, match=r'declares no `quick` dict of overrides'):
        train_tool.merge_args(load_config(cfg_path), args)
    cfg = load_config(cfg_path)
    cfg.quick = {'model.backbone.img_sise': 56}  # a typo is an error, not a new key
    with pytest.raises(KeyError, match=r'img_sise'):
        apply_quick(cfg, cfg_path)
    cfg.quick = {'model.backbone.img_size': 56, 'train_dataloader.dataset.pipeline.0.scale': 56}
    assert apply_quick(cfg, cfg_path) == dict(cfg.quick)
    assert cfg.model.backbone.img_size == 56 and cfg.train_pipeline[0].scale == 28
    assert cfg.train_dataloader.dataset.pipeline[0].scale == 56


def test_dataset_base_hides_parse_time_constants():
    """The dump shows no top-level img_size / train_subset / test_subset (they are not
    settable with --cfg-options): issue 15, item 3."""
    cfg = load_config(str(EMBEDDED))
    for name in ('img_size', 'train_subset', 'test_subset', 'severities', 'data_root',
                 'lp_checkpoint'):
        assert name not in cfg and f'__{name}' not in cfg
    text = cfg.pretty_text
    assert '\nimg_size' not in text and '\ntrain_subset' not in text
    assert cfg.train_dataloader.dataset.subset == 2400
    assert cfg.train_dataloader.dataset.data_root == '/usr/share/datasets/fashion-mnist'


# -------------------------------------------------------------- 4: the input-size warning
@pytest.fixture(scope='module')
def trained56(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('px56')
    runner = _train(write_tiny_config(tmp, img=56, name='tiny56.py'), tmp / 'wd')
    return tmp, tmp / 'wd' / 'epoch_1.pth', runner


def test_test_tool_warns_on_input_size(trained56, monkeypatch, tmp_path):
    tmp, ckpt, _ = trained56
    cfg112 = write_tiny_config(tmp, img=112, name='tiny112.py')
    msg = input_size_mismatch(load_config(cfg112), str(ckpt))
    assert msg is not None
    assert 'model.backbone.img_size: 56 when trained, 112 here' in msg
    assert 'test_dataloader.dataset.pipeline.0.scale: 56 when trained, 112 here' in msg
    assert '--cfg-options model.backbone.img_size=56' in msg
    # same size: no warning; a file without a recorded config: no warning
    assert input_size_mismatch(load_config(osp.join(tmp, 'tiny56.py')), str(ckpt)) is None
    bare = tmp_path / 'bare.pth'
    torch.save({'state_dict': {}}, bare)
    assert input_size_mismatch(load_config(cfg112), str(bare)) is None
    # end to end: tools/test.py logs it as a WARNING and still evaluates
    monkeypatch.setattr(sys, 'argv', ['test.py', cfg112, str(ckpt), '--work-dir',
                                      str(tmp_path / 'test')])
    test_tool.main()
    log = _log_text(tmp_path / 'test')
    line = next(x for x in log.splitlines() if 'was trained at another input size' in x)
    assert ' - WARNING - ' in line and '56 when trained, 112 here' in line
    res = json.loads(next((tmp_path / 'test').rglob('results.json')).read_text())
    assert [s['num_images'] for s in res['sets']] == [16, 16]


# ------------------------------------------------------- 7: one line for frozen tensors
def test_frozen_tensors_are_one_summary_line(trained56, tmp_path):
    tmp = trained56[0]
    cfg_path = write_tiny_config(tmp, name='tiny_lp.py')
    runner = _train(cfg_path, tmp_path / 'lp', **{
        'model.backbone.frozen_stages': 1, 'optim_wrapper': PLAIN_ADAMW, 'custom_hooks': []})
    frozen = [n for n, p in runner.model.named_parameters() if not p.requires_grad]
    assert len(frozen) == 18  # every backbone tensor of the 1-block ViT
    log = _log_text(tmp_path / 'lp')
    assert 'is skipped since its requires_grad=False' not in log
    lines = [x for x in log.splitlines() if 'requires_grad=False' in x]
    assert len(lines) == 1
    assert (f'18 parameter tensors have requires_grad=False and are not given to the optimizer '
            f'(frozen; backbone: 18): {frozen[0]} ... {frozen[-1]}') in lines[0]
    assert ' - WARNING - ' in lines[0]
    # mmengine's own FileClient / HardDiskBackend deprecation notices are gone too
    assert 'FileClient' not in log and 'HardDiskBackend' not in log


def test_log_filter_unit():
    flt = MMEngineLogFilter()

    def rec(msg):
        return logging.LogRecord('mmengine', logging.WARNING, __file__, 1, msg, None, None)
    assert not flt.filter(rec('a.b.weight is skipped since its requires_grad=False'))
    assert not flt.filter(rec('c.bias is skipped since its requires_grad=False'))
    assert not flt.filter(rec('"HardDiskBackend" is the alias of "LocalBackend" and ...'))
    assert flt.filter(rec('loss is nan'))
    assert flt.summary() == ('2 parameter tensors have requires_grad=False and are not given '
                             'to the optimizer (frozen; a: 1, c: 1): a.b.weight ... c.bias')
    assert flt.summary(start=2) is None


def test_no_pin_memory_or_pkg_resources_warning_on_cpu(monkeypatch):
    monkeypatch.setattr(launch, '_has_accelerator', lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cfg = load_config(str(EMBEDDED))
    assert not [w for w in caught if 'pkg_resources' in str(w.message)]
    launch.apply_dataloader_defaults(cfg, dict(pin_memory=True, persistent_workers=True))
    assert cfg.train_dataloader.pin_memory is False  # torch would warn "no accelerator"
    cfg.test_dataloader.pin_memory = True  # the config's own choice is kept
    launch.apply_dataloader_defaults(cfg, dict(pin_memory=True), fields=('test_dataloader', ))
    assert cfg.test_dataloader.pin_memory is True
    monkeypatch.setattr(launch, '_has_accelerator', lambda: True)
    cfg = load_config(str(EMBEDDED))
    launch.apply_dataloader_defaults(cfg, dict(pin_memory=True))
    assert cfg.train_dataloader.pin_memory is True


# ---------------------------------------------- 5 + 6: plot_omega and TensorBoard
TENSORBOARD = ("\nvisualizer = dict(vis_backends=[dict(type='LocalVisBackend'), "
               "dict(type='TensorboardVisBackend')])\n")


@pytest.fixture(scope='module')
def trained_tb(trained56):
    tmp = trained56[0]
    wd = tmp / 'tb'
    _train(write_tiny_config(tmp, name='tiny_tb.py', extra=TENSORBOARD), wd)
    return wd


def test_tensorboard_event_file_has_omega(trained_tb):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = list(trained_tb.glob('*/vis_data/events.out.tfevents.*'))
    assert len(events) == 1
    ea = EventAccumulator(str(events[0].parent), size_guidance={'scalars': 0})
    ea.Reload()
    tags = set(ea.Tags()['scalars'])
    for t in ('omega_mean', 'omega_max', 'conflict_rate', 'dist_to_anchor', 'loss',
              'omega/backbone.layers.0.attn.qkv.weight', 'dist/backbone.pos_embed'):
        assert t in tags, sorted(tags)[:20]
    # the same values as the local backend's scalars.json, step by step
    rows = [json.loads(x) for x in next(trained_tb.glob('*/vis_data/scalars.json'))
            .read_text().splitlines()]
    key = 'omega/backbone.layers.0.attn.qkv.weight'
    local = {r['step']: r[key] for r in rows if key in r}
    tb = {e.step: e.value for e in ea.Scalars(key)}
    assert sorted(tb) == sorted(local) == [1, 2, 3, 4]
    assert all(tb[s] == pytest.approx(local[s], abs=1e-6) for s in local)
    moved = [t for t in tags if t.startswith('omega/') and max(e.value for e in ea.Scalars(t)) > 0]
    assert moved  # omega did move: the curves are not all zero
    means = {r['step']: r['omega_mean'] for r in rows if 'omega_mean' in r}
    assert {e.step: pytest.approx(e.value, abs=1e-6) for e in ea.Scalars('omega_mean')} == means


def test_plot_omega_labels_rows_with_short_names(trained_tb, tmp_path):
    curves = plot_omega.load_omegas(str(trained_tb))
    fig = plot_omega.draw(curves)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == plot_omega.short_names(list(curves))
    assert len(labels) == 18
    assert labels[:3] == ['cls_token', 'pos_embed', 'patch.proj.w']
    assert 'L0.attn.qkv.w' in labels and 'L0.ffn.layers.0.0.b' in labels
    assert not any(x.isdigit() for x in labels)
    out = plot_omega.plot(curves, str(tmp_path / 'o.png'))
    assert osp.getsize(out) > 10_000


def test_short_names():
    assert plot_omega.short_names(['module.backbone.blocks.11.mlp.fc1.weight',
                                   'module.head.bias']) == ['backbone.L11.mlp.fc1.w', 'head.b']
    assert plot_omega.short_names(['a.weight']) == ['a.w']  # nothing to drop from one part


def test_plot_omega_says_the_run_was_shorter_than_log_interval(trained56, tmp_path):
    tmp = trained56[0]
    wd = tmp_path / 'short'
    _train(write_tiny_config(tmp, name='tiny_short.py', log_interval=10), wd)
    with pytest.raises(FileNotFoundError) as e:
        plot_omega.load_omegas(str(wd))
    assert str(e.value) == (
        'no omega was logged yet (run had 4 iterations < log_interval=10); lower '
        '`custom_hooks[0].log_interval`, e.g. --cfg-options custom_hooks.0.log_interval=4')
    with pytest.raises(SystemExit, match='no omega was logged yet'):
        plot_omega.main([str(wd)])
    # an empty folder: no scalars at all, named as such
    with pytest.raises(FileNotFoundError, match='LocalVisBackend'):
        plot_omega.load_omegas(str(tmp_path / 'nothing'))


def test_plot_omega_says_there_was_no_hook(trained56, tmp_path):
    tmp = trained56[0]
    wd = tmp_path / 'nohook'
    _train(write_tiny_config(tmp, name='tiny_nohook.py'), wd,
           **{'custom_hooks': [], 'optim_wrapper': PLAIN_ADAMW})
    with pytest.raises(FileNotFoundError, match='the run had no DiGraPHook'):
        plot_omega.load_omegas(str(wd))


# ------------------------------------------------- 7: the checker finds missing weights
def test_checker_reports_missing_checkpoint_and_tokenizer(tmp_path, capsys):
    tok = tmp_path / 'tok'
    tok.mkdir()
    ck = tmp_path / 'present.pth'
    ck.write_bytes(b'x')
    cfg_path = write_tiny_config(tmp_path, extra=(
        f"\nload_from = {str(tmp_path / 'missing_lp.pth')!r}\n"
        "model.update(init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nope.pth'))\n"
        f"model['backbone'].update(init_cfg=dict(type='Pretrained', checkpoint={str(ck)!r}))\n"
        "model['head'].update(init_cfg=dict(type='Pretrained', checkpoint='https://x/y.pth'))\n"
        f"model['neck'] = dict(type='X', tokenizer=dict(name_or_path={str(tok)!r}), "
        "txt=dict(tokenizer=dict(name_or_path='./no/such/tokenizer')))\n"))
    cfg = load_config(cfg_path)
    assert sorted(missing_model_paths(cfg)) == [
        ('load_from', str(tmp_path / 'missing_lp.pth'), 'file'),
        ('model.init_cfg.checkpoint', 'checkpoints/nope.pth', 'file'),
        ('model.neck.txt.tokenizer.name_or_path', './no/such/tokenizer', 'tokenizer')]
    assert checks_main([cfg_path]) == 1
    out = capsys.readouterr().out
    assert f"MISSING file   {tmp_path / 'missing_lp.pth'}   (load_from)" in out
    assert 'MISSING file   checkpoints/nope.pth   (model.init_cfg.checkpoint)' in out
    assert 'MISSING tokenizer ./no/such/tokenizer' in out
    assert 'docs/settings.md' in out
    # all present: OK and exit status 0
    cfg_ok = write_tiny_config(tmp_path, name='ok.py')
    assert checks_main([cfg_ok]) == 0
    assert 'OK: every data path, checkpoint and tokenizer' in capsys.readouterr().out
