import os
import sys
import uuid

import pytest

# tests/reference.py and other helpers are imported as top-level modules
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _mmpretrain_default_scope():
    """Start every test in the 'mmpretrain' default scope.

    A Runner built with ``default_scope='mmengine'`` leaves that scope current for the rest of
    the process, and later builds of mmpretrain names (``PackInputs``, ``IDOODAccuracy``, ...)
    would then look in mmengine's registries; the order of the test files must not matter.
    """
    try:
        from mmengine.registry import DefaultScope
    except ImportError:  # pragma: no cover
        yield
        return
    current = DefaultScope.get_current_instance()
    if current is None or current.scope_name != 'mmpretrain':
        DefaultScope.get_instance(f'mmdigrap-test-{uuid.uuid4().hex}', scope_name='mmpretrain')
    yield
