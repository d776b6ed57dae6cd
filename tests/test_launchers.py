"""The launchers of the README, run as it writes them (issue 15, item 1).

* ``bash tools/dist_train.sh CONFIG 2`` and ``bash tools/dist_test.sh CONFIG CKPT 2`` with no
  ``PYTHON`` set: 2 gloo processes on the CPU train a tiny real-stack config (``_tiny.py``) and
  test its checkpoint; the values come back from the runs' own files.
* Every launcher (dist and slurm, train and test) finds the interpreter by itself, in the order
  of ``tools/find_python.sh``: ``$PYTHON`` > ``$MMDIGRAP_VENV/bin/python`` >
  ``<repo>/.venv/bin/python`` > ``python3``/``python`` on PATH that can import torch, else a
  clear error; checked on a copy of the scripts with fake interpreters that record their argv.
* The slurm scripts build the srun command of mmpretrain's scripts (a fake ``srun`` on PATH
  records its arguments and environment).
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny import write_tiny_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh')
ARGS = {'dist_train.sh': ['CFG.py', '2'], 'dist_test.sh': ['CFG.py', 'CK.pth', '2'],
        'slurm_train.sh': ['PART', 'JOB', 'CFG.py', 'WD'],
        'slurm_test.sh': ['PART', 'JOB', 'CFG.py', 'CK.pth']}
TOOL = {'dist_train.sh': 'train.py', 'dist_test.sh': 'test.py', 'slurm_train.sh': 'train.py',
        'slurm_test.sh': 'test.py'}

pytestmark = pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _exe(path, body):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/usr/bin/env bash\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _recorder(path, log):
    """A fake executable that appends ``<its path> <args...>`` (one per line) to ``log`` and
    succeeds; ``-c CODE`` (the torch probe) succeeds too."""
    return _exe(path, f'printf "%s\\n" "$0" "$@" > {log}; echo "PYTHONPATH=$PYTHONPATH" >> {log}\n')


def _clean_env(path_dirs):
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHON', 'MMDIGRAP_VENV', 'PYTHONPATH', 'LOCAL_RANK', 'RANK',
                        'WORLD_SIZE')}
    env['PATH'] = os.pathsep.join([str(p) for p in path_dirs] + ['/usr/bin', '/bin'])
    return env


@pytest.fixture()
def fake_repo(tmp_path):
    """A copy of tools/*.sh in an empty repository layout; fake python3/python/srun."""
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for s in SCRIPTS + ('find_python.sh', ):
        shutil.copy(ROOT / 'tools' / s, repo / 'tools' / s)
    return repo


def _run(repo, script, env, log):
    proc = subprocess.run(['bash', f'tools/{script}', *ARGS[script]], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    argv = log.read_text().splitlines() if log.exists() else []
    return proc, argv


def _python_of(script, argv):
    """The interpreter the launcher ran: argv[0], or (slurm) the word after srun's options."""
    if script.startswith('slurm'):
        return argv[argv.index('--kill-on-bad-exit=1') + 1]
    return argv[0]


@pytest.mark.parametrize('script', SCRIPTS)
def test_launcher_finds_python_in_order(fake_repo, tmp_path, script):
    log = tmp_path / 'argv.txt'
    bin_dir = tmp_path / 'bin'
    _recorder(bin_dir / 'srun', log)  # slurm: record srun's argv (the python is in it)
    on_path = _recorder(bin_dir / 'python3', log)
    venv_py = _recorder(fake_repo / '.venv' / 'bin' / 'python', log)
    other_py = _recorder(tmp_path / 'other-venv' / 'bin' / 'python', log)
    explicit = _recorder(tmp_path / 'explicit-python', log)
    env = _clean_env([bin_dir])

    # 1. <repo>/.venv/bin/python (what tools/install.sh creates) beats the one on PATH
    proc, argv = _run(fake_repo, script, env, log)
    assert proc.returncode == 0, proc.stderr
    assert _python_of(script, argv) == str(venv_py)
    if script.startswith('dist'):
        assert argv[1:3] == ['-m', 'torch.distributed.run']
    tool = argv[argv.index(str(fake_repo / 'tools' / TOOL[script]))]  # absolute tool path
    assert tool.endswith(TOOL[script])
    assert argv[-1] == f'PYTHONPATH={fake_repo}:'  # the repository is importable first
    # 2. MMDIGRAP_VENV (tools/install.sh's location variable) beats <repo>/.venv
    log.unlink()
    proc, argv = _run(fake_repo, script, dict(env, MMDIGRAP_VENV=str(other_py.parent.parent)),
                      log)
    assert proc.returncode == 0, proc.stderr
    assert _python_of(script, argv) == str(other_py)
    # 3. PYTHON beats everything
    log.unlink()
    proc, argv = _run(fake_repo, script, dict(env, PYTHON=str(explicit),
                                              MMDIGRAP_VENV=str(other_py.parent.parent)), log)
    assert _python_of(script, argv) == str(explicit)
    # 4. no venv: the active interpreter on PATH (python3), which can import torch
    shutil.rmtree(fake_repo / '.venv')
    log.unlink()
    proc, argv = _run(fake_repo, script, env, log)
    assert proc.returncode == 0, proc.stderr
    assert _python_of(script, argv) == str(on_path)
    # 5. none can import torch: a clear error that says what to run, and nothing is launched
    for name in ('python3', 'python'):
        _exe(bin_dir / name, 'exit 1\n')
    log.unlink()
    proc, argv = _run(fake_repo, script, env, log)
    assert proc.returncode != 0 and argv == []
    assert 'no Python environment with torch found' in proc.stderr
    assert 'bash tools/install.sh' in proc.stderr and 'PYTHON=' in proc.stderr
    # a MMDIGRAP_VENV without bin/python is an error too (not a silent fall-back)
    proc, _ = _run(fake_repo, script, dict(env, MMDIGRAP_VENV=str(tmp_path / 'nope')), log)
    assert proc.returncode != 0 and 'has no bin/python' in proc.stderr


@pytest.mark.parametrize('script', ('slurm_train.sh', 'slurm_test.sh'))
def test_slurm_builds_srun_command(tmp_path, script):
    log = tmp_path / 'argv.txt'
    bin_dir = tmp_path / 'bin'
    _recorder(bin_dir / 'srun', log)
    py = _recorder(tmp_path / 'venv' / 'bin' / 'python', tmp_path / 'unused.txt')
    env = dict(_clean_env([bin_dir]), MMDIGRAP_VENV=str(py.parent.parent), GPUS='4',
               GPUS_PER_NODE='2', CPUS_PER_TASK='3', SRUN_ARGS='--qos=low --time=10')
    extra = ['--cfg-options', 'train_cfg.max_epochs=1', 'work_dir=a b']  # a space survives
    proc = subprocess.run(['bash', str(ROOT / 'tools' / script), *ARGS[script], *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = log.read_text().splitlines()
    tool = str(ROOT / 'tools' / TOOL[script])
    if script == 'slurm_train.sh':
        tail = [tool, 'CFG.py', '--work-dir=WD', '--launcher=slurm']
    else:
        tail = [tool, 'CFG.py', 'CK.pth', '--launcher=slurm']
    assert argv[1:] == ['-p', 'PART', '--job-name=JOB', '--gres=gpu:2', '--ntasks=4',
                        '--ntasks-per-node=2', '--cpus-per-task=3', '--kill-on-bad-exit=1',
                        '--qos=low', '--time=10', str(py), '-u', *tail, *extra,
                        f'PYTHONPATH={ROOT}:']
    # GRES= requests no GPUs (a CPU partition)
    proc = subprocess.run(['bash', str(ROOT / 'tools' / script), *ARGS[script]], cwd=tmp_path,
                          env=dict(env, GRES=''), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not any(a.startswith('--gres') for a in
                                            log.read_text().splitlines())


# ------------------------------------------------------------ the real runs, as the README
#: ``sitecustomize`` of the 2-rank launches: at exit (the last atexit handler, right before
#: interpreter finalization) each train.py / test.py rank writes how many threads it still has.
EXIT_PROBE = """import atexit, os, sys
def _probe():
    if os.path.basename(sys.argv[0]) in ('train.py', 'test.py'):
        with open(os.path.join({folder!r}, 'rank%s.threads' % os.environ.get('RANK')), 'w') as f:
            f.write(str(len(os.listdir('/proc/self/task'))))
atexit.register(_probe)
"""


def _run_dist(cmd, probe_dir, **kw):
    """``subprocess.run`` of a 2-rank gloo launch whose ranks record, at interpreter exit, how
    many threads they still run (``<probe_dir>/rank<R>.threads``, :data:`EXIT_PROBE`)."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / 'sitecustomize.py').write_text(EXIT_PROBE.format(folder=str(probe_dir)))
    kw['env'] = dict(kw['env'], PYTHONPATH=str(probe_dir))
    return subprocess.run(cmd, **kw)


def _assert_no_thread_left(probe_dir):
    """Each rank ended its gloo process group (``finish_distributed``): at interpreter exit the
    main thread is its only thread. Before, gloo's 3 threads were still running then, and one
    that freed a finished collective after finalization had begun aborted the rank ("terminate
    called without an active exception", SIGABRT), now and then, under load."""
    counts = {p.name: int(p.read_text()) for p in sorted(probe_dir.glob('rank*.threads'))}
    assert counts == {'rank0.threads': 1, 'rank1.threads': 1}


def _readme_env():
    """The environment of a user who ran ``bash tools/install.sh``: no PYTHON. This checkout's
    venv is <repo>/.venv when it exists; otherwise (a worktree sharing another checkout's venv)
    it is named with MMDIGRAP_VENV, the documented location variable of tools/install.sh."""
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'LOCAL_RANK')}
    if not (ROOT / '.venv' / 'bin' / 'python').exists():
        env['MMDIGRAP_VENV'] = sys.prefix
    env.update(PORT=str(_free_port()), OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='')  # the CPU (gloo) path even on a GPU host
    return env


@pytest.fixture(scope='module')
def dist_trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    cfg = write_tiny_config(tmp, epochs=2, name='tiny_dist.py')
    wd = tmp / 'wd'
    proc = _run_dist(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', str(wd)],
                     tmp / 'probe', cwd=ROOT, env=_readme_env(), capture_output=True,
                     text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cfg, wd, proc


def test_dist_train_as_in_readme(dist_trained):
    cfg, wd, proc = dist_trained
    _assert_no_thread_left(wd.parent / 'probe')
    assert (wd / 'epoch_2.pth').is_file()
    assert (wd / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')
    log = next(wd.glob('*/*.log')).read_text()
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    rows = [json.loads(x) for x in next(wd.glob('*/vis_data/scalars.json')).read_text()
            .splitlines()]
    train = [r for r in rows if 'loss' in r]
    # 32 images / (2 processes x batch 8) = 2 iterations an epoch, 2 epochs
    assert [r['iter'] for r in train] == [2, 4]
    assert all(0 < r['loss'] < 10 and 0 <= r['omega_mean'] <= 1 for r in train)
    assert any(k.startswith('omega/backbone.') for r in rows for k in r)
    import torch
    ck = torch.load(wd / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert ck['meta']['iter'] == 4 and ck['meta']['epoch'] == 2


def test_dist_test_as_in_readme(dist_trained, tmp_path):
    cfg, wd, _ = dist_trained
    out = tmp_path / 'test'
    proc = _run_dist(['bash', 'tools/dist_test.sh', cfg, str(wd / 'epoch_2.pth'), '2',
                      '--work-dir', str(out)], tmp_path / 'probe', cwd=ROOT,
                     env=_readme_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_no_thread_left(tmp_path / 'probe')
    res = json.loads(next(out.rglob('results.json')).read_text())
    sets = {s['name']: s for s in res['sets']}
    assert sorted(sets) == ['contrast_s2', 'id']
    for s in sets.values():  # both ranks' predictions are gathered: all 16 images of each set
        assert s['num_images'] == 16
        assert s['accuracy'] == pytest.approx(100 * s['correct'] / 16)
    assert res['id'] == sets['id']['accuracy']
    log = next(out.glob('*/*.log')).read_text()
    assert 'Distributed launcher: pytorch' in log
    assert 'Epoch(test) [1/1]' in log  # 16 images per set over 2 ranks of batch 16
