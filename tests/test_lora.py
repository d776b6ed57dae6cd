"""LoRA on the fmnist task: ``FullStateLoRAModel`` (mmdigrap/models/lora.py) and the configs
``configs/embedded/dinov2-s-lora_{ft,digrap}_1xb8-300it_fmnist-56px.py``.

The real configs, with the ViT shrunk (2 blocks of 32 channels, 28 px = 2x2 patches) and no
pre-trained file: a plain LP checkpoint loads into the LoRA model with equal logits, only the
adapters train, checkpoints round-trip through mmengine's ``Runner.load_checkpoint`` (which strips
``module.``), DiGraP with ``anchor='zero'`` sees d = theta, WiSE-FT's LoRA theta0 interpolates
the merged weights, and train (2 iterations from the LP) + test through the Runner on fake
Fashion-MNIST files gives the same accuracy in and out of the training process.
"""
import copy
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
LORA = {m: osp.join(REPO, f'configs/embedded/dinov2-s-lora_{m}_1xb8-300it_fmnist-56px.py')
        for m in ('ft', 'digrap')}
LP = osp.join(REPO, 'configs/embedded/dinov2-s_lp_1xb8-300it_fmnist-56px.py')
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
IMG = 28


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _shrink(model_cfg):
    """The fmnist ImageClassifier config, small and without its pre-trained file."""
    bb = model_cfg['backbone']
    bb.update(arch=dict(ARCH), img_size=IMG, init_cfg=None)
    if 'frozen_stages' in bb:  # the LP config freezes all 12 blocks: all of these
        bb['frozen_stages'] = ARCH['num_layers']
    model_cfg['head']['in_channels'] = ARCH['embed_dims']
    return model_cfg


