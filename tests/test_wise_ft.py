"""WiSE-FT: the interpolation, its errors, and WiSEFTHook on the toy model (CPU, seconds)."""
import json
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from mmengine.runner import Runner

import mmdigrap  # noqa: F401
from mmdigrap.engine.wise_ft import (
    WiSEFTHook,
    interpolate_state_dicts,
    parse_alphas,
    pretrained_prefixes,
    select_alpha,
    wise_ft_markdown,
)

import _toy  # noqa: F401  (registers the toy model / dataset / metric)
from test_evaluation import md_rows


def _sd(**kw):
    return OrderedDict((k, torch.as_tensor(v)) for k, v in kw.items())


# ----------------------------------------------------------------------------- interpolation
def test_interpolation_values_and_convention():
    theta0 = _sd(w=[[1.0, 2.0], [3.0, 4.0]], b=[0.0, 10.0])
    ft = _sd(w=[[5.0, 6.0], [7.0, 8.0]], b=[4.0, 2.0])
    # alpha weighs the PRE-TRAINED model: 0 -> fine-tuned, 1 -> pre-trained (exactly)
    out0 = interpolate_state_dicts(theta0, ft, 0.0)
    out1 = interpolate_state_dicts(theta0, ft, 1.0)
    for k in ft:
        assert torch.equal(out0[k], ft[k]) and torch.equal(out1[k], theta0[k])
    out = interpolate_state_dicts(theta0, ft, 0.25)
    assert torch.allclose(out['w'], 0.25 * theta0['w'] + 0.75 * ft['w'])
    assert torch.allclose(out['b'], torch.tensor([3.0, 4.0]))
    assert list(out) == list(ft)
    # inputs untouched, outputs are new tensors
    assert torch.equal(ft['w'], torch.tensor([[5.0, 6.0], [7.0, 8.0]]))
    assert out0['w'].data_ptr() != ft['w'].data_ptr()


def test_interpolation_skip_ints_and_dtypes():
    theta0 = _sd(**{'backbone.w': [0.0, 0.0], 'n': 3})
    ft = OrderedDict([('backbone.w', torch.tensor([2.0, 4.0], dtype=torch.float16)),
                      ('n', torch.tensor(7)),
                      ('head.fc.weight', torch.tensor([1.0, 1.0]))])
    out = interpolate_state_dicts(theta0, ft, 0.5, skip=[r'^head\.'])
    assert out['backbone.w'].dtype == torch.float16
    assert torch.equal(out['backbone.w'], torch.tensor([1.0, 2.0], dtype=torch.float16))
    assert out['n'].item() == 7  # integer buffer: kept from the fine-tuned model
    assert torch.equal(out['head.fc.weight'], ft['head.fc.weight'])  # skipped, absent in theta0
    # a callable skip works too, and a skipped key present in theta0 is still kept
    theta0['head.fc.weight'] = torch.zeros(2)
    out = interpolate_state_dicts(theta0, ft, 1.0, skip=lambda k: k.startswith('head.'))
    assert torch.equal(out['head.fc.weight'], ft['head.fc.weight'])


def test_interpolation_errors():
    theta0 = _sd(a=[1.0, 2.0], b=[1.0])
    with pytest.raises(ValueError, match='shape mismatch'):
        interpolate_state_dicts(theta0, _sd(a=[1.0, 2.0, 3.0], b=[1.0]), 0.5)
    with pytest.raises(KeyError, match=r'Missing from theta0.*head\.w'):
        interpolate_state_dicts(theta0, _sd(a=[1.0, 2.0], b=[1.0], **{'head.w': [1.0]}), 0.5)
    with pytest.raises(KeyError, match='not in the fine-tuned model: b'):
        interpolate_state_dicts(theta0, _sd(a=[1.0, 2.0]), 0.5)
    for bad in (-0.1, 1.5, 'x'):
        with pytest.raises(ValueError, match='alpha'):
            interpolate_state_dicts(theta0, theta0, bad)
    with pytest.raises(ValueError, match='duplicate'):
        parse_alphas('0,0.5,0.5')
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        parse_alphas([0.0, 2.0])
    assert parse_alphas('0, 0.25,1') == [0.0, 0.25, 1.0]


