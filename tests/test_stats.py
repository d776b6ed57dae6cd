"""mmdigrap.utils.stats: mean +/- sample std and the seed-paired Student-t interval."""
import math

import pytest

from mmdigrap.utils import stats
from mmdigrap.utils.stats import mean_std, paired_difference, t_quantile


def test_mean_std_sample_std_and_edge_cases():
    m, sd = mean_std([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3, abs=1e-12)
    # sum of squares around 7/3: (16 + 1 + 25) / 9 = 42/9; / (n - 1) = 7/3
    assert sd == pytest.approx(math.sqrt(7 / 3), abs=1e-12)
    assert mean_std([5.0]) == (5.0, None)
    assert mean_std([]) == (None, None)
    with pytest.raises(ValueError, match='finite'):
        mean_std([1.0, float('nan')])


def test_t_quantile_known_values_and_fallback_table():
    assert t_quantile(3) == pytest.approx(3.182446305, abs=1e-6)
    assert t_quantile(4) == pytest.approx(2.776445105, abs=1e-6)
    assert t_quantile(1) == pytest.approx(12.706204736, abs=1e-6)
    assert t_quantile(10, 0.90) == pytest.approx(1.812461123, abs=1e-6)
    # the scipy-free table agrees with scipy
    for df, t in enumerate(stats._T975, start=1):
        assert t_quantile(df) == pytest.approx(t, abs=1e-6)
    with pytest.raises(ValueError, match='df'):
        t_quantile(0)
    with pytest.raises(ValueError, match='level'):
        t_quantile(3, 1.5)


def test_paired_difference_hand_computed_case():
    # per-seed differences a - b = 1, 2, 3, 4 (seed 9 only in a: ignored)
    a = {0: 91.0, 1: 92.0, 2: 93.0, 3: 94.0, 9: 50.0}
    b = {0: 90.0, 1: 90.0, 2: 90.0, 3: 90.0}
    d = paired_difference(a, b)
    # mean 2.5; s = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5/3) = 1.2909944487;
    # half width = t_{0.975,3} * s / sqrt(4) = 3.182446305 * 0.6454972244 = 2.0542603
    assert d.n == 4 and d.seeds == (0, 1, 2, 3)
    assert d.mean == pytest.approx(2.5, abs=1e-9)
    assert d.std == pytest.approx(1.2909944487, abs=1e-6)
    assert d.low == pytest.approx(2.5 - 2.0542603, abs=1e-6)
    assert d.high == pytest.approx(2.5 + 2.0542603, abs=1e-6)
    assert d.significant
    # the same differences around 0 -> the interval contains 0
    d0 = paired_difference({s: v - 2.5 for s, v in a.items()}, b)
    assert d0.mean == pytest.approx(0.0, abs=1e-9) and d0.low < 0 < d0.high
    assert not d0.significant
    # the sign follows a - b
    assert paired_difference(b, a).high == pytest.approx(-d.low, abs=1e-9)


def test_paired_difference_n1_and_no_common_seed():
    d = paired_difference({0: 3.0}, {0: 1.0, 1: 2.0})
    assert d.n == 1 and d.mean == 2.0
    assert d.std is None and d.low is None and d.high is None and not d.significant
    e = paired_difference({0: 3.0}, {1: 2.0})
    assert e.n == 0 and e.mean is None and not e.significant
    with pytest.raises(ValueError, match='level'):
        paired_difference({0: 1.0}, {0: 1.0}, level=0.0)