def _cfg(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    model = copy.deepcopy(cfg.model.to_dict())
    _shrink(model['module'] if model['type'] == 'FullStateLoRAModel' else model)
    cfg.model = model
    return cfg


def _build(path):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = _cfg(path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def lp_ckpt(tmp_path_factory):
    """A plain LP-style checkpoint (ImageClassifier keys, random non-trivial weights)."""
    torch.manual_seed(0)
    lp = _build(LP)
    with torch.no_grad():
        for p in lp.parameters():
            p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp('lp') / 'epoch_1.pth'
    torch.save(dict(state_dict=lp.state_dict(), meta=dict(epoch=1)), path)
    return str(path), lp.eval()


def _load(model, path):
    """As ``Runner.load_checkpoint`` loads ``load_from`` (non-strict, ``^module.`` stripped)."""
    from mmengine.runner.checkpoint import load_checkpoint
    load_checkpoint(model, path, map_location='cpu', strict=False,
                    revise_keys=[(r'^module.', '')])
    return model


def _images(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, IMG, IMG, generator=g)


@pytest.mark.parametrize('method', ['ft', 'digrap'])
def test_lp_checkpoint_loads_with_equal_logits(method, lp_ckpt):
    path, lp = lp_ckpt
    lora = _load(_build(LORA[method]), path).eval()
    x = _images()
    with torch.no_grad():
        assert torch.equal(lora(x, mode='tensor'), lp(x, mode='tensor'))
    state = lora.state_dict()
    for k, v in lp.state_dict().items():  # every LP weight (backbone + head) is in the model
        assert torch.equal(state[lora.wrapped_key(k)], v), k
    assert torch.equal(lora.module.head.fc.weight, lp.head.fc.weight)
    # lora_up starts at 0, lora_down at a Kaiming init: the wrapped model IS the LP model
    ups = [v for k, v in state.items() if '.lora_up.' in k]
    downs = [v for k, v in state.items() if '.lora_down.' in k]
    assert len(ups) == len(downs) == 2 * ARCH['num_layers']
    assert all(not u.any() for u in ups) and all(d.abs().sum() > 0 for d in downs)


def test_only_the_adapters_of_every_attention_layer_train():
    lora = _build(LORA['ft'])
    trainable = sorted(n for n, p in lora.named_parameters() if p.requires_grad)
    want = sorted(f'module.backbone.layers.{i}.attn.{layer}.lora_{ud}.weight'
                  for i in range(ARCH['num_layers']) for layer in ('qkv', 'proj')
                  for ud in ('down', 'up'))
    assert trainable == want  # the head (linear-probed) and the whole backbone stay frozen
    assert lora.lora_layers == {f'backbone.layers.{i}.attn.{n}'
                                for i in range(ARCH['num_layers']) for n in ('qkv', 'proj')}
    c, r = ARCH['embed_dims'], 8
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == \
        ARCH['num_layers'] * (r * c + 3 * c * r + r * c + c * r)
    blk = lora.module.backbone.layers[0].attn.qkv
    assert (blk.scaling, blk.lora_dropout.p) == (2.0, 0.05)  # alpha 16 / r 8, dropout 0.05
    # the real ViT-S/14: 12 blocks x (qkv 8x384 + 1152x8, proj 8x384 + 384x8)
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    full = copy.deepcopy(Config.fromfile(LORA['ft']).model.to_dict())
    full['module']['backbone']['init_cfg'] = None
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        vit_s = MODELS.build(full)
    assert sum(p.numel() for p in vit_s.parameters() if p.requires_grad) == 221_184


def test_checkpoints_are_complete_and_round_trip(lp_ckpt, tmp_path):
    path, lp = lp_ckpt
    lora = _load(_build(LORA['ft']), path)
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    state = lora.state_dict()
    assert len(state) == len(lp.state_dict()) + 4 * ARCH['num_layers']  # + A, B per layer
    ckpt = tmp_path / 'lora.pth'
    torch.save(dict(state_dict=state), ckpt)
    again = _load(_build(LORA['ft']), str(ckpt))  # 'module.' stripped, mapped back
    for k, v in again.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = _images()
    with torch.no_grad():
        assert torch.equal(again.eval()(x, mode='tensor'), lora.eval()(x, mode='tensor'))
    # strict loading still names a real mismatch (not hidden as LoRAModel's hook hides it)
    with pytest.raises(RuntimeError, match='bogus'):
        _build(LORA['ft']).load_state_dict(dict(lp.state_dict(), bogus=torch.zeros(1)))
    # and a plain checkpoint is complete for it under strict loading
    _build(LORA['ft']).load_state_dict(lp.state_dict(), strict=True)


def test_mmpretrain_lora_model_loses_the_lp_weights(lp_ckpt):
    """Why the configs use FullStateLoRAModel: mmpretrain's LoRAModel loads nothing of a plain
    checkpoint and drops its own adapters under the Runner's ``revise_keys``."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    path, lp = lp_ckpt
    cfg = _cfg(LORA['ft']).model
    cfg['type'] = 'LoRAModel'
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        plain_lora = MODELS.build(cfg)
    _load(plain_lora, path)
    assert not torch.equal(plain_lora.module.head.fc.weight, lp.head.fc.weight)


def _digrap_wrapper(model, **digrap):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(LORA['digrap']).optim_wrapper.to_dict()
    cfg.pop('clip_grad')  # the raw gradient reaches DiGraP (to compare <g, d> below)
    cfg['digrap'].update(digrap)
    return build_optim_wrapper(model, cfg)


def _loss(model, seed):
    from mmpretrain.structures import DataSample
    data = dict(inputs=[(_images(2, seed)[i] * 40 + 128).clamp(0, 255).to(torch.uint8)
                        for i in range(2)],
                data_samples=[DataSample().set_gt_label(seed + i) for i in range(2)])
    data = model.data_preprocessor(data, True)
    return model(**data, mode='loss')['loss']


def test_digrap_zero_anchor_sees_d_equal_theta(lp_ckpt):
    path, _ = lp_ckpt
    model = _load(_build(LORA['digrap']), path).train()
    ow = _digrap_wrapper(model)
    opt = ow.optimizer
    assert opt.anchor_policy.mode == 'zero' and opt.mu == 0.5
    managed = {n for n, p, ex in opt.managed_parameters() if not ex and p.requires_grad}
    assert managed == {n for n, p in model.named_parameters() if p.requires_grad}
    for step in range(2):
        ow.backward(_loss(model, step))
        before = {n: (p.detach().clone(), p.grad.detach().clone())
                  for n, p in model.named_parameters() if p.requires_grad}
        ow.step()
        ow.zero_grad()
        stats = opt.last_stats
        names = [opt.param_name(p) for p in stats['params']]
        assert sorted(names) == sorted(before)
        for i, n in enumerate(names):
            theta, g = before[n]
            # d = theta (anchor 0), never theta - theta_start: lora_down is away from 0 at
            # step 1, where a 'pretrained' anchor would give d = 0
            torch.testing.assert_close(stats['sq_dist'][i], theta.double().square().sum().to(
                stats['sq_dist'].dtype), rtol=1e-5, atol=1e-12)
            torch.testing.assert_close(stats['dot'][i], (g.double() * theta.double()).sum().to(
                stats['dot'].dtype), rtol=1e-4, atol=1e-10)
            if step == 0 and '.lora_down.' in n:
                assert stats['sq_dist'][i] > 0
    assert 'anchor' not in opt.state[model.module.backbone.layers[0].attn.qkv.lora_down.weight]


def test_wise_ft_lora_theta0_interpolates_the_merged_weights(lp_ckpt):
    from mmdigrap.engine.wise_ft import interpolate_state_dicts, lora_theta0
    path, _ = lp_ckpt
    start = _load(_build(LORA['ft']), path)
    theta0 = {k: v.clone() for k, v in start.state_dict().items()}
    ft = _load(_build(LORA['ft']), path)
    with torch.no_grad():
        for n, p in ft.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    theta_ft = {k: v.clone() for k, v in ft.state_dict().items()}
    t0 = lora_theta0(theta0, theta_ft)
    key = 'module.backbone.layers.1.attn.proj'
    assert not t0[key + '.lora_up.weight'].any()
    assert torch.equal(t0[key + '.lora_down.weight'], theta_ft[key + '.lora_down.weight'])
    layer = ft.module.backbone.layers[1].attn.proj

    def merged(state):
        w0 = state[key + '.original_layer.weight']
        return w0 + layer.scaling * state[key + '.lora_up.weight'] @ \
            state[key + '.lora_down.weight']

    w0 = theta0[key + '.original_layer.weight']  # the start model's weight (lora_up = 0)
    assert not theta0[key + '.lora_up.weight'].any()
    for alpha in (0.0, 0.25, 0.5, 1.0):
        mix = interpolate_state_dicts(t0, theta_ft, alpha)
        torch.testing.assert_close(merged(mix), alpha * w0 + (1 - alpha) * merged(theta_ft))
    # naive interpolation of A and B separately is not WiSE-FT of the merged weights
    naive = interpolate_state_dicts(theta0, theta_ft, 0.5)
    assert not torch.allclose(merged(naive), 0.5 * w0 + 0.5 * merged(theta_ft), atol=1e-4)
    plain = lora_theta0({'a': torch.ones(1)}, {'a': torch.zeros(1)})  # no adapters: a copy
    assert list(plain) == ['a'] and torch.equal(plain['a'], torch.ones(1))


@pytest.fixture(autouse=True)
def _fast_config_dump(monkeypatch):
    """The Runner dumps its config through yapf (slow on a loaded CPU); a repr is enough."""
    from mmengine.config import Config
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))


@pytest.mark.parametrize('method', ['digrap'])
def test_runner_trains_from_the_lp_and_its_checkpoint_tests_the_same(method, lp_ckpt, tmp_path):
    """``tools/train.py`` (2 iterations, load_from = the plain LP checkpoint) then
    ``tools/test.py`` on its checkpoint, as the benchmark runs them: the same Runner path."""
    from _tiny import write_fake_fmnist
    from mmengine.runner import Runner
    path, lp = lp_ckpt

    def cfg_for(work, load_from):
        cfg = _cfg(LORA[method])
        cfg.work_dir = str(work)
        cfg.load_from = load_from
        for name, n in (('train_dataloader', 16), ('val_dataloader', 10),
                        ('test_dataloader', 10)):
            ds = cfg[name].dataset
            ds.data_root = str(tmp_path / 'fmnist')
            ds.subset = n
            ds.pipeline[0].scale = IMG
            cfg[name].batch_size = 8
        cfg.train_dataloader.dataset.val_size = 20  # of the 80 fake train images
        cfg.val_dataloader.dataset.val_size = 20
        cfg.test_dataloader.dataset.update(corruptions=['gaussian_noise'], severities=[3],
                                           cache_dir=str(tmp_path / 'fmnist_c'))
        cfg.param_scheduler = []
        cfg.custom_hooks[0]['log_interval'] = 1
        cfg.log_level = 'WARNING'
        cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
                           dist_cfg=dict(backend='gloo'))
        return cfg

    (tmp_path / 'fmnist').mkdir(exist_ok=True)
    write_fake_fmnist(str(tmp_path / 'fmnist'))
    runner = Runner.from_cfg(cfg_for(tmp_path / 'train', path))
    runner.train()
    model = runner.model
    moved = [n for n, p in model.named_parameters() if '.lora_up.' in n and p.any()]
    assert moved  # the adapters trained (2 steps)
    assert torch.equal(model.module.head.fc.weight, lp.head.fc.weight)  # frozen LP head
    in_process = runner.test()
    ckpt = osp.join(str(tmp_path / 'train'), 'epoch_1.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    assert set(saved) == set(model.state_dict())  # every tensor, not only the adapters
    tester = Runner.from_cfg(cfg_for(tmp_path / 'test', ckpt))
    again = tester.test()
    for k, v in model.state_dict().items():
        assert torch.equal(tester.model.state_dict()[k], v), k
    assert again == in_process
