"""tools/clip_zeroshot_head.py on a randomly initialised tiny CLIP (no weights exist offline).

Checks that (1) the tokenizer is OpenAI CLIP's BPE, (2) the text tower is causal and reads the
end-of-text token, (3) the head rows are logit_scale x unit vectors built from the template
means, (4) the written classifier checkpoint loads into an mmpretrain ``ImageClassifier`` with
``CLIPClsHead`` without missing/unexpected keys, and its logits equal CLIP's zero-shot formula
``logit_scale * normalize(visual_proj(visual(x))) @ normalize(text)^T`` computed independently,
(5) split-file class names and the ``--head-only`` fragment.
"""
import importlib.util
import math
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location(
        'clip_zeroshot_head', osp.join(REPO, 'tools', 'clip_zeroshot_head.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOOL = _tool()

VIT_ARCH = dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64)


def _tiny_vit():
    from mmengine.registry import init_default_scope
    from mmpretrain.models import VisionTransformer
    init_default_scope('mmpretrain')  # QuickGELU is built from mmpretrain's registry
    torch.manual_seed(0)
    vit = VisionTransformer(arch=VIT_ARCH, img_size=32, patch_size=16, drop_rate=0.0,
                            pre_norm=True, final_norm=True, out_type='cls_token',
                            norm_cfg=dict(type='LN', eps=1e-5),
                            layer_cfgs=dict(act_cfg=dict(type='QuickGELU')))
    vit.eval()  # mmpretrain's ViT.train() returns None
    return vit


def _tiny_clip_state_dict():
    """mmpretrain-style CLIP keys: visual.*, visual_proj.proj, and the text tower."""
    torch.manual_seed(1)
    text = TOOL.CLIPTextTower(vocab_size=49408, context_length=16, width=64, layers=2, heads=1,
                              embed_dim=16)
    for p in text.parameters():
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        text.logit_scale.fill_(math.log(1 / 0.07))
    sd = {k: v.detach().clone() for k, v in text.state_dict().items()}
    sd.update({f'visual.{k}': v.clone() for k, v in _tiny_vit().state_dict().items()})
    sd['visual_proj.proj'] = torch.randn(32, 16) * 32 ** -0.5
    return sd


@pytest.fixture(scope='module')
def clip_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp('clip') / 'tiny_clip.pth'
    torch.save(_tiny_clip_state_dict(), path)
    return str(path)


def test_tokenizer_is_openai_clip_bpe():
    tok = TOOL.tokenize(['a photo of a dog.'], context_length=16)
    assert tok.shape == (1, 16)
    assert tok[0, 0].item() == 49406  # <|startoftext|>
    n = int((tok[0] > 0).sum())
    assert tok[0, n - 1].item() == 49407  # <|endoftext|>, the highest id
    assert int(tok[0].argmax()) == n - 1
    assert (tok[0, n:] == 0).all()


def test_text_tower_is_causal(clip_ckpt):
    sd = TOOL.load_clip_state_dict(clip_ckpt)
    tower = TOOL.CLIPTextTower.from_state_dict(sd)
    assert len(tower.transformer.resblocks) == 2 and tower.context_length == 16
    tok = TOOL.tokenize(['a photo of a cat.'], 16)
    n = int((tok[0] > 0).sum())
    tok2 = tok.clone()
    tok2[0, n:] = 7  # tokens after the end-of-text token must not matter (causal mask)
    with torch.no_grad():
        a, b = tower(tok), tower(tok2)
    assert torch.allclose(a, b, atol=1e-6)
    tok3 = tok.clone()
    tok3[0, 1] = 1000 if int(tok3[0, 1]) != 1000 else 1001  # a token before it does
    with torch.no_grad():
        assert not torch.allclose(a, tower(tok3), atol=1e-4)


def test_zeroshot_head_and_classifier(clip_ckpt, tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmdigrap  # noqa: F401  (registers CLIPClsHead)

    classes = tmp_path / 'classes.txt'
    classes.write_text('cat\ndog\nsea turtle\n')
    templates = tmp_path / 'templates.txt'
    templates.write_text('a photo of a {}.\na drawing of the {}.\n')
    out = tmp_path / 'clf.pth'
    ckpt = TOOL.main([clip_ckpt, str(out), '--classes', str(classes), '--templates',
                      str(templates), '--device', 'cpu'])
    saved = torch.load(out, map_location='cpu', weights_only=False)
    sd = saved['state_dict']
    assert set(sd) == set(ckpt['state_dict'])
    w = sd['head.fc.weight']
    assert w.shape == (3, 16) and torch.equal(sd['head.fc.bias'], torch.zeros(3))
    scale = 1 / 0.07
    assert saved['meta']['logit_scale'] == pytest.approx(scale, rel=1e-5)
    assert torch.allclose(w.norm(dim=1), torch.full((3, ), scale), rtol=1e-5)

    # the head rows are the normalised means of the normalised template embeddings
    clip_sd = TOOL.load_clip_state_dict(clip_ckpt)
    tower = TOOL.CLIPTextTower.from_state_dict(clip_sd)
    with torch.no_grad():
        rows = []
        for c in ['cat', 'dog', 'sea turtle']:
            e = tower(TOOL.tokenize([f'a photo of a {c}.', f'a drawing of the {c}.'], 16))
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(0)
            rows.append(m / m.norm())
        text = torch.stack(rows)
    assert torch.allclose(w, scale * text, atol=1e-5)

    # the classifier built from the checkpoint is CLIP zero-shot
    init_default_scope('mmpretrain')
    clf = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch=VIT_ARCH, img_size=32, patch_size=16,
                      drop_rate=0.0, pre_norm=True, final_norm=True, out_type='cls_token',
                      norm_cfg=dict(type='LN', eps=1e-5),
                      layer_cfgs=dict(act_cfg=dict(type='QuickGELU'))),
        head=dict(type='CLIPClsHead', num_classes=3, in_channels=32, proj_channels=16)))
    clf.eval()
    missing, unexpected = clf.load_state_dict(sd, strict=False)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 32, 32)
    visual = _tiny_vit()
    visual.load_state_dict({k[len('visual.'):]: v for k, v in clip_sd.items()
                            if k.startswith('visual.')})
    with torch.no_grad():
        logits = clf(x, mode='tensor')
        img = visual(x)[-1] @ clip_sd['visual_proj.proj']
        img = img / img.norm(dim=-1, keepdim=True)
        expected = scale * img @ text.t()
    assert torch.allclose(logits, expected, atol=1e-4)


