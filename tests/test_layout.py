"""The package layout (issue 12, item 3): no import cycle between ``datasets/`` and
``evaluation/``, registered type names unchanged, old import paths kept as warning shims."""
import importlib
import json
import os
import subprocess
import sys
import warnings

import pytest

pytest.importorskip('mmpretrain')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Import one subpackage in a fresh interpreter with a bare ``mmdigrap`` parent (its
# __init__, which imports everything, is not run) and list the mmdigrap modules loaded.
_PROBE = """
import importlib, json, sys, types
pkg = types.ModuleType('mmdigrap')
pkg.__path__ = [sys.argv[1] + '/mmdigrap']
sys.modules['mmdigrap'] = pkg
importlib.import_module('mmdigrap.' + sys.argv[2])
print(json.dumps(sorted(m for m in sys.modules if m.startswith('mmdigrap.'))))
"""


def _loaded_by(subpackage):
    out = subprocess.run([sys.executable, '-c', _PROBE, REPO, subpackage], check=True,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=REPO)).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize('pkg,forbidden', [('datasets', 'evaluation'),
                                           ('evaluation', 'datasets'),
                                           ('models', 'datasets'), ('models', 'evaluation')])
def test_no_import_between_subpackages(pkg, forbidden):
    loaded = _loaded_by(pkg)
    assert f'mmdigrap.{pkg}' in loaded
    assert not [m for m in loaded if m.startswith(f'mmdigrap.{forbidden}')], loaded


def test_registered_names_unchanged():
    from mmengine.registry import METRICS as ROOT_METRICS
    from mmpretrain.registry import DATASETS, METRICS, MODELS

    import mmdigrap  # noqa: F401
    from mmdigrap import datasets, evaluation, models
    for name in ('FashionMNISTIdx', 'FashionMNISTCorrupted', 'FashionMNISTIDOOD',
                 'IDOODConcatDataset', 'ClassSubsetIDOODDataset', 'ImageNetVariant'):
        assert DATASETS.get(name) is getattr(datasets, name)
    for name in ('IDOODAccuracy', 'ClassSubsetIDOODAccuracy', 'ClassSubsetAccuracy'):
        assert METRICS.get(name) is getattr(evaluation, name)
    assert ROOT_METRICS.get('PerSetMetric') is evaluation.PerSetMetric
    assert MODELS.get('CLIPClsHead') is models.CLIPClsHead
    assert models.CLIPClsHead.__module__ == 'mmdigrap.models.heads.clip_cls_head'
    assert evaluation.IDOODAccuracy.__module__ == 'mmdigrap.evaluation.metrics.id_ood'
    assert datasets.IDOODConcatDataset.__module__ == 'mmdigrap.datasets.id_ood'


@pytest.mark.parametrize('old,names', [
    ('mmdigrap.evaluation.id_ood', ('IDOODConcatDataset', 'IDOODAccuracy', 'summarize_idood',
                                    'idood_markdown')),
    ('mmdigrap.evaluation.imagenet_variants', ('ImageNetVariant', 'load_wnids',
                                               'ClassSubsetIDOODDataset',
                                               'ClassSubsetIDOODAccuracy',
                                               'ClassSubsetAccuracy', 'CLIPClsHead',
                                               'PerSetMetric', 'mask_scores')),
])
def test_old_module_paths_warn_and_reexport(old, names):
    import mmdigrap
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        mod = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and old in str(w.message)
               for w in caught)
    for name in names:
        new = next(getattr(p, name) for p in (mmdigrap.datasets, mmdigrap.evaluation,
                                              mmdigrap.models) if hasattr(p, name))
        assert getattr(mod, name) is new, name


def test_old_package_level_names_warn():
    from mmdigrap import datasets, evaluation
    with pytest.warns(DeprecationWarning, match='moved to mmdigrap.datasets'):
        assert evaluation.IDOODConcatDataset is datasets.IDOODConcatDataset
    with pytest.raises(AttributeError):
        evaluation.no_such_name
