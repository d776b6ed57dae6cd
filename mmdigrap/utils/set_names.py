"""The ``<group>_s<severity>`` naming of ID/OOD test sets, shared by datasets and metrics."""
import re
from typing import Optional, Tuple

__all__ = ['parse_set_name']

_SEVERITY_SUFFIX = re.compile(r'^(?P<group>.+)_s(?P<severity>\d+)$')


def parse_set_name(name: str) -> Tuple[str, Optional[int]]:
    """``'gaussian_noise_s3'`` -> ``('gaussian_noise', 3)``; other names -> ``(name, None)``."""
    m = _SEVERITY_SUFFIX.match(name)
    if m:
        return m.group('group'), int(m.group('severity'))
    return name, None
