"""Build CLIP's zero-shot classification head and an mmpretrain classifier checkpoint.

For every class c the head row is ``logit_scale * normalize(mean_t normalize(text(t(c))))``:
the L2-normalised CLIP text embeddings of the prompt templates t filled with the class name,
averaged, normalised again, times CLIP's (exponentiated) logit scale. With
``CLIPClsHead`` (``mmdigrap.models.heads``), whose logits are
``fc(normalize(x @ proj))``, the resulting classifier *is* CLIP zero-shot: the starting point
of WiSE-FT / FTP / TPGM / DiGraP fine-tuning of CLIP ViT-B/16.

The text tower is mmpretrain's CLIP text transformer (``ResidualAttentionBlock``s of
``mmpretrain.models.utils.clip_generator_helper``, token/positional embeddings, ``ln_final``,
``text_projection``), sized from the checkpoint. Tokenisation is OpenAI CLIP's BPE
(the ``SimpleTokenizer`` + vocabulary that ship with mmsegmentation), so no download is needed.

Input: a CLIP checkpoint with mmpretrain's keys (the output of mmpretrain's
``tools/model_converters/openai-clip_to_mmpretrain-clip.py``), or OpenAI's own state dict /
TorchScript ``ViT-B-16.pt`` (converted on the fly by running that converter script).

Output (default): a full ``ImageClassifier`` checkpoint for ``load_from``:
``backbone.*`` (from ``visual.*``), ``head.proj`` (from ``visual_proj.proj``),
``head.fc.weight`` / ``head.fc.bias`` (the zero-shot head). With ``--head-only``: only the
``head.*`` fragment, to merge into a backbone checkpoint yourself.

Examples::

    # ImageNet, the 80 OpenAI templates (mmpretrain's list), CLIP's 1000 class names
    python tools/clip_zeroshot_head.py checkpoints/clip-vit-b16_mmpretrain.pth \\
        checkpoints/clip-vit-b16_in1k-zeroshot.pth --classes imagenet

    # DomainNet: class names from the split file's folder names, in label order
    python tools/clip_zeroshot_head.py checkpoints/clip-vit-b16_mmpretrain.pth \\
        checkpoints/clip-vit-b16_domainnet-zeroshot.pth --classes data/domainnet/real_train.txt
"""
import argparse
import gzip  # noqa: F401  (the tokenizer module needs it; imported here to fail early)
import importlib.util
import math
import os
import os.path as osp
import subprocess
import sys
import tempfile
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

__all__ = ['CLIPTextTower', 'load_clip_state_dict', 'read_class_names', 'get_templates',
           'zeroshot_weights', 'build_classifier_checkpoint', 'main']


def _load_module_from_file(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'{package} is not installed')
    return osp.join(list(spec.submodule_search_locations)[0], *parts)


_TOKENIZER = None


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """OpenAI CLIP tokenisation (start/end-of-text ids 49406/49407, zero padding).

    Uses the ``SimpleTokenizer`` and ``bpe_simple_vocab_16e6.txt.gz`` that ship inside
    mmsegmentation (loaded from its file, so mmseg's package ``__init__`` -- which needs
    mmcv's compiled ops -- is not imported).
    """
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = _load_module_from_file('_mmdigrap_clip_tokenizer',
                                            _package_file('mmseg', 'utils', 'tokenizer.py'))
    return _TOKENIZER.tokenize(list(texts), context_length=context_length)


def get_templates(name: str) -> List[Callable[[str], str]]:
    """Prompt templates: ``openai_imagenet`` (80), ``openai_imagenet_sub`` (7),
    ``openai_cifar100`` (18), ``simple`` ('a photo of a {}.'), or a text file with one
    template per line containing ``{}``."""
    if name == 'simple':
        return [lambda c: f'a photo of a {c}.']
    if osp.isfile(name):
        with open(name) as f:
            lines = [line.rstrip('\n') for line in f if '{}' in line]
        if not lines:
            raise ValueError(f'{name}: no template line contains "{{}}"')
        return [(lambda t: (lambda c: t.format(c)))(t) for t in lines]
    # mmpretrain's prompt lists, read from their file: importing the package
    # `mmpretrain.models.multimodal.clip` needs `transformers`.
    utils = _load_module_from_file(
        '_mmdigrap_clip_prompts',
        _package_file('mmpretrain', 'models', 'multimodal', 'clip', 'utils.py'))
    table = dict(openai_imagenet=utils.OPENAI_IMAGENET_PROMPT,
                 openai_imagenet_sub=utils.OPENAI_IMAGENET_PROMPT_SUB,
                 openai_cifar100=utils.OPENAI_CIFAR100_PROMPT)
    if name not in table:
        raise ValueError(f'unknown templates {name!r}: use one of {sorted(table)}, simple, '
                         'or a file with one template per line')
    return list(table[name])


