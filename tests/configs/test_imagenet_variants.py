"""ImageNet OOD variants (labels, class subsets, masked accuracy), PerSetMetric and the
missing-data checks, on tiny generated folders."""
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

import mmdigrap  # noqa: F401
from mmdigrap.datasets import ImageNetVariant, load_wnids
from mmdigrap.datasets.checks import check_config_data, missing_data_paths, require_data_root
from mmdigrap.evaluation import PerSetMetric
from mmdigrap.models import CLIPClsHead

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
WNIDS = [f'n{i:08d}' for i in range(1000)]
PIPE = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 127, np.uint8)).save(path)


@pytest.fixture()
def variants(tmp_path):
    (tmp_path / 'wnids.txt').write_text('\n'.join(WNIDS) + '\n')
    for w in ('n00000007', 'n00000003', 'n00000500'):  # an IN-A / IN-R style subset
        _img(tmp_path / 'in-a' / w / 'x1.jpg')
    _img(tmp_path / 'in-a' / 'n00000003' / 'x2.JPEG')
    for d in ('0', '12', '999'):  # ImageNet-V2 style
        _img(tmp_path / 'in-v2' / d / 'y.jpeg')
    return tmp_path


def test_variant_labels_and_subset(variants):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    a = DATASETS.build(dict(type='ImageNetVariant', data_root=str(variants / 'in-a'),
                            wnids=str(variants / 'wnids.txt'), mask_to_present=True,
                            pipeline=PIPE))
    assert sorted(a.get_gt_labels().tolist()) == [3, 3, 7, 500]
    assert a.class_subset == [3, 7, 500] and a.metainfo['class_subset'] == [3, 7, 500]
    assert len(a.metainfo['classes']) == 1000
    v2 = DATASETS.build(dict(type='ImageNetVariant', layout='index',
                             data_root=str(variants / 'in-v2'), pipeline=PIPE))
    assert sorted(v2.get_gt_labels().tolist()) == [0, 12, 999]
    assert v2.class_subset is None  # scored on all classes unless asked
    # a folder of wnids works as the label-order source too
    wn_dir = variants / 'train'
    for w in WNIDS:
        (wn_dir / w).mkdir(parents=True)
    assert load_wnids(str(wn_dir)) == WNIDS


def test_variant_errors_name_the_folder(variants):
    with pytest.raises(FileNotFoundError, match='imagenet-r.*does not exist.*docs/datasets.md'):
        ImageNetVariant(data_root=str(variants / 'imagenet-r'), name='imagenet-r',
                           wnids=str(variants / 'wnids.txt'))
    with pytest.raises(FileNotFoundError, match='wnids'):
        ImageNetVariant(data_root=str(variants / 'in-a'), wnids=str(variants / 'nope'))
    _img(variants / 'in-a' / 'not_a_wnid' / 'z.jpg')
    with pytest.raises(ValueError, match='not_a_wnid'):
        ImageNetVariant(data_root=str(variants / 'in-a'), wnids=str(variants / 'wnids.txt'))
    with pytest.raises(ValueError, match='1000'):
        load_wnids(WNIDS[:10])


def _sample(set_name, gt, top):
    """A packed sample whose global argmax is `top` and whose 2nd best is `gt`."""
    score = torch.zeros(1000)
    score[top], score[gt] = 0.6, 0.3
    out = dict(pred_score=score, pred_label=torch.tensor([top]), gt_label=torch.tensor([gt]))
    if set_name is not None:
        out['set_name'] = set_name
    return out