def test_select_alpha_rules_and_markdown():
    rows = [dict(alpha=0.0, metrics={'acc': 80.0, 'loss': 0.5}),
            dict(alpha=0.5, metrics={'acc': 85.0, 'loss': 0.7}),
            dict(alpha=1.0, metrics={'acc': 85.0, 'loss': 0.2})]
    sel = select_alpha(rows)  # first key, greater; ties -> the earlier row
    assert sel['alpha'] == 0.5 and sel['metric'] == 'acc' and sel['index'] == 1
    assert select_alpha(rows, 'loss', 'less')['alpha'] == 1.0
    with pytest.raises(ValueError, match='not in the validation'):
        select_alpha(rows, 'nope')
    md = wise_ft_markdown(rows, sel)
    assert md_rows(md) == [['alpha (weight of theta0)', 'val acc'], ['0', '80'],
                           ['0.5', '85 **(selected)**'], ['1', '85']]
    assert 'alpha = 0 is the fine-tuned' in md
    with pytest.raises(ValueError, match="select_on must be 'val'"):
        WiSEFTHook(select_on='test')


def test_pretrained_prefixes():
    from mmengine.model import BaseModule

    class Net(BaseModule):
        def __init__(self):
            super().__init__()
            self.backbone = BaseModule(init_cfg=dict(type='Pretrained', checkpoint='x.pth'))
            self.backbone.fc = torch.nn.Linear(2, 2)
            self.head = BaseModule(init_cfg=dict(type='Normal', layer='Linear'))
            self.head.fc = torch.nn.Linear(2, 2)

    assert pretrained_prefixes(Net()) == ['backbone.']


# -------------------------------------------------------------------------------- the hook
# seed 2: a regression task related to, but not the same as, the training one (seed 0, 64
# samples), so the best alpha on it lies strictly between 0 and 1 (0.5 here)
VAL_LOADER = dict(dataset=dict(type='MMDiGraPToyDataset', num=64, seed=2),
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'), batch_size=16, num_workers=0)
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def runner_cfg(work_dir, epochs=2, **over):
    cfg = dict(
        model=dict(type='MMDiGraPToyModel'),
        work_dir=str(work_dir), experiment_name=f'{osp.basename(str(work_dir))}_{epochs}',
        train_dataloader=dict(dataset=dict(type='MMDiGraPToyDataset', num=64),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'), batch_size=8,
                              num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=100),
        val_dataloader=VAL_LOADER, val_evaluator=dict(type='MMDiGraPToyMetric'), val_cfg=dict(),
        optim_wrapper=dict(type='OptimWrapper',
                           optimizer=dict(type='AdamW', lr=5e-2, weight_decay=0.0)),
        custom_hooks=[dict(type='WiSEFTHook', alphas=ALPHAS, metric='mse', rule='less',
                           skip=[r'^fc2\.bias$'])],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=2),
                           checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmengine', log_level='WARNING')
    cfg.update(over)
    return cfg


def _val_mse(model, state):
    model.load_state_dict(state)
    ds = _toy.ToyDataset(num=64, seed=2)
    with torch.no_grad():
        pred = model(ds.x)
    return float(((pred - ds.y) ** 2).mean())


def test_hook_picks_the_alpha_with_the_best_val_metric(tmp_path):
    runner = Runner.from_cfg(runner_cfg(tmp_path))
    init = OrderedDict((k, v.clone()) for k, v in runner.model.state_dict().items())
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, WiSEFTHook))
    ft = torch.load(osp.join(tmp_path, 'epoch_2.pth'), weights_only=False)['state_dict']
    # theta0 was snapshotted at before_train (= the init here); the last checkpoint is FT
    for k in init:
        assert torch.equal(hook.theta0[k], init[k])
    assert not torch.equal(ft['fc1.weight'], init['fc1.weight'])
    # every alpha evaluated, independently recomputed; the selected one is the argmin
    rows = hook.results['rows']
    assert [r['alpha'] for r in rows] == list(ALPHAS)
    model = _toy.ToyModel()
    mse = {a: _val_mse(model, interpolate_state_dicts(init, ft, a, skip=[r'^fc2\.bias$']))
           for a in ALPHAS}
    for r in rows:
        assert r['metrics']['mse'] == pytest.approx(mse[r['alpha']], rel=1e-5)
    best = min(ALPHAS, key=lambda a: mse[a])
    assert hook.results['selected']['alpha'] == best
    assert 0.0 < best < 1.0  # a real trade-off, not an end point
    # the selected weights are in the model and in wise_ft_best.pth; the skipped bias is FT's
    expect = interpolate_state_dicts(init, ft, best, skip=[r'^fc2\.bias$'])
    saved = torch.load(osp.join(tmp_path, 'wise_ft_best.pth'), weights_only=False)
    assert saved['meta']['wise_ft']['selected']['alpha'] == best
    for k, v in expect.items():
        assert torch.allclose(runner.model.state_dict()[k], v)
        assert torch.allclose(saved['state_dict'][k], v)
    assert torch.equal(saved['state_dict']['fc2.bias'], ft['fc2.bias'])
    with open(osp.join(tmp_path, 'wise_ft.json')) as f:
        assert json.load(f)['selected']['alpha'] == best