def read_class_names(spec: str) -> List[str]:
    """Class names in label order.

    ``imagenet``: CLIP's curated ImageNet names (mmpretrain's ``IMAGENET_SIMPLE_CATEGORIES``);
    ``cifar100``; a text file with one name per line; or a split file with
    ``"<domain>/<class>/<image> <label>"`` lines (DomainNet), whose class names are the folder
    names (``_`` -> space) ordered by label.
    """
    if spec in ('imagenet', 'cifar100'):
        from mmpretrain.datasets.categories import CIFAR100_CATEGORIES, IMAGENET_SIMPLE_CATEGORIES
        if spec == 'imagenet':
            return list(IMAGENET_SIMPLE_CATEGORIES)
        return [' '.join(c.split('_')) for c in CIFAR100_CATEGORIES]
    if not osp.isfile(spec):
        raise FileNotFoundError(f'--classes {spec!r}: not imagenet/cifar100 and no such file')
    with open(spec) as f:
        lines = [line.strip() for line in f if line.strip()]
    parts = [line.rsplit(None, 1) for line in lines]
    if all(len(p) == 2 and p[1].lstrip('-').isdigit() and '/' in p[0] for p in parts):
        by_label: Dict[int, str] = {}
        for path, label in parts:
            name = path.replace('\\', '/').split('/')[-2].replace('_', ' ')
            old = by_label.setdefault(int(label), name)
            if old != name:
                raise ValueError(f'{spec}: label {label} is both {old!r} and {name!r}')
        labels = sorted(by_label)
        if labels != list(range(len(labels))):
            raise ValueError(f'{spec}: labels are not 0..{len(labels) - 1}')
        return [by_label[i] for i in labels]
    return lines


