"""``python -m mmdigrap.datasets.checks CONFIG`` runs as the README writes it, without Python's
"found in sys.modules ... unpredictable behaviour" RuntimeWarning (the package imports the
checks from ``data_checks``, never the ``-m`` entry point itself)."""
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_python_m_checks_prints_no_runtime_warning(tmp_path):
    missing = str(tmp_path / 'no_such.pth')
    env = dict(os.environ, PYTHONWARNINGS='default', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'mmdigrap.datasets.checks',
         'configs/embedded/dinov2-s_fmnist_digrap.py',
         '--cfg-options', f'model.backbone.init_cfg.checkpoint={missing}'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f'MISSING file   {missing}   (model.backbone.init_cfg.checkpoint)' in proc.stdout
    assert 'RuntimeWarning' not in proc.stderr and 'found in sys.modules' not in proc.stderr, \
        proc.stderr


def test_checks_module_keeps_its_names():
    from mmdigrap.datasets import checks, data_checks
    for name in ('require_data_root', 'missing_data_paths', 'check_config_data',
                 'missing_model_paths', 'DATASET_DOCS'):
        assert getattr(checks, name) is getattr(data_checks, name)
    assert callable(checks.main)
