"""Validation of the methods' options: every error names the option, the range and the fix."""
import math
from typing import Optional, Sequence, Tuple

__all__ = ['check_number', 'check_betas', 'check_choice']


def check_number(owner: str, name: str, value, lo: float, fix: str, lo_open: bool = False,
                 hi: Optional[float] = None) -> float:
    """``float(value)`` if it is a finite number in range, else a ValueError naming the fix.

    Args:
        owner: who checks (e.g. ``'DiGraP'`` or ``'DiGraP (param group 1)'``).
        name: the option's name.
        value: the value given.
        lo: lower bound (inclusive unless ``lo_open``).
        fix: what to do instead (appended to the message).
        lo_open: exclude ``lo`` itself.
        hi: inclusive upper bound, or None.

    Raises:
        ValueError: not a number, NaN or infinite, or out of range.
    """
    if isinstance(value, bool):
        raise ValueError(f'{owner}: {name} must be a number, got {value!r}; {fix}')
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{owner}: {name} must be a number, got {value!r}; {fix}') from None
    if not math.isfinite(value):
        raise ValueError(f'{owner}: {name} must be a finite number, got {value}; {fix}')
    if hi is None:
        rng = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        rng = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if (value <= lo if lo_open else value < lo) or (hi is not None and value > hi):
        raise ValueError(f'{owner}: {name} must be {rng}, got {value:g}; {fix}')
    return value


def check_betas(owner: str, betas, name: str = 'betas') -> Tuple[float, float]:
    """Two numbers in [0, 1) as a tuple of floats.

    Raises:
        ValueError: not two numbers, or one outside [0, 1) (NaN included).
    """
    if (not isinstance(betas, (tuple, list)) or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                       and 0.0 <= b < 1.0 for b in betas)):
        raise ValueError(f'{owner}: {name} must be two numbers in [0, 1), got {betas!r} '
                         '(the usual Adam values are (0.9, 0.999))')
    return float(betas[0]), float(betas[1])


def check_choice(owner: str, name: str, value, choices: Sequence, fix: str):
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: another value; the message lists the choices.
    """
    if value not in choices:
        raise ValueError(f'{owner}: {name} must be one of {tuple(choices)}, got {value!r} '
                         f'({fix})')
    return value