def load_clip_state_dict(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """A CLIP checkpoint as mmpretrain keys (``visual.*``, ``visual_proj.proj``, text keys)."""
    try:
        obj = torch.load(path, map_location='cpu', weights_only=False)
    except RuntimeError:  # OpenAI's release file is a TorchScript archive
        obj = torch.jit.load(path, map_location='cpu').state_dict()
    if hasattr(obj, 'state_dict') and not isinstance(obj, dict):
        obj = obj.state_dict()
    sd = obj.get('state_dict', obj) if isinstance(obj, dict) else obj
    if 'visual.conv1.weight' in sd or 'visual.transformer.resblocks.0.ln_1.weight' in sd:
        sd = _convert_openai_clip(sd)
    missing = [k for k in ('token_embedding.weight', 'positional_embedding', 'ln_final.weight',
                           'text_projection', 'logit_scale') if k not in sd]
    if missing:
        raise KeyError(f'{path}: not a CLIP checkpoint, missing {missing}')
    return OrderedDict((k, v) for k, v in sd.items())


def _convert_openai_clip(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """OpenAI CLIP keys -> mmpretrain keys, by running mmpretrain's converter script
    (``tools/model_converters/openai-clip_to_mmpretrain-clip.py SRC DST``) on a temporary copy.

    Raises:
        RuntimeError: the converter failed (its output is in the message).
    """
    script = _package_file('mmpretrain', '.mim', 'tools', 'model_converters',
                           'openai-clip_to_mmpretrain-clip.py')
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = osp.join(tmp, 'openai.pth'), osp.join(tmp, 'mmpretrain.pth')
        torch.save(dict(sd), src)
        proc = subprocess.run([sys.executable, script, src, dst], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f'{script} failed ({proc.returncode}):\n{proc.stdout}'
                               f'{proc.stderr}')
        return torch.load(dst, map_location='cpu', weights_only=True)


class CLIPTextTower(nn.Module):
    """CLIP's text encoder with the checkpoint's key names (mmpretrain ``CLIP`` layout)."""

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int,
                 heads: int, embed_dim: int):
        super().__init__()
        from mmpretrain.models.utils.clip_generator_helper import ResidualAttentionBlock
        mask = torch.full((context_length, context_length), float('-inf')).triu_(1)
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mask) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    @classmethod
    def from_state_dict(cls, sd: Dict[str, torch.Tensor], heads: Optional[int] = None):
        width = sd['ln_final.weight'].shape[0]
        layers = len({k.split('.')[2] for k in sd if k.startswith('transformer.resblocks.')})
        model = cls(vocab_size=sd['token_embedding.weight'].shape[0],
                    context_length=sd['positional_embedding'].shape[0], width=width,
                    layers=layers, heads=heads or max(width // 64, 1),
                    embed_dim=sd['text_projection'].shape[1])
        own = {k: v for k, v in sd.items()
               if k.split('.')[0] in ('token_embedding', 'positional_embedding', 'transformer',
                                      'ln_final', 'text_projection', 'logit_scale')}
        model.load_state_dict(own, strict=True)
        return model.eval()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = x.permute(1, 0, 2)  # NLD -> LND
        for blk in self.transformer.resblocks:
            x = blk(x)
        x = self.ln_final(x.permute(1, 0, 2).float())
        # the end-of-text token has the highest id in each sequence
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


@torch.no_grad()
def zeroshot_weights(tower: CLIPTextTower, class_names: Sequence[str],
                     templates: Sequence[Callable[[str], str]], batch_size: int = 256,
                     device: str = 'cpu', verbose: bool = False) -> torch.Tensor:
    """(num_classes, embed_dim): per-class mean of the normalised template embeddings,
    normalised again (not yet multiplied by the logit scale)."""
    tower = tower.to(device)
    rows = []
    for i, name in enumerate(class_names):
        texts = [t(name) for t in templates]
        tokens = tokenize(texts, tower.context_length)
        feats = torch.cat([tower(tokens[j:j + batch_size].to(device))
                           for j in range(0, len(texts), batch_size)])
        feats = feats / feats.norm(dim=-1, keepdim=True)
        mean = feats.mean(dim=0)
        rows.append((mean / mean.norm()).cpu())
        if verbose and (i + 1) % 50 == 0:
            print(f'  {i + 1}/{len(class_names)} classes', flush=True)
    return torch.stack(rows).float()


def build_classifier_checkpoint(sd: Dict[str, torch.Tensor], class_names: Sequence[str],
                                templates: Sequence[Callable[[str], str]], head_only: bool = False,
                                batch_size: int = 256, device: str = 'cpu',
                                heads: Optional[int] = None, verbose: bool = False) -> dict:
    """The checkpoint dict written by :func:`main` (``state_dict`` + ``meta``)."""
    tower = CLIPTextTower.from_state_dict(sd, heads=heads)
    emb = zeroshot_weights(tower, class_names, templates, batch_size, device, verbose)
    scale = float(sd['logit_scale'].float().exp())
    out = OrderedDict()
    if not head_only:
        out.update((f'backbone.{k[len("visual."):]}', v.clone()) for k, v in sd.items()
                   if k.startswith('visual.'))
        if not any(k.startswith('backbone.') for k in out):
            raise KeyError('the checkpoint has no visual.* keys (use --head-only)')
    if 'visual_proj.proj' in sd:
        out['head.proj'] = sd['visual_proj.proj'].clone().float()
    elif not head_only:
        raise KeyError('the checkpoint has no visual_proj.proj (CLIP visual projection)')
    out['head.fc.weight'] = emb * scale
    out['head.fc.bias'] = torch.zeros(len(class_names))
    meta = dict(num_classes=len(class_names), logit_scale=scale, templates=len(templates),
                embed_dim=emb.shape[1], head_type='CLIPClsHead',
                note='zero-shot head built by tools/clip_zeroshot_head.py')
    return dict(state_dict=out, meta=meta)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('clip_ckpt', help='CLIP checkpoint (mmpretrain keys, or OpenAI state dict / '
                   'TorchScript file)')
    p.add_argument('out', help='output .pth')
    p.add_argument('--classes', default='imagenet',
                   help='imagenet | cifar100 | names file (one per line) | split file '
                   '("<domain>/<class>/<img> <label>" lines)')
    p.add_argument('--templates', default='openai_imagenet',
                   help='openai_imagenet (80) | openai_imagenet_sub (7) | openai_cifar100 | '
                   'simple | file with one template per line containing {}')
    p.add_argument('--head-only', action='store_true',
                   help='write only head.proj / head.fc.* (to merge into a backbone checkpoint)')
    p.add_argument('--heads', type=int, default=None,
                   help='text attention heads (default: width // 64, as OpenAI CLIP)')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    sd = load_clip_state_dict(args.clip_ckpt)
    names = read_class_names(args.classes)
    templates = get_templates(args.templates)
    print(f'{len(names)} classes x {len(templates)} templates on {args.device}', flush=True)
    ckpt = build_classifier_checkpoint(sd, names, templates, head_only=args.head_only,
                                       batch_size=args.batch_size, device=args.device,
                                       heads=args.heads, verbose=True)
    ckpt['meta'].update(classes=args.classes, templates_name=args.templates,
                        source=osp.abspath(args.clip_ckpt))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(ckpt, args.out)
    sd_out = ckpt['state_dict']
    print(f'wrote {args.out}: {len(sd_out)} tensors; head.fc.weight '
          f'{tuple(sd_out["head.fc.weight"].shape)}, logit scale '
          f'{ckpt["meta"]["logit_scale"]:.2f}')
    return ckpt


if __name__ == '__main__':
    main(sys.argv[1:])