def test_hook_resume_restores_theta0_and_needs_val(tmp_path):
    straight = Runner.from_cfg(runner_cfg(tmp_path / 'straight', epochs=2))
    straight.train()
    Runner.from_cfg(runner_cfg(tmp_path / 'resumed', epochs=1)).train()
    resumed = Runner.from_cfg(runner_cfg(
        tmp_path / 'resumed', epochs=2, resume=True,
        load_from=str(tmp_path / 'resumed' / 'epoch_1.pth')))
    resumed.train()
    h_s = next(h for h in straight.hooks if isinstance(h, WiSEFTHook))
    h_r = next(h for h in resumed.hooks if isinstance(h, WiSEFTHook))
    for k in h_s.theta0:
        assert torch.equal(h_s.theta0[k], h_r.theta0[k])
    assert h_r.results['selected']['alpha'] == h_s.results['selected']['alpha']
    no_val = runner_cfg(tmp_path / 'noval', epochs=1, val_dataloader=None, val_evaluator=None,
                        val_cfg=None)
    no_val['train_cfg'].pop('val_interval')
    with pytest.raises(RuntimeError, match='no val loop'):
        Runner.from_cfg(no_val).train()


# ------------------------------------------------------------------------ tools/wise_ft.py
def _load_tool():
    from importlib.util import module_from_spec, spec_from_file_location
    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'wise_ft.py')
    spec = spec_from_file_location('wise_ft_tool', path)
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_post_hoc_on_a_config(tmp_path):
    torch.manual_seed(0)
    theta0 = _toy.ToyModel().state_dict()
    ft = OrderedDict((k, v + 0.5 * torch.randn_like(v)) for k, v in theta0.items())
    torch.save(dict(state_dict=theta0), tmp_path / 'theta0.pth')
    torch.save(dict(state_dict=ft), tmp_path / 'ft.pth')
    loader = "dict(dataset=dict(type='MMDiGraPToyDataset', num=64, seed=2), batch_size=16, " \
             "num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False), " \
             "collate_fn=dict(type='default_collate'))"
    cfg = tmp_path / 'toy_cfg.py'
    cfg.write_text(
        "custom_imports = dict(imports=['_toy'], allow_failed_imports=False)\n"
        "default_scope = 'mmengine'\n"
        f"model = dict(type='MMDiGraPToyModel', init_cfg=dict(type='Pretrained', "
        f"checkpoint='{tmp_path / 'theta0.pth'}'))\n"
        f"val_dataloader = {loader}\nval_evaluator = dict(type='MMDiGraPToyMetric')\n"
        "val_cfg = dict()\n"
        f"test_dataloader = {loader}\ntest_evaluator = dict(type='MMDiGraPToyMetric')\n"
        "test_cfg = dict()\nlog_level = 'WARNING'\n")
    tool = _load_tool()
    out = tool.main([str(cfg), str(tmp_path / 'ft.pth'), '--alphas', '0,0.5,1', '--metric',
                     'mse', '--rule', 'less', '--work-dir', str(tmp_path / 'w'), '--test-all'])
    # theta0 = the config's Pretrained init (every key: the init_cfg is on the model itself)
    assert out['theta0'].startswith('init_cfg Pretrained') and out['kept_finetuned'] == []
    model = _toy.ToyModel()
    ds = _toy.ToyDataset(num=64, seed=2)

    def mse(a):
        model.load_state_dict(interpolate_state_dicts(theta0, ft, a))
        with torch.no_grad():
            return float(((model(ds.x) - ds.y) ** 2).mean())

    for row in out['rows']:
        assert row['metrics']['mse'] == pytest.approx(mse(row['alpha']), rel=1e-5)
    best = min((0.0, 0.5, 1.0), key=mse)
    assert out['selected']['alpha'] == best
    assert set(out['test']) == {'0', '0.5', '1'}
    assert out['test'][f'{best:g}']['metrics']['mse'] == pytest.approx(mse(best), rel=1e-5)
    saved = torch.load(out['checkpoints'][f'{best:g}'], weights_only=False)['state_dict']
    for k, v in interpolate_state_dicts(theta0, ft, best).items():
        assert torch.allclose(saved[k], v)
    assert osp.isfile(tmp_path / 'w' / 'wise_ft.md')
    # --pretrained + --skip: fc2 keeps its fine-tuned value at every alpha
    out = tool.main([str(cfg), str(tmp_path / 'ft.pth'), '--pretrained',
                     str(tmp_path / 'theta0.pth'), '--alphas', '1', '--skip', r'^fc2\.',
                     '--metric', 'mse', '--rule', 'less', '--work-dir', str(tmp_path / 'w2'),
                     '--no-test'])
    assert sorted(out['kept_finetuned']) == ['fc2.bias', 'fc2.weight']
    saved = torch.load(out['checkpoints']['1'], weights_only=False)['state_dict']
    assert torch.equal(saved['fc1.weight'], theta0['fc1.weight'])
    assert torch.equal(saved['fc2.weight'], ft['fc2.weight'])


