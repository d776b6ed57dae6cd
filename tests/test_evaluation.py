"""ID + OOD evaluation: IDOODConcatDataset and the IDOODAccuracy metric (CPU, hand-made data)."""
import json
import os.path as osp

import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.model import BaseModel
from mmpretrain.registry import DATASETS, METRICS, MODELS
from mmpretrain.structures import DataSample

import mmdigrap  # noqa: F401  (registers the dataset and the metric)
from mmdigrap.datasets import IDOODConcatDataset
from mmdigrap.evaluation import IDOODAccuracy, summarize_idood

from test_datasets import make_images, write_idx


def md_rows(md):
    """The cells (stripped) of every markdown table row in ``md``, alignment rows left out."""
    return [[c.strip() for c in line.strip()[1:-1].split('|')] for line in md.splitlines()
            if line.startswith('|') and not set(line) <= set('|:- ')]


def sample(set_name, pred, gt, score=False):
    ds = DataSample().set_gt_label(gt)
    if score:
        s = torch.zeros(10)
        s[pred] = 1.0
        ds.set_pred_score(s)
    else:
        ds.set_pred_label(pred)
    if set_name is not None:
        ds.set_metainfo(dict(set_name=set_name))
    return ds


def batch(spec):
    """spec: {set_name: (n, n_correct)} -> DataSamples, gt cycling over classes."""
    out = []
    for name, (n, c) in spec.items():
        for i in range(n):
            gt = i % 10
            out.append(sample(name, gt if i < c else (gt + 1) % 10, gt, score=i % 2 == 1))
    return out


SPEC = {
    'id': (10, 9),  # 90 %
    'gaussian_noise_s3': (10, 6),  # 60
    'gaussian_noise_s5': (10, 2),  # 20
    'rotate_s3': (5, 4),  # 80
    'cv_digits': (4, 1),  # 25, a natural shift without severity
}


def test_summary_values():
    recs = [(d.set_name, int(d.pred_label) if 'pred_label' in d else int(d.pred_score.argmax()),
             int(d.gt_label)) for d in batch(SPEC)]
    s = summarize_idood(recs, 'id')
    assert s['id'] == pytest.approx(90.0)
    assert s['ood_mean'] == pytest.approx((60 + 20 + 80 + 25) / 4)
    assert s['ood_worst'] == pytest.approx(20.0) and s['num_ood_sets'] == 4
    assert [x['name'] for x in s['sets']] == list(SPEC)
    assert s['groups']['gaussian_noise'] == dict(
        sets=['gaussian_noise_s3', 'gaussian_noise_s5'], by_severity={'3': 60.0, '5': 20.0},
        mean=40.0)
    assert s['groups']['cv_digits']['mean'] == 25.0
    assert 'id' not in s['groups']


def test_metric_in_evaluator(tmp_path):
    ev = Evaluator(METRICS.build(dict(type='IDOODAccuracy', out_dir=str(tmp_path), tag='toy')))
    ev.dataset_meta = dict(classes=tuple('abcdefghij'), id_set='id')
    data = batch(SPEC)
    for i in range(0, len(data), 8):  # several batches
        ev.process(data[i:i + 8])
    m = ev.evaluate(len(data))
    assert m['idood/id'] == pytest.approx(90.0)
    assert m['idood/ood_mean'] == pytest.approx(46.25)
    assert m['idood/ood_worst'] == pytest.approx(20.0)
    assert m['idood/gaussian_noise_s3'] == pytest.approx(60.0)
    assert m['idood/rotate_s3'] == pytest.approx(80.0)
    assert m['idood/gaussian_noise_mean'] == pytest.approx(40.0)
    assert m['idood/rotate_mean'] == pytest.approx(80.0)
    assert m['idood/cv_digits'] == pytest.approx(25.0)
    assert 'idood/cv_digits_mean' not in m  # a single set that is its own group
    assert len(m) == 3 + 4 + 2  # summaries, OOD sets (idood/id is the ID set), group means

    js = json.load(open(tmp_path / 'results.json'))
    assert js['tag'] == 'toy' and js['id_set'] == 'id' and js['metric'] == 'top-1 accuracy (%)'
    assert js['id'] == pytest.approx(90.0) and js['ood_mean'] == pytest.approx(46.25)
    assert [(s['name'], s['num_images'], s['correct']) for s in js['sets']] == [
        (k, n, c) for k, (n, c) in SPEC.items()]
    assert js['groups']['gaussian_noise']['by_severity'] == {'3': 60.0, '5': 20.0}
    rows = md_rows((tmp_path / 'results.md').read_text())
    assert ['set', 's3', 's5', 'mean', 'images'] in rows
    assert ['ID: id', '', '', '90.00', '10'] in rows
    assert ['gaussian_noise', '60.00', '20.00', '40.00', '20'] in rows
    assert ['rotate', '80.00', '', '80.00', '5'] in rows
    assert ['**OOD mean** (4 sets)', '', '', '**46.25**', '29'] in rows
    assert ['gaussian_noise_s5', 'gaussian_noise', '5', '10', '2', '20.00'] in rows