def test_head_only_fragment_and_split_file_classes(clip_ckpt, tmp_path):
    split = tmp_path / 'real_train.txt'
    split.write_text('real/aircraft_carrier/real_001_000001.jpg 0\n'
                     'real/zebra/real_345_000003.jpg 2\n'
                     'real/aircraft_carrier/real_001_000002.jpg 0\n'
                     'real/the_eiffel_tower/real_300_000001.jpg 1\n')
    assert TOOL.read_class_names(str(split)) == ['aircraft carrier', 'the eiffel tower', 'zebra']
    out = tmp_path / 'head.pth'
    TOOL.main([clip_ckpt, str(out), '--classes', str(split), '--templates', 'simple',
               '--head-only', '--device', 'cpu'])
    sd = torch.load(out, map_location='cpu', weights_only=False)['state_dict']
    assert set(sd) == {'head.proj', 'head.fc.weight', 'head.fc.bias'}
    assert sd['head.fc.weight'].shape == (3, 16)


def test_builtin_class_and_template_lists():
    assert len(TOOL.read_class_names('imagenet')) == 1000
    assert len(TOOL.get_templates('openai_imagenet')) == 80
    assert len(TOOL.get_templates('openai_imagenet_sub')) == 7
    assert TOOL.get_templates('simple')[0]('cat') == 'a photo of a cat.'
    with pytest.raises(ValueError):
        TOOL.get_templates('nope')
    with pytest.raises(FileNotFoundError):
        TOOL.read_class_names('/nonexistent/classes.txt')


def test_not_a_clip_checkpoint(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': {'backbone.x': torch.zeros(1)}}, bad)
    with pytest.raises(KeyError, match='not a CLIP checkpoint'):
        TOOL.load_clip_state_dict(str(bad))
