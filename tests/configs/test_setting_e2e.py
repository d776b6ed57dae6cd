"""Two settings end to end through mmengine's Runner on tiny generated data sets laid out as
docs/datasets.md says: train 2 iterations from a saved checkpoint (`load_from`, as a user
would), then one test run that evaluates the ID set and every OOD set into one table.

* DomainNet / ResNet (18 here) / DiGraP: split files + CustomDataset, IDOODConcatDataset,
  IDOODAccuracy.
* CLIP ViT-B/16 on ImageNet / DiGraP: mmpretrain's ImageNet layout, ImageNet-V2 (index folders),
  ImageNet-A/-R (wnid folders, 200-class masking), ImageNet-Sketch; ClassSubsetIDOODAccuracy.

Images are 8x8 and the pipelines are shrunk to 32 px (ViT img_size 32, and a narrow ViT) to
stay fast.
"""
import copy
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOMAINS = ('real', 'sketch', 'painting', 'infograph', 'clipart', 'quickdraw')



@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads spin against other
    processes (a small conv measured 30x slower than with 1 thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(autouse=True)
def _fast_config_dump(monkeypatch):
    """The Runner logs and dumps its config through yapf (tens of seconds for these big
    configs on a slow CPU); a plain repr is enough here."""
    from mmengine.config import Config
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))


def _img(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def _shrink_pipelines(obj):
    if isinstance(obj, dict):
        t = obj.get('type')
        if t in ('RandomResizedCrop', 'ResizeEdge') and 'scale' in obj:
            obj['scale'] = 32
        if t == 'CenterCrop':
            obj['crop_size'] = 32
        for v in obj.values():
            _shrink_pipelines(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _shrink_pipelines(v)


def _small_loaders(cfg, work_dir):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].batch_size = 2
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    _shrink_pipelines(cfg.train_dataloader)
    _shrink_pipelines(cfg.val_dataloader)
    _shrink_pipelines(cfg.test_dataloader)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(by_epoch=False, max_iters=2, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.custom_hooks[0]['log_interval'] = 1
    cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
                       dist_cfg=dict(backend='gloo'))
    cfg.launcher = 'none'
    cfg.visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])


def _run(cfg, ckpt):
    from mmengine.runner import Runner
    # a "pre-trained" checkpoint: the random init saved, loaded through load_from
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    torch.save({'state_dict': runner.model.state_dict(), 'meta': {}}, ckpt)
    cfg.load_from = str(ckpt)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner.test()


def test_domainnet_resnet_digrap(tmp_path):
    from mmengine.config import Config
    root = tmp_path / 'domainnet'
    for d in DOMAINS:
        lines = []
        for label, cls in enumerate(('aircraft_carrier', 'zebra', 'the_eiffel_tower')):
            for i in range(2):
                rel = f'{d}/{cls}/{d}_{label:03d}_{i:06d}.jpg'
                _img(root / rel, hash(rel) % 1000)
                lines.append(f'{rel} {label}')
        (root / f'{d}_test.txt').write_text('\n'.join(lines) + '\n')
        if d == 'real':
            (root / 'real_train.txt').write_text('\n'.join(lines) + '\n')
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/domainnet/resnet50_digrap_4xb64-50e_domainnet-real.py'))
    cfg.model.backbone.init_cfg = None  # the checkpoint comes through load_from
    # ResNet-50 itself is built and trained by test_config_smoke; ResNet-18 keeps this fast
    cfg.model.backbone.depth = 18
    cfg.model.head.in_channels = 512
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = str(root)
    for d in cfg.test_dataloader.dataset.datasets.values():
        d.data_root = str(root)
    _small_loaders(cfg, tmp_path / 'work')
    metrics = _run(cfg, tmp_path / 'r50.pth')
    for d in DOMAINS:
        assert f'idood/{d}' in metrics
    assert set(metrics) >= {'idood/id', 'idood/ood_mean', 'idood/ood_worst'}
    res = json.load(open(tmp_path / 'work' / 'results.json'))
    assert [s['name'] for s in res['sets']] == list(DOMAINS)
    assert all(s['num_images'] == 6 for s in res['sets'])