def test_metric_val_mode_without_set_names(tmp_path):
    """A plain ID val set (no set_name): everything is the ID set; no OOD keys; no files."""
    metric = IDOODAccuracy(save_files=False, out_dir=str(tmp_path))
    metric.dataset_meta = dict(classes=tuple('abcdefghij'))
    data = [sample(None, i % 10 if i < 7 else 0, i % 10).to_dict() for i in range(8)]
    metric.process(None, data)
    m = metric.evaluate(8)
    assert m == {'idood/id': pytest.approx(87.5)}
    assert not list(tmp_path.iterdir())


def test_metric_uses_dataset_meta_order_and_groups(tmp_path):
    metric = IDOODAccuracy(out_dir=str(tmp_path), prefix='x')
    metric.dataset_meta = dict(id_set='clean', idood_sets=[
        dict(name='clean', group='clean', severity=None, size=2),
        dict(name='b', group='blur', severity=1, size=2),
        dict(name='a', group='blur', severity=2, size=2)])
    data = [sample(n, p, 0).to_dict() for n, p in
            [('a', 0), ('a', 1), ('clean', 0), ('clean', 0), ('b', 1), ('b', 1)]]
    metric.process(None, data)
    m = metric.evaluate(len(data))
    assert m == {'x/id': 100.0, 'x/ood_mean': 25.0, 'x/ood_worst': 0.0, 'x/clean': 100.0,
                 'x/b': 0.0, 'x/a': 50.0, 'x/blur_mean': 25.0}
    js = json.load(open(tmp_path / 'results.json'))
    assert [s['name'] for s in js['sets']] == ['clean', 'b', 'a']
    assert js['groups']['blur']['by_severity'] == {'1': 0.0, '2': 50.0}


def test_concat_dataset_checks(tmp_path):
    x, y = make_images(20, 0)
    write_idx(tmp_path / 't10k-images-idx3-ubyte', x, 'images', False)
    write_idx(tmp_path / 't10k-labels-idx1-ubyte', y, 'labels', False)
    cfg = dict(type='FashionMNISTIdx', data_root=str(tmp_path), split='test',
               serialize_data=False)
    with pytest.raises(ValueError, match='id_set'):
        IDOODConcatDataset(dict(clean=cfg, other=cfg), id_set='id')
    with pytest.raises(ValueError, match='classes'):
        IDOODConcatDataset(dict(id=cfg, other=dict(cfg, classes=list('abcdefghij'))))
    ds = DATASETS.build(dict(type='IDOODConcatDataset', datasets=[cfg, cfg],
                             set_names=['id', 'shifted'], groups=dict(shifted='natural')))
    assert len(ds) == 40 and ds.set_name_of(25) == 'shifted'
    assert ds[25]['set_name'] == 'shifted' and ds[25]['gt_label'] == y[5]
    assert ds.metainfo['idood_sets'][1] == dict(name='shifted', group='natural', severity=None,
                                                size=20)


@MODELS.register_module(force=True)
class _SetOracle(BaseModel):
    """Right on the ID set, always class 0 elsewhere (so OOD accuracy = share of class 0)."""

    def __init__(self):
        super().__init__(data_preprocessor=dict(type='ClsDataPreprocessor'))
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        for ds in data_samples:
            gt = int(ds.gt_label[0])
            ds.set_pred_label(gt if ds.get('set_name', 'id') == 'id' else 0)
        return data_samples


def test_runner_test_loop_writes_results(tmp_path):
    """End to end through mmengine's Runner: val loop (ID only) and test loop (ID + OOD),
    the metric, and the files in the work dir."""
    from mmengine.runner import Runner
    root = tmp_path / 'data'
    root.mkdir()
    x, y = make_images(40, 0)  # 4 per class
    write_idx(root / 't10k-images-idx3-ubyte.gz', x, 'images', True)
    write_idx(root / 't10k-labels-idx1-ubyte.gz', y, 'labels', True)
    work = tmp_path / 'work'
    pipeline = [dict(type='Resize', scale=32), dict(type='PackInputs')]
    runner = Runner(
        model=dict(type='_SetOracle'),
        work_dir=str(work),
        test_dataloader=dict(
            batch_size=16, num_workers=0, collate_fn=dict(type='default_collate'),
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='FashionMNISTIDOOD', data_root=str(root), subset=20,
                         corruptions=['contrast', 'rotate'], severities=[2, 4],
                         cache_dir=str(tmp_path / 'cache'),
                         pipeline=pipeline)),
        test_evaluator=dict(type='IDOODAccuracy', tag='oracle'),
        test_cfg=dict(type='TestLoop'),
        # per-epoch validation on the plain ID set: no set_name, no files
        val_dataloader=dict(
            batch_size=16, num_workers=0, collate_fn=dict(type='default_collate'),
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='FashionMNISTIdx', data_root=str(root), split='test',
                         pipeline=pipeline)),
        val_evaluator=dict(type='IDOODAccuracy', save_files=False),
        val_cfg=dict(type='ValLoop'),
        default_scope='mmpretrain',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING')
    assert runner.val() == {'idood/id': 100.0}
    assert not osp.exists(work / 'results.json')
    m = runner.test()
    assert m['idood/id'] == pytest.approx(100.0)
    assert m['idood/ood_mean'] == pytest.approx(10.0)  # class 0 is 2 of the 20 images
    assert m['idood/contrast_s4'] == pytest.approx(10.0)
    js = json.load(open(work / 'results.json'))
    assert js['tag'] == 'oracle' and js['num_ood_sets'] == 4
    assert [s['num_images'] for s in js['sets']] == [20] * 5
    assert osp.isfile(work / 'results.md')
