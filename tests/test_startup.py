"""Start-up cost of the tools.

* ``tools/train.py --test``: the test of the last checkpoint in the training process writes
  the same files, with the same numbers, as ``tools/test.py`` on that checkpoint in its own
  process (tiny real-stack config of tests/_tiny.py, a few seconds a run);
* ``import mmdigrap`` leaves mmdet out (mmpretrain would import all of its models), and mmdet
  still imports and registers normally afterwards (fresh interpreters).
"""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmengine')

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _tiny import write_tiny_config  # noqa: E402

from mmdigrap.engine import launch  # noqa: E402

STAMP = '[0-9]' * 8 + '_' + '[0-9]' * 6  # mmengine's <work_dir>/<timestamp>/ folders


def _tool(name, rel):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


train_tool = _tool('mmdigrap_train_tool_inproc', 'tools/train.py')
test_tool = _tool('mmdigrap_test_tool_inproc', 'tools/test.py')


def _main(monkeypatch, tool, argv):
    monkeypatch.setattr(sys, 'argv', argv)
    tool.main()


def _files(work_dir):
    """The files under ``work_dir``, with each ``<timestamp>`` folder (and the file names
    inside it) renamed to ``T0``, ``T1``, ... in time order."""
    stamps = sorted(p.name for p in Path(work_dir).glob(STAMP) if p.is_dir())
    out = set()
    for p in Path(work_dir).rglob('*'):
        if p.is_file():
            rel = str(p.relative_to(work_dir))
            for i, s in enumerate(stamps):
                rel = rel.replace(s, f'T{i}')
            out.add(rel)
    return out, stamps


