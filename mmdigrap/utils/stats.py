"""Seed statistics for the benchmarks: mean +/- sample std and the seed-paired difference.

The robust fine-tuning benchmark (``tools/benchmark/robust_ft_bench.py``) runs every method on
the same seeds; seed ``s`` gives every method the same data order and head initialisation, so
two methods are compared on the per-seed differences ``d_s = a_s - b_s`` (a paired design):

    mean d = (1/n) sum_s d_s,   s_d = sqrt(sum_s (d_s - mean d)^2 / (n - 1))      (ddof = 1)
    95% interval = mean d +/- t_{0.975, n-1} * s_d / sqrt(n)                     (Student t)

and the difference is called significant only when that interval excludes 0. With one seed
there is no spread: ``std``/the interval are ``None`` and nothing is significant.

The t quantile comes from ``scipy.stats.t`` (scipy is pinned in
``requirements/constraints.txt``); without scipy a two-sided 95% table for 1..30 degrees of
freedom is used (other levels then raise).
"""
import math
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = ['mean_std', 't_quantile', 'PairedDiff', 'paired_difference']

# two-sided 95% (0.975 quantile) Student-t values for df = 1..30 (scipy-free fallback)
_T975 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851,
         2.364624252, 2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830,
         2.160368656, 2.144786688, 2.131449546, 2.119905299, 2.109815578, 2.100922040,
         2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562,
         2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456)

Number = Union[int, float]


def mean_std(values: Sequence[Number]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof=1) of ``values``.

    Returns:
        ``(mean, std)``; ``std`` is ``None`` for one value, both are ``None`` for none.

    Raises:
        ValueError: a value is not a finite number.
    """
    xs = [float(v) for v in values]
    if any(not math.isfinite(x) for x in xs):
        raise ValueError(f'mean_std: values must be finite numbers, got {values!r}')
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom, i.e.
    ``t_{(1 + level) / 2, df}`` (3.182446 for df=3 at 95%).

    Raises:
        ValueError: ``df`` < 1 or ``level`` not in (0, 1); without scipy, a level other than
            0.95 or df > 30.
    """
    if int(df) != df or df < 1:
        raise ValueError(f't_quantile: df must be a positive integer, got {df!r}')
    if not 0.0 < level < 1.0:
        raise ValueError(f't_quantile: level must be in (0, 1), got {level!r}')
    try:
        from scipy.stats import t
    except ImportError:  # pragma: no cover - scipy is part of the pinned stack
        if level != 0.95 or df > len(_T975):
            raise ValueError('t_quantile: without scipy only level=0.95 and df <= 30 are '
                             'available; install scipy (requirements/constraints.txt)')
        return _T975[int(df) - 1]
    return float(t.ppf(0.5 + level / 2.0, int(df)))


class PairedDiff(NamedTuple):
    """Seed-paired difference ``a - b`` (same units as the inputs, e.g. accuracy points)."""
    n: int                      #: number of seeds present in both
    mean: Optional[float]       #: mean of the per-seed differences (None when n == 0)
    std: Optional[float]        #: their sample std (None when n < 2)
    low: Optional[float]        #: lower end of the interval (None when n < 2)
    high: Optional[float]       #: upper end of the interval (None when n < 2)
    level: float                #: confidence level of the interval
    seeds: tuple                #: the paired seeds, sorted

    @property
    def significant(self) -> bool:
        """True only when the interval exists and excludes 0."""
        return self.low is not None and (self.low > 0.0 or self.high < 0.0)


def paired_difference(a: Mapping, b: Mapping, level: float = 0.95) -> PairedDiff:
    """The per-seed difference ``a[s] - b[s]`` over the seeds both mappings have, with its
    Student-t interval (module docstring).

    Args:
        a, b: ``{seed: value}`` (e.g. mean OOD accuracy in % per seed). Seeds present in only
            one of them are ignored.
        level: confidence level of the interval (0.95: the 95% interval).

    Returns:
        :class:`PairedDiff`; with no common seed ``n=0`` and every value ``None``.

    Raises:
        ValueError: a value is not a finite number, or ``level`` is not in (0, 1).
    """
    seeds = tuple(sorted(set(a) & set(b)))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    mean, std = mean_std(diffs)
    low = high = None
    if std is not None:
        half = t_quantile(len(diffs) - 1, level) * std / math.sqrt(len(diffs))
        low, high = mean - half, mean + half
    elif not 0.0 < level < 1.0:
        raise ValueError(f'paired_difference: level must be in (0, 1), got {level!r}')
    return PairedDiff(len(diffs), mean, std, low, high, level, seeds)
