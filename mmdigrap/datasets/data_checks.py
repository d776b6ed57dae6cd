"""Fail early, and say where the data (and the weights) should be, when they are missing.

The library side of ``python -m mmdigrap.datasets.checks CONFIG`` (the command line lives in
:mod:`mmdigrap.datasets.checks`, which the package does not import, so ``python -m`` runs it
without Python's "found in sys.modules" RuntimeWarning):

* :func:`require_data_root` -- raise ``FileNotFoundError`` naming the folder (or file) that was
  expected and how to get / point at it. Used by this plugin's own datasets
  (:class:`mmdigrap.datasets.ImageNetVariant`).
* :func:`missing_data_paths` / :func:`check_config_data` -- walk the train/val/test
  dataloaders of a config *without building them* and report every ``data_root``,
  ``ann_file``, ``question_file`` and image folder that does not exist, with a pointer to
  ``docs/datasets.md``. mmpretrain / mmdet / mmseg raise their own ``FileNotFoundError`` on a
  missing ``ann_file`` (naming the file), but a missing image folder is often only noticed by
  the first ``LoadImageFromFile``, minutes into a run; this check takes a second.
* :func:`missing_model_paths` -- the files a config loads weights from: ``load_from``, every
  ``init_cfg=dict(type='Pretrained', checkpoint=...)`` inside ``model``, and the tokenizer
  folders (``tokenizer=dict(name_or_path=...)``; a Hugging Face name such as
  ``'bert-base-uncased'`` counts as present when it is in the local Hugging Face cache). URLs
  (``https://``, ``torchvision://``, ...) are not checked.
"""
import os.path as osp
from typing import Iterable, List, Optional, Tuple

__all__ = ['DATASET_DOCS', 'require_data_root', 'missing_data_paths', 'check_config_data',
           'missing_model_paths']

#: where the layout of every data set used by ``configs/`` is described
DATASET_DOCS = 'docs/datasets.md'


def require_data_root(path: str, hint: str = '', kind: str = 'folder') -> str:
    """Return ``path`` if it exists, else raise ``FileNotFoundError`` saying what was expected.

    Args:
        path: the folder (or file, with ``kind='file'``) the data set needs.
        hint: one or two sentences: what the data set is, where it comes from and the layout
            expected under ``path`` (e.g. ``'ImageNet-A: <root>/<wnid>/<img>.jpg, 200 class
            folders'``).
        kind: ``'folder'`` or ``'file'`` (only changes the wording and the check).

    Raises:
        FileNotFoundError: ``path`` is missing (or is not a folder / file as asked).
    """
    ok = osp.isdir(path) if kind == 'folder' else osp.isfile(path)
    if ok:
        return path
    what = 'folder' if kind == 'folder' else 'file'
    where = osp.abspath(path)
    msg = f'Expected the data set {what} {path!r} ({where}), but it does not exist.'
    if osp.exists(path):
        msg = f'Expected {path!r} ({where}) to be a {what}, but it is not.'
    if hint:
        msg += f' {hint.strip()}'
    msg += (f' See {DATASET_DOCS} for where to get it and the expected layout; point the config '
            "at another location with e.g. --cfg-options "
            "'test_dataloader.dataset.data_root=/path/to/it'.")
    raise FileNotFoundError(msg)


def _join(root: Optional[str], p: str) -> str:
    if not root or osp.isabs(p) or '://' in p:
        return p
    return osp.join(root, p)


def _dataset_paths(ds, where: str) -> Iterable[Tuple[str, str, str]]:
    """(description, path, kind) for one dataset config (recursing into wrappers)."""
    if isinstance(ds, (list, tuple)):
        for i, d in enumerate(ds):
            yield from _dataset_paths(d, f'{where}[{i}]')
        return
    if not isinstance(ds, dict):
        return
    for key in ('dataset', 'datasets'):  # RepeatDataset / ConcatDataset / IDOODConcatDataset
        sub = ds.get(key)
        if isinstance(sub, dict) and 'type' not in sub:  # {set_name: cfg}
            for name, d in sub.items():
                yield from _dataset_paths(d, f'{where}.{key}.{name}')
        elif sub is not None:
            yield from _dataset_paths(sub, f'{where}.{key}')
    root = ds.get('data_root')
    if isinstance(root, str) and root and '://' not in root:
        yield f'{where}.data_root', root, 'folder'
    for key in ('ann_file', 'question_file'):
        p = ds.get(key)
        if isinstance(p, str) and p and '://' not in p:
            yield f'{where}.{key}', _join(root, p), 'file'
    prefix = ds.get('data_prefix')
    if isinstance(prefix, str):
        prefix = dict(img_path=prefix)
    if isinstance(prefix, dict):
        for k, p in prefix.items():
            if isinstance(p, str) and p and '://' not in p:
                yield f'{where}.data_prefix.{k}', _join(root, p), 'folder'


