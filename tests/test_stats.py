"""tc.stats: seed spread and the tolerance derived from it."""
import math

import pytest

from transformer_challenges.stats import k_of_n, spread


def test_spread_matches_the_sample_statistics():
    s = spread([1.0, 2.0, 4.0])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3) and (s.lo, s.hi) == (1.0, 4.0)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert s.format(2) == "2.33 ± 1.53 (3 seeds)"


def test_tolerance_is_three_sigma_of_a_difference_and_shrinks_for_means():
    s = spread([0.0, 1.0])
    assert s.tolerance() == pytest.approx(3 * s.std * math.sqrt(2))
    assert s.tolerance(averaged=2) == pytest.approx(3 * s.std)
    with pytest.raises(ValueError, match="averaged"):
        s.tolerance(averaged=0)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_spread_rejects_empty_and_non_finite(bad):
    with pytest.raises(ValueError):
        spread(bad)


def test_k_of_n():
    assert k_of_n([True, False, True]) == "2 of 3 seeds"
    with pytest.raises(ValueError):
        k_of_n([])
