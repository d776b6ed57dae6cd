"""Every setting config under configs/ parses, builds and trains two iterations on CPU.

For each ``configs/**/*.py`` (not ``configs/_base_/`` nor any ``_base_/`` folder, nor
``configs/digits/``, whose 1x28x28 CNN has its own test):

1. ``Config.fromfile`` (``custom_imports`` included);
2. no weights: every ``init_cfg`` of type ``Pretrained``, ``load_from`` and ``pretrained=`` are
   stripped (nothing exists offline); SyncBN -> BN; input sizes shrunk (ViT ``img_size`` 32,
   detection 32x32, segmentation crop 32x32); the tokenizer of BLIP replaced by a tiny local
   vocabulary; ``num_classes`` as configured;
3. the model is built in the config's default scope, the ``optim_wrapper`` with mmengine's
   builder, the ``custom_hooks`` with ``allow_random_init=True`` (DiGraPHook) and a synthetic
   held-out loader (TPGMHook, DiGraPValHook), and ``before_train`` is called on a stand-in runner;
4. two ``train_step`` calls on generated batches of the right shapes (batch 2), each followed by
   the hooks' ``after_train_iter``; the loss must be finite and some trainable weight must move;
5. every dataset / transform / metric type named in the dataloaders and evaluators is
   registered in the config's scope, and the evaluators build.

mmdet / mmseg configs are skipped when mmcv's compiled ops are absent (mmcv-lite), BLIP configs
when ``transformers`` is absent (mmpretrain then registers BLIP as a placeholder). Models whose
config is identical after the overrides (the method variants of one setting) are built once and
reset to the built weights before each use. The tests run with one intra-op thread (see
``_one_thread``); the folder takes about a minute on a shared 2-core machine.
"""
import copy
import glob
import importlib.util
import math
import os
import os.path as osp
import types
from collections import OrderedDict

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO, 'configs')


def _setting_configs():
    out = []
    for path in sorted(glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)):
        rel = osp.relpath(path, CONFIG_DIR).replace(os.sep, '/')
        parts = rel.split('/')
        if parts[0] in ('_base_', 'digits') or '_base_' in parts[:-1] or '__pycache__' in parts:
            continue
        out.append(rel)
    return out


CONFIGS = _setting_configs()
HAS_MMCV_OPS = importlib.util.find_spec('mmcv._ext') is not None
HAS_TRANSFORMERS = importlib.util.find_spec('transformers') is not None


def _walk(obj, fn):
    """Apply fn to every dict in a nested dict/list structure (in place)."""
    if isinstance(obj, dict):
        fn(obj)
        for v in list(obj.values()):
            _walk(v, fn)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk(v, fn)


def _is_pretrained_init(init_cfg):
    items = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return any(isinstance(i, dict) and i.get('type') == 'Pretrained' for i in items)


def _strip_and_shrink(model_cfg: dict, family: str, vocab_dir: str = None) -> dict:
    def fix(d):
        if 'init_cfg' in d and _is_pretrained_init(d['init_cfg']):
            d['init_cfg'] = None
        if isinstance(d.get('pretrained'), str):
            d['pretrained'] = None
        if d.get('type') == 'SyncBN':
            d['type'] = 'BN'
        if d.get('type') == 'VisionTransformer' and 'img_size' in d:
            d['img_size'] = 32
        if d.get('type') == 'BlipTokenizer' and vocab_dir:
            d['name_or_path'] = vocab_dir
        if family == 'mmseg' and d.get('type') == 'SegDataPreProcessor':
            d['size'] = (32, 32)
    _walk(model_cfg, fix)
    return model_cfg


def _family(cfg) -> str:
    scope = cfg.get('default_scope', 'mmpretrain')
    if scope == 'mmpretrain' and 'Blip' in str(cfg.model):
        return 'blip'
    return scope



@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads spin against other
    processes (a small conv measured 30x slower than with 1 thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# ---------------------------------------------------------------- synthetic batches
def _num_classes(model):
    for attr in ('num_classes',):
        head = getattr(model, 'head', None)
        if head is not None and hasattr(head, attr):
            return int(getattr(head, attr))
    return 10


def _cls_batch(model, step, size=32):
    from mmpretrain.structures import DataSample
    n = _num_classes(model)
    g = torch.Generator().manual_seed(step)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
              for _ in range(2)]
    samples = [DataSample().set_gt_label((step * 2 + i) % n) for i in range(2)]
    return dict(inputs=inputs, data_samples=samples)


