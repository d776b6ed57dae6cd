"""Lint: ``ruff check`` (pyflakes F, pycodestyle E/W, isort I; line length 100; settings in
pyproject.toml) is clean on mmdigrap/, tools/, tests/ and configs/. Skipped without ruff
(``tools/install.sh`` installs the pinned version)."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ('mmdigrap', 'tools', 'tests', 'configs')


def _ruff():
    """The ruff next to this interpreter (the project venv), else the one on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), 'ruff')
    return local if os.path.isfile(local) else shutil.which('ruff')


@pytest.mark.skipif(_ruff() is None, reason='ruff not installed (bash tools/install.sh)')
def test_ruff_clean():
    proc = subprocess.run([_ruff(), 'check', '--no-cache', '--output-format', 'concise',
                           *PATHS], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'ruff found problems:\n{proc.stdout}{proc.stderr}'