def _state(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def cfg_path(tmp_path_factory):
    return write_tiny_config(tmp_path_factory.mktemp('inproc'), epochs=2)


def _name(tag):
    """A unique ``experiment_name`` option (mmengine names its logger etc. after it and the
    second; several Runners of this process may start in the same second)."""
    return f'experiment_name={tag}_{os.getpid()}_{time.time_ns()}'


def test_train_test_equals_test_tool(cfg_path, tmp_path, monkeypatch, capsys):
    """Same seed, same config: (a) train.py --test, (b) train.py then test.py on the last
    checkpoint. The checkpoints, results.json/md and the set of files written are equal; (a)
    adds test_time.json. A load_from option (the start of training) is not given to the test."""
    opts = ['randomness.seed=3', 'load_from=None']
    a, b = tmp_path / 'a', tmp_path / 'b'
    _main(monkeypatch, train_tool, ['train.py', cfg_path, '--work-dir', str(a), '--test',
                                    '--cfg-options', *opts, _name('a')])
    assert 'ignoring load_from' not in capsys.readouterr().err
    _main(monkeypatch, train_tool, ['train.py', cfg_path, '--work-dir', str(b),
                                    '--cfg-options', *opts, _name('b')])
    ckpt_b = (b / 'last_checkpoint').read_text().strip()
    # tools/test.py in its own process starts seconds later: not in the training's second
    # (mmengine's log folder is <work_dir>/<second>)
    launch._wait_past(max(_files(b)[1]))
    _main(monkeypatch, test_tool, ['test.py', cfg_path, ckpt_b, '--work-dir', str(b),
                                   '--cfg-options', opts[0], _name('c')])

    ckpt_a = (a / 'last_checkpoint').read_text().strip()
    assert Path(ckpt_a).name == Path(ckpt_b).name == 'epoch_2.pth'
    sa, sb = _state(ckpt_a), _state(ckpt_b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    res_a = json.loads((a / 'results.json').read_text())
    res_b = json.loads((b / 'results.json').read_text())
    assert res_a == res_b
    assert res_a['tag'] == 'tiny' and [s['num_images'] for s in res_a['sets']] == [16, 16]
    assert (a / 'results.md').read_text() == (b / 'results.md').read_text()

    files_a, stamps_a = _files(a)
    files_b, _ = _files(b)
    assert files_a == files_b | {'test_time.json'}
    assert len(stamps_a) == 2  # the training's log folder and the test's
    assert 'T1/T1.json' in files_a  # the test's scalars, as tools/test.py writes them
    test_log = (a / stamps_a[1] / f'{stamps_a[1]}.log').read_text()
    assert 'ID / OOD top-1 accuracy (%) [tiny]' in test_log
    assert f'Load checkpoint from {ckpt_a}' in test_log
    # the test's config is test.py's: load_from = the last checkpoint, not the start's None
    dumped = (a / stamps_a[1] / 'vis_data' / 'config.py').read_text()
    assert f"load_from = '{ckpt_a}'" in dumped

    info = json.loads((a / 'test_time.json').read_text())
    assert info['checkpoint'] == ckpt_a
    assert info['wall_s'] > 0 and info['cpu_s'] > 0
    assert info['metrics']['idood/id'] == res_a['id']


def test_test_when_last_checkpoint_is_not_final(cfg_path, tmp_path, monkeypatch):
    """The last *saved* checkpoint is what is tested (as tools/test.py on it would); a
    WARNING says that it is not the final weights."""
    wd = tmp_path / 'w'
    argv = ['train.py', cfg_path, '--work-dir', str(wd), '--test', '--cfg-options',
            'train_cfg.max_epochs=3', 'default_hooks.checkpoint.interval=2',
            'default_hooks.checkpoint.save_last=False', _name('w')]
    with pytest.warns(UserWarning, match='saved at iteration 8, training ended at 12'):
        _main(monkeypatch, train_tool, argv)
    info = json.loads((wd / 'test_time.json').read_text())
    assert Path(info['checkpoint']).name == 'epoch_2.pth'
    assert (wd / 'results.json').is_file()


def test_run_test_after_training_without_checkpoint(cfg_path, tmp_path):
    with pytest.raises(FileNotFoundError, match='no last checkpoint'):
        launch.run_test_after_training(cfg_path, str(tmp_path))


def test_help_documents_test(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['train.py', '--help'])
    with pytest.raises(SystemExit):
        train_tool.parse_args()
    out = ' '.join(capsys.readouterr().out.split())
    assert '--test' in out and 'test_time.json' in out


def _python(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, '-c', code], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout.split()


@pytest.mark.skipif(importlib.util.find_spec('mmdet') is None, reason='mmdet not installed')
def test_import_defers_mmdet():
    out = _python(
        "import sys, mmdigrap\n"
        "from mmpretrain.registry import MODELS, METRICS\n"
        "print('mmdet' in sys.modules, 'sklearn' in sys.modules, 'matplotlib' in sys.modules)\n"
        "print(MODELS.get('MNISTCNN') is not None, METRICS.get('IDOODAccuracy') is not None)\n"
        "from mmpretrain.models.utils import ResLayerExtraNorm\n"
        "print(ResLayerExtraNorm is None)\n"
        "try:\n"
        "    import mmdet.models\n"
        "except ImportError:  # mmcv-lite: mmdet.models needs mmcv's compiled ops\n"
        "    import mmdet; print('lite')\n"
        "else:\n"
        "    from mmdet.registry import MODELS as DET\n"
        "    print(DET.get('RetinaNet').__name__)\n")
    assert out[:6] == ['False', 'False', 'False', 'True', 'True', 'True']
    assert out[6] in ('RetinaNet', 'lite')


@pytest.mark.skipif(importlib.util.find_spec('mmcv._ext') is None,
                    reason='mmdet.models needs mmcv with compiled ops')
def test_mmdet_imported_first_keeps_mmpretrains_bridge():
    out = _python("import mmdet.models, mmdigrap\n"
                  "from mmpretrain.models.utils import ResLayerExtraNorm\n"
                  "from mmdet.registry import MODELS\n"
                  "print(ResLayerExtraNorm is MODELS.get('ResLayerExtraNorm'))\n")
    assert out == ['True']