def test_clip_imagenet_digrap_with_class_subsets(tmp_path):
    from mmengine.config import Config
    wnids = [f'n{i:08d}' for i in range(1000)]
    inet = tmp_path / 'imagenet'
    for w in wnids:  # the 1000 train folders give the wnid -> label order
        (inet / 'train' / w).mkdir(parents=True)
    for k, w in enumerate(wnids[:3]):
        _img(inet / 'train' / w / f'{w}_1.JPEG', k)
    (inet / 'meta').mkdir()
    (inet / 'meta' / 'train.txt').write_text(
        ''.join(f'{w}/{w}_1.JPEG {k}\n' for k, w in enumerate(wnids[:3])))
    (inet / 'val').mkdir()
    for k in range(3):
        _img(inet / 'val' / f'ILSVRC2012_val_{k:08d}.JPEG', 10 + k)
    (inet / 'meta' / 'val.txt').write_text(
        ''.join(f'ILSVRC2012_val_{k:08d}.JPEG {k * 100}\n' for k in range(3)))
    for k in (0, 5, 999):
        _img(tmp_path / 'imagenet-v2' / str(k) / 'a.jpeg', 20 + k)
    for name, present in (('imagenet-a', (1, 7)), ('imagenet-r', (2, 3, 4))):
        for k in present:
            _img(tmp_path / name / wnids[k] / 'b.jpg', 30 + k)
    for k in (0, 998):
        _img(tmp_path / 'imagenet-sketch' / wnids[k] / 'c.JPEG', 40 + k)

    cfg = Config.fromfile(osp.join(
        REPO, 'configs/clip_imagenet/vit-b16-clip_digrap_8xb64-10e_in1k.py'))
    # the full ViT-B is built and trained by test_config_smoke; a narrow 2-block ViT keeps this
    # data/metric path test fast
    cfg.model.backbone.img_size = 32
    cfg.model.backbone.arch = dict(embed_dims=48, num_layers=2, num_heads=3,
                                   feedforward_channels=96)
    cfg.model.head.in_channels = 48
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = str(inet)
    sets = cfg.test_dataloader.dataset.datasets
    sets.imagenet.data_root = str(inet)
    for name, folder in (('imagenet_v2', 'imagenet-v2'), ('imagenet_a', 'imagenet-a'),
                         ('imagenet_r', 'imagenet-r'), ('imagenet_sketch', 'imagenet-sketch')):
        sets[name].data_root = str(tmp_path / folder)
        if 'wnids' in sets[name]:
            sets[name].wnids = str(inet / 'train')
    _small_loaders(cfg, tmp_path / 'work')
    metrics = _run(cfg, tmp_path / 'clip.pth')
    for name in ('imagenet', 'imagenet_v2', 'imagenet_a', 'imagenet_r', 'imagenet_sketch'):
        assert f'idood/{name}' in metrics
    res = json.load(open(tmp_path / 'work' / 'results.json'))
    by = {s['name']: s for s in res['sets']}
    assert by['imagenet']['num_images'] == 3 and by['imagenet_a']['num_images'] == 2
    assert res['id_set'] == 'imagenet' and res['num_ood_sets'] == 4


HAS_MMCV_OPS = importlib.util.find_spec('mmcv._ext') is not None


@pytest.mark.skipif(not HAS_MMCV_OPS, reason='mmseg models need mmcv._ext (full mmcv with '
                    'compiled ops); mmcv-lite is installed')
def test_segmentation_cityscapes_to_night(tmp_path):
    """mmseg through the Runner: IDOODConcatDataset (mmpretrain registry) holding mmseg data
    sets, PerSetMetric over mmseg's IoUMetric, one mIoU per set + the OOD mean."""
    from mmengine.config import Config

    def pair(img, seg, seed):
        _img(img, seed)
        seg.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 19, (8, 8), dtype=np.uint8)).save(seg)

    cs = tmp_path / 'cityscapes'
    for split in ('train', 'val'):
        for i in range(2):
            pair(cs / 'leftImg8bit' / split / 'aachen' / f'aachen_{i:06d}_leftImg8bit.png',
                 cs / 'gtFine' / split / 'aachen' / f'aachen_{i:06d}_gtFine_labelTrainIds.png', i)
    dz = tmp_path / 'dark_zurich'
    for i in range(2):
        pair(dz / 'rgb_anon/val/night/GOPR0356' / f'GOPR0356_{i:06d}_rgb_anon.png',
             dz / 'gt/val/night/GOPR0356' / f'GOPR0356_{i:06d}_gt_labelTrainIds.png', 10 + i)
    nd = tmp_path / 'NighttimeDrivingTest'
    for i in range(2):
        pair(nd / 'leftImg8bit/test/night' / f'n_{i:06d}_leftImg8bit.png',
             nd / 'gtCoarse_daytime_trainvaltest/test/night' /
             f'n_{i:06d}_gtCoarse_labelTrainIds.png', 20 + i)

    cfg = Config.fromfile(osp.join(
        REPO, 'configs/segmentation/upernet_r50_digrap_4xb2-80k_cityscapes-night.py'))
    # the R-50 UperNet is built and trained by test_config_smoke; R-18 keeps this fast
    cfg.model.pretrained = None
    cfg.model.backbone.depth = 18
    cfg.model.decode_head.in_channels = [64, 128, 256, 512]
    cfg.model.auxiliary_head.in_channels = 256
    cfg.model.decode_head.channels = 32
    cfg.model.auxiliary_head.channels = 32
    cfg.model.data_preprocessor.size = (32, 32)
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'RandomResize':
            t['scale'] = (32, 32)
        if t['type'] == 'RandomCrop':
            t['crop_size'] = (32, 32)
    cfg.train_dataloader.dataset.data_root = str(cs)
    cfg.val_dataloader.dataset.data_root = str(cs)
    for t in cfg.val_dataloader.dataset.pipeline:
        if t['type'] == 'Resize':
            t['scale'] = (32, 32)
    sets = cfg.test_dataloader.dataset.datasets
    for name, root in (('cityscapes', cs), ('dark_zurich', dz), ('night_driving', nd)):
        sets[name].data_root = str(root)
        for t in sets[name].pipeline:
            if t['type'] == 'Resize':
                t['scale'] = (32, 32)
    cfg.test_dataloader.batch_size = 1
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    cfg.train_dataloader.batch_size = 2
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=100)
    cfg.default_hooks.visualization = dict(type='SegVisualizationHook', draw=False)
    cfg.custom_hooks[0]['log_interval'] = 1
    cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
                       dist_cfg=dict(backend='gloo'))
    cfg.launcher = 'none'
    metrics = _run(cfg, tmp_path / 'upernet.pth')
    for name in ('cityscapes', 'dark_zurich', 'night_driving'):
        assert f'per_set/{name}/mIoU' in metrics
    assert 'per_set/ood_mean/mIoU' in metrics