def test_masked_idood_accuracy(variants, tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS, METRICS
    init_default_scope('mmpretrain')
    ds = DATASETS.build(dict(
        type='ClassSubsetIDOODDataset', id_set='v2',
        datasets=dict(
            v2=dict(type='ImageNetVariant', layout='index', data_root=str(variants / 'in-v2'),
                    pipeline=PIPE),
            a=dict(type='ImageNetVariant', data_root=str(variants / 'in-a'), mask_to_present=True,
                   wnids=str(variants / 'wnids.txt'), pipeline=PIPE))))
    meta = ds.metainfo
    assert meta['class_subsets'] == {'v2': None, 'a': [3, 7, 500]}
    # the dataset stamps set_name into the packed samples
    assert ds[len(ds) - 1]['data_samples'].set_name == 'a'

    metric = METRICS.build(dict(type='ClassSubsetIDOODAccuracy', out_dir=str(tmp_path)))
    metric.dataset_meta = meta
    # v2: top class 900 wrong, no mask -> wrong; a: 900 is outside the subset -> masked to gt
    metric.process(None, [_sample('v2', 12, 900), _sample('a', 7, 900), _sample('a', 3, 500)])
    res = metric.compute_metrics(metric.results)
    assert res['v2'] == 0.0 and res['a'] == 50.0  # (7 right after masking, 500 beats 3)
    assert res['id'] == 0.0 and res['ood_mean'] == 50.0
    assert osp.isfile(tmp_path / 'results.md')

    # an explicit subset overrides / adds
    m2 = METRICS.build(dict(type='ClassSubsetIDOODAccuracy', save_files=False,
                            class_subsets=dict(v2=[12, 13])))
    m2.dataset_meta = meta
    m2.process(None, [_sample('v2', 12, 900)])
    assert m2.compute_metrics(m2.results)['v2'] == 100.0


def test_class_subset_accuracy():
    from mmpretrain.registry import METRICS
    m = METRICS.build(dict(type='ClassSubsetAccuracy', class_subset=[3, 7], topk=(1, )))
    m.process(None, [_sample(None, 7, 900), _sample(None, 3, 7)])
    assert m.compute_metrics(m.results)['top1'] == pytest.approx(50.0)
    plain = METRICS.build(dict(type='ClassSubsetAccuracy', topk=(1, )))
    plain.dataset_meta = dict(class_subset=[7])
    plain.process(None, [_sample(None, 7, 900)])
    assert plain.compute_metrics(plain.results)['top1'] == pytest.approx(100.0)


def test_per_set_metric_groups():
    from mmengine.registry import METRICS, DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        m = METRICS.build(dict(type='PerSetMetric', metric=dict(type='Accuracy', topk=(1, )),
                               id_set='id', groups=dict(near=['n1', 'n2'], far=['f'])))
        m.dataset_meta = dict(classes=[str(i) for i in range(1000)])
        m.process(None, [_sample('id', 1, 1), _sample('n1', 1, 2), _sample('n2', 3, 3),
                         _sample('f', 4, 4), _sample(None, 5, 5)])
        res = m.evaluate(5)
    assert res['accuracy/id/top1'] == pytest.approx(100.0)  # the unnamed sample counts as id
    assert res['accuracy/n1/top1'] == 0.0 and res['accuracy/n2/top1'] == 100.0
    assert res['accuracy/near/top1'] == pytest.approx(50.0)
    assert res['accuracy/far/top1'] == pytest.approx(100.0)
    assert res['accuracy/ood_mean/top1'] == pytest.approx(200 / 3)
    with pytest.raises(TypeError):
        PerSetMetric(metric='VQAAcc')


def test_clip_cls_head_shapes():
    head = CLIPClsHead(num_classes=5, in_channels=8, proj_channels=4)
    x = torch.randn(3, 8)
    logits = head((x, ))
    assert logits.shape == (3, 5)
    assert torch.allclose(head.pre_logits((x, )).norm(dim=-1), torch.ones(3), atol=1e-6)
    plain = CLIPClsHead(num_classes=5, in_channels=8, proj_channels=None, normalize=False)
    assert plain.proj is None and plain((x, )).shape == (3, 5)


def test_require_data_root(tmp_path):
    assert require_data_root(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'/nope/x'.*DomainNet layout.*--cfg-options"):
        require_data_root('/nope/x', 'DomainNet layout: <root>/<domain>/<class>/<img>.')
    f = tmp_path / 'f.txt'
    f.write_text('x')
    with pytest.raises(FileNotFoundError, match='to be a folder'):
        require_data_root(str(f))
    assert require_data_root(str(f), kind='file') == str(f)


def test_check_config_data_lists_every_missing_path(tmp_path):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/domainnet/resnet50_digrap_4xb64-50e_domainnet-real.py'),
        import_custom_modules=False)
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = str(tmp_path / 'dn')
    for d in cfg.test_dataloader.dataset.datasets.values():
        d.data_root = str(tmp_path / 'dn')
    missing = missing_data_paths(cfg)
    paths = {p for _, p, _ in missing}
    assert str(tmp_path / 'dn') in paths
    assert str(tmp_path / 'dn' / 'sketch_test.txt') in paths
    assert str(tmp_path / 'dn' / 'real_train.txt') in paths
    with pytest.raises(FileNotFoundError, match='sketch_test.txt'):
        check_config_data(cfg)
    (tmp_path / 'dn').mkdir()
    for name in ['real_train', 'real_test'] + [f'{d}_test' for d in (
            'sketch', 'painting', 'infograph', 'clipart', 'quickdraw')]:
        (tmp_path / 'dn' / f'{name}.txt').write_text('')
    check_config_data(cfg)  # nothing missing now