def missing_data_paths(cfg, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')
                       ) -> List[Tuple[str, str, str]]:
    """``[(config key, path, kind)]`` of every data path in the config's loaders that is missing.

    ``cfg`` is an mmengine ``Config`` (or a dict). Nothing is built and no file is read.
    """
    missing = []
    seen = set()
    for name in loaders:
        loader = cfg.get(name) if hasattr(cfg, 'get') else None
        if not isinstance(loader, dict) or loader.get('dataset') is None:
            continue
        for desc, path, kind in _dataset_paths(loader['dataset'], f'{name}.dataset'):
            if path in seen:
                continue
            seen.add(path)
            exists = osp.isdir(path) if kind == 'folder' else osp.isfile(path)
            if not exists:
                missing.append((desc, path, kind))
    return missing


def check_config_data(cfg, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')
                      ) -> None:
    """Raise ``FileNotFoundError`` listing every missing data path of ``cfg``'s loaders."""
    missing = missing_data_paths(cfg, loaders)
    if missing:
        lines = '\n'.join(f'  {desc}: {kind} {path!r} is missing' for desc, path, kind in missing)
        raise FileNotFoundError(
            f'{len(missing)} data path(s) of this config do not exist:\n{lines}\n'
            f'See {DATASET_DOCS} for where each data set comes from and its layout, and '
            "override the location with --cfg-options (e.g. 'train_dataloader.dataset."
            "data_root=/datasets/x').")


def _local(p) -> bool:
    return isinstance(p, str) and bool(p) and '://' not in p


def _walk_dicts(obj, where: str):
    """(dotted path, dict) of every dict inside ``obj`` (lists by index)."""
    if isinstance(obj, dict):
        yield where, obj
        for k, v in obj.items():
            yield from _walk_dicts(v, f'{where}.{k}')
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk_dicts(v, f'{where}.{i}')


#: files that make a folder (or a cached Hugging Face repo) a tokenizer
_TOKENIZER_FILES = ('tokenizer_config.json', 'tokenizer.json', 'vocab.txt', 'vocab.json')


def _tokenizer_present(name: str) -> bool:
    """``name`` is a local folder, or a Hugging Face repo id with a tokenizer file in the
    local Hugging Face cache (no network)."""
    if osp.isdir(osp.expanduser(name)):
        return True
    looks_like_path = name.startswith(('.', '/', '~')) or name.count('/') > 1
    if looks_like_path:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover (transformers brings it)
        return False
    for f in _TOKENIZER_FILES:
        try:
            hit = try_to_load_from_cache(name, f)
        except Exception:  # noqa: BLE001  (an invalid repo id: not cached)
            return False
        if isinstance(hit, str):
            return True
    return False


def missing_model_paths(cfg) -> List[Tuple[str, str, str]]:
    """``[(config key, path, kind)]`` of the weights and tokenizers ``cfg`` loads that are missing.

    Looks at ``load_from``, at every ``init_cfg`` of ``type='Pretrained'`` inside ``model``
    (``checkpoint=``; kind ``'file'``) and at every ``tokenizer`` dict inside ``model``
    (``name_or_path=`` / ``pretrained_model_name_or_path=``; kind ``'tokenizer'``: a folder, or
    a Hugging Face name in the local cache). URLs are skipped. Nothing is loaded.
    """
    missing, seen = [], set()

    def add(desc, path, kind, ok):
        if path not in seen and not ok:
            missing.append((desc, path, kind))
        seen.add(path)

    load_from = cfg.get('load_from', None) if hasattr(cfg, 'get') else None
    if _local(load_from):
        add('load_from', load_from, 'file', osp.isfile(load_from))
    model = cfg.get('model', None) if hasattr(cfg, 'get') else None
    for where, d in _walk_dicts(model, 'model'):
        if str(d.get('type', '')).rsplit('.', 1)[-1] == 'Pretrained' \
                and _local(d.get('checkpoint')):
            add(f'{where}.checkpoint', d['checkpoint'], 'file', osp.isfile(d['checkpoint']))
        tok = d.get('tokenizer')
        if isinstance(tok, dict):
            for key in ('name_or_path', 'pretrained_model_name_or_path'):
                name = tok.get(key)
                if _local(name):
                    add(f'{where}.tokenizer.{key}', name, 'tokenizer', _tokenizer_present(name))
    return missing