def test_tool_pretrained_with_another_head_shape(tmp_path):
    """Issue 13.2: a pre-trained checkpoint whose head has another shape (here 5 outputs vs the
    fine-tuned 1, as 1000 vs 10 classes) + ``--skip`` -> exit 0, head kept fine-tuned, the rest
    exact at alpha 0 and 1; without ``--skip`` (or another mismatch) a clear message."""
    torch.manual_seed(1)
    ft = OrderedDict((k, torch.randn_like(v)) for k, v in _toy.ToyModel().state_dict().items())
    pre = OrderedDict((k, torch.randn_like(v)) for k, v in _toy.ToyModel().state_dict().items())
    pre['fc2.weight'], pre['fc2.bias'] = torch.randn(5, 16), torch.randn(5)
    torch.save(dict(state_dict=ft), tmp_path / 'ft.pth')
    torch.save(dict(state_dict=pre), tmp_path / 'pre.pth')
    loader = "dict(dataset=dict(type='MMDiGraPToyDataset', num=16, seed=2), batch_size=16, " \
             "num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False), " \
             "collate_fn=dict(type='default_collate'))"
    cfg = tmp_path / 'toy_cfg.py'
    cfg.write_text(
        "custom_imports = dict(imports=['_toy'], allow_failed_imports=False)\n"
        "default_scope = 'mmengine'\nmodel = dict(type='MMDiGraPToyModel')\n"
        f"val_dataloader = {loader}\nval_evaluator = dict(type='MMDiGraPToyMetric')\n"
        "val_cfg = dict()\nlog_level = 'WARNING'\n")
    tool = _load_tool()

    def run(pretrained, *extra, wd='w'):
        return tool.main([str(cfg), str(tmp_path / 'ft.pth'), '--pretrained', str(pretrained),
                          '--alphas', '0,1', '--metric', 'mse', '--rule', 'less', '--no-test',
                          '--save-all', '--work-dir', str(tmp_path / wd), *extra])

    out = run(tmp_path / 'pre.pth', '--skip', r'^fc2\.')
    assert sorted(out['kept_finetuned']) == ['fc2.bias', 'fc2.weight']
    at = {a: torch.load(out['checkpoints'][a], weights_only=True)['state_dict']
          for a in ('0', '1')}
    for a in ('0', '1'):  # the head keeps its fine-tuned value at every alpha
        assert torch.equal(at[a]['fc2.weight'], ft['fc2.weight'])
        assert torch.equal(at[a]['fc2.bias'], ft['fc2.bias'])
    for k in ('fc1.weight', 'fc1.bias'):  # the backbone: exact at both ends
        assert torch.equal(at['0'][k], ft[k]) and torch.equal(at['1'][k], pre[k])
    # without --skip: a clear message naming the keys, the shapes and the way out
    with pytest.raises(SystemExit, match=r"(?s)shape mismatch.*'fc2\.weight': theta0 \(5, 16\) "
                                         r"vs fine-tuned \(1, 16\).*--skip"):
        run(tmp_path / 'pre.pth', wd='w2')
    # a mismatch outside the skipped keys is still refused, naming that key
    pre['fc1.weight'] = torch.randn(4, 8)
    torch.save(dict(state_dict=pre), tmp_path / 'pre2.pth')
    with pytest.raises(SystemExit, match=r"'fc1\.weight': theta0 \(4, 8\) vs fine-tuned "
                                         r"\(16, 8\)") as err:
        run(tmp_path / 'pre2.pth', '--skip', r'^fc2\.', wd='w3')
    assert 'fc2' not in str(err.value).split('. Keys')[0]
