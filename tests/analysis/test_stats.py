"""The statistics against values worked out by hand (and a simulation for the PSI noise floor)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from mlcanary.analysis.stats import histogram_counts, psi, psi_noise_floor, two_proportion_test


def test_pooled_z_test_textbook_example() -> None:
    # 60/500 vs 40/500: pooled p = 0.1, SE = sqrt(0.1 * 0.9 * (2/500)) = 0.018974, z = 0.04 / SE
    t = two_proportion_test(60, 500, 40, 500)
    assert t.z == pytest.approx(2.10819, abs=1e-4)
    assert t.p_value == pytest.approx(0.017507, abs=1e-5)
    assert t.critical_z == pytest.approx(1.644854, abs=1e-6)
    assert t.significant and t.valid and t.canary_looks_worse


def test_unpooled_z_test_with_a_margin() -> None:
    # H0: p_c - p_s <= 0.05; SE = sqrt(.15*.85/200 + .05*.95/400) = 0.0275; z = (0.10 - 0.05) / 0.0275
    t = two_proportion_test(30, 200, 20, 400, margin=0.05)
    assert t.z == pytest.approx(1.818182, abs=1e-5)
    assert t.p_value == pytest.approx(0.034518, abs=1e-5)
    assert t.significant
    assert not two_proportion_test(30, 200, 20, 400, margin=0.05, confidence=0.99).significant
    assert two_proportion_test(30, 200, 20, 400, confidence=0.99).critical_z == pytest.approx(
        2.326348, abs=1e-6
    )


def test_validity_is_the_expected_count_rule() -> None:
    assert two_proportion_test(6, 600, 114, 11400).min_expected == pytest.approx(6.0)
    thin = two_proportion_test(2, 12, 2, 228)  # pooled 4/240: 12 * 0.0167 = 0.2 expected errors
    assert not thin.valid and thin.canary_looks_worse


def test_no_variance_edge_cases() -> None:
    assert two_proportion_test(0, 1000, 0, 1000).z == 0.0
    assert not two_proportion_test(0, 1000, 0, 1000).canary_looks_worse
    everything_failed = two_proportion_test(50, 50, 0, 50, margin=0.1)
    assert everything_failed.z == math.inf and everything_failed.p_value == 0.0
    with pytest.raises(ValueError):
        two_proportion_test(0, 0, 1, 10)


def test_psi_known_values() -> None:
    assert psi({"a": 1, "b": 1}, {"a": 5, "b": 5}) == 0.0
    assert psi({"a": 90, "b": 10}, {"a": 10, "b": 90}) == pytest.approx(0.8 * math.log(9) * 2)
    # an empty bucket on one side is floored at 1e-4
    expected = (0.5 - 1) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert psi({"a": 100}, {"a": 50, "b": 50}) == pytest.approx(expected)
    assert psi({"a": 100}, {"a": 50, "b": 50}) == pytest.approx(psi({"a": 50, "b": 50}, {"a": 100}))
    with pytest.raises(ValueError):
        psi({}, {"a": 1})


def test_psi_noise_floor_matches_simulation() -> None:
    rng = random.Random(7)
    k, n = 10, 1000
    weights = [1, 2, 3, 4, 5, 5, 4, 3, 2, 1]
    values = []
    for _ in range(300):
        a = rng.choices(range(k), weights, k=n)
        b = rng.choices(range(k), weights, k=n)
        values.append(psi(Counter(map(str, a)), Counter(map(str, b))))
    mean = sum(values) / len(values)
    assert psi_noise_floor(k, n, n) == pytest.approx(0.018)
    assert mean == pytest.approx(psi_noise_floor(k, n, n), rel=0.15)
    assert psi_noise_floor(21, 0, 10) == math.inf


def test_histogram_counts_from_cumulative_buckets() -> None:
    assert histogram_counts([(math.inf, 10.0), (0.5, 4.0), (1.0, 9.0)]) == {"0.5": 4.0, "1": 5.0, "inf": 1.0}
    # extrapolated increase() can dip: never a negative count
    assert histogram_counts([(0.5, 4.2), (1.0, 4.1), (math.inf, 5.0)]) == pytest.approx(
        {"0.5": 4.2, "1": 0.0, "inf": 0.8}
    )