def _vqa_batch(model, step):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(step)
    inputs = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
              for _ in range(2)]
    samples = []
    for q, a in (('what is the color of the cat', ['red', 'blue']), ('is it a dog', ['yes'])):
        ds = DataSample()
        ds.set_field(q, 'question')
        ds.set_field(a, 'gt_answer')
        ds.set_field([1.0 / len(a)] * len(a), 'gt_answer_weight')
        samples.append(ds)
    # MultiModalDataPreprocessor reads a list as frames of one clip: VQA configs collate with
    # default_collate, i.e. one stacked (B, 3, H, W) tensor
    return dict(inputs=torch.stack(inputs), data_samples=samples)


def _det_batch(model, step):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(step)
    n = getattr(getattr(model, 'bbox_head', None), 'num_classes', 80)
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 32, 32)] * 2, num_items=[3, 2],
                          num_classes=n, with_mask=False)


def _seg_batch(model, step):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    n = getattr(getattr(model, 'decode_head', None), 'num_classes', 19)
    g = torch.Generator().manual_seed(step)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g))
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=torch.randint(0, n, (1, 32, 32), generator=g))
        ds.set_metainfo(dict(img_shape=(32, 32), ori_shape=(32, 32), pad_shape=(32, 32)))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


BATCHES = dict(mmpretrain=_cls_batch, blip=_vqa_batch, mmdet=_det_batch, mmseg=_seg_batch)


@pytest.fixture(scope='session')
def tiny_bert_vocab(tmp_path_factory):
    """A 60-token BERT WordPiece vocabulary (BlipTokenizer = BertTokenizerFast + [DEC]/[ENC])."""
    d = tmp_path_factory.mktemp('bert_vocab')
    words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + [
        'what', 'is', 'the', 'color', 'of', 'cat', 'it', 'a', 'dog', 'red', 'blue', 'yes',
        'no', '?', '.', ','] + [f'##{c}' for c in 'abcdefghijklmnopqrstuvwxyz'] + list(
            'abcdefghijklmnopqrstuvwxyz')
    (d / 'vocab.txt').write_text('\n'.join(dict.fromkeys(words)) + '\n')
    return str(d)


# ---------------------------------------------------------------- stand-in runner
class _Visualizer:
    def __init__(self):
        self.scalars = []

    def add_scalars(self, scalars, step=0, **kwargs):
        self.scalars.append((step, dict(scalars)))


_RUNS = [0]


def _fake_runner(cfg, model, optim_wrapper):
    from mmengine.logging import MessageHub, MMLogger
    _RUNS[0] += 1
    return types.SimpleNamespace(
        cfg=cfg, model=model, optim_wrapper=optim_wrapper, _load_from=None, _resume=False,
        logger=MMLogger.get_instance('mmdigrap_config_smoke'),
        message_hub=MessageHub.get_instance(f'mmdigrap_config_smoke_{_RUNS[0]}'),
        visualizer=_Visualizer(), iter=0, epoch=0, max_iters=2, seed=0, _val_loop=None,
        _val_dataloader=None)


def _build_hooks(cfg, batch_fn, model):
    from mmengine.registry import HOOKS
    hooks = []
    for h in copy.deepcopy(cfg.get('custom_hooks', []) or []):
        if h['type'] in ('RobustFTHook', 'DiGraPHook'):
            h.update(allow_random_init=True, log_interval=1)
        elif h['type'] in ('TPGMHook', 'DiGraPValHook'):  # held-out batches
            batches = [batch_fn(model, 100 + i) for i in range(2)]
            h['dataloader'] = torch.utils.data.DataLoader(batches, batch_size=1,
                                                          collate_fn=lambda b: b[0])
        hooks.append(HOOKS.build(h))
    return hooks


# ---------------------------------------------------------------- registry checks
def _check_types(cfg):
    from mmengine.evaluator import Evaluator
    from mmengine.registry import DATASETS, METRICS, TRANSFORMS
    scope = cfg.get('default_scope')
    problems = []

    def lookup(registry, name):
        with registry.switch_scope_and_registry(scope) as reg:
            return reg.get(name)

    def check_dataset(ds, where):
        if isinstance(ds, (list, tuple)):
            for i, d in enumerate(ds):
                check_dataset(d, f'{where}[{i}]')
            return
        if not isinstance(ds, dict):
            return
        if 'type' in ds and lookup(DATASETS, ds['type']) is None:
            problems.append(f'{where}: dataset type {ds["type"]!r} not registered')
        for t in ds.get('pipeline', []) or []:
            if isinstance(t, dict) and lookup(TRANSFORMS, t['type']) is None:
                problems.append(f'{where}: transform {t["type"]!r} not registered')
        for key in ('dataset', 'datasets'):
            sub = ds.get(key)
            if isinstance(sub, dict) and 'type' not in sub:
                for name, d in sub.items():
                    check_dataset(d, f'{where}.{key}.{name}')
            elif sub is not None:
                check_dataset(sub, f'{where}.{key}')

    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if isinstance(loader, dict):
            check_dataset(loader.get('dataset'), name)
    for name in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(name)
        if ev is None:
            continue
        for m in (ev if isinstance(ev, (list, tuple)) else [ev]):
            m = copy.deepcopy(m)
            if m.get('type') and lookup(METRICS, m['type']) is None:
                problems.append(f'{name}: metric {m["type"]!r} not registered')
                continue
            if 'ann_file' in m:  # CocoMetric reads its annotation file when built
                continue
            from mmengine.registry import DefaultScope
            with DefaultScope.overwrite_default_scope(scope):
                Evaluator(m)
    assert not problems, '\n'.join(problems)


# ---------------------------------------------------------------- the test
_MODEL_CACHE: 'OrderedDict[str, tuple]' = OrderedDict()


def _get_model(key, build):
    """(model, reused): one model per distinct (overridden) model config, LRU of 2. A reused
    model is reset to its freshly built weights (the previous config trained it)."""
    if key in _MODEL_CACHE:
        _MODEL_CACHE.move_to_end(key)
        model, init_state = _MODEL_CACHE[key]
        model.load_state_dict(init_state)
        return model, True
    model = build()
    _MODEL_CACHE[key] = (model, {k: v.clone() for k, v in model.state_dict().items()})
    while len(_MODEL_CACHE) > 2:
        _MODEL_CACHE.popitem(last=False)
    return model, False


@pytest.mark.parametrize('rel', CONFIGS)
def test_config_builds_and_trains(rel, tiny_bert_vocab):
    from mmengine.config import Config
    from mmengine.registry import MODELS, OPTIM_WRAPPERS, DefaultScope, init_default_scope

    path = osp.join(CONFIG_DIR, rel)
    cfg = Config.fromfile(path, import_custom_modules=False)
    family = _family(cfg)
    if family in ('mmdet', 'mmseg') and not HAS_MMCV_OPS:
        pytest.skip(f'{family} models need mmcv._ext (full mmcv with compiled ops); '
                    'mmcv-lite is installed')
    cfg = Config.fromfile(path)  # now with custom_imports (mmdigrap)
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    assert OPTIM_WRAPPERS.get(wrapper_type) is not None, f'{wrapper_type} is not registered'
    if family == 'blip' and not HAS_TRANSFORMERS:
        pytest.skip('BLIP and the VQA data sets need `transformers` (mmpretrain registers them '
                    'only when it is installed)')

    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    _check_types(cfg)

    model_cfg = copy.deepcopy(cfg.model.to_dict())
    if cfg.get('data_preprocessor') is not None and model_cfg.get('type') != 'LoRAModel':
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor.to_dict()))
    _strip_and_shrink(model_cfg, family, tiny_bert_vocab)
    key = f'{cfg.get("default_scope")}:{model_cfg!r}'
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model, _ = _get_model(key, lambda: MODELS.build(model_cfg))
    model.train()
    _train_two_steps(cfg, family, model)


def _train_two_steps(cfg, family, model):
    from mmengine.optim import build_optim_wrapper

    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    runner = _fake_runner(cfg, model, optim_wrapper)
    batch_fn = BATCHES[family]
    hooks = _build_hooks(cfg, batch_fn, model)
    for hook in hooks:
        hook.before_train(runner)

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, 'nothing to train'
    before = {n: p.detach().clone() for n, p in trainable}
    for step in range(2):
        runner.iter = step
        losses = model.train_step(batch_fn(model, step), optim_wrapper)
        total = sum(v for k, v in losses.items() if 'loss' in k)
        assert math.isfinite(float(total.detach())), f'non-finite loss at step {step}: {losses}'
        for hook in hooks:
            hook.after_train_iter(runner, step, None, losses)
    moved = [n for n, p in trainable if not torch.equal(p.detach(), before[n])]
    assert moved, 'no trainable weight changed in two steps'

    if any(type(h).__name__ in ('RobustFTHook', 'DiGraPHook') for h in hooks):
        assert runner.message_hub.get_scalar('train/dist_to_anchor') is not None
