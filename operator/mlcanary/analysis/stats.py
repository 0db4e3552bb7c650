"""Statistics for canary analysis, with the standard library only (no scipy, no numpy).

* :func:`two_proportion_test`: is the canary's error (or miss) rate higher than stable's by more
  than a margin? A one-sided z-test on request counts.
* :func:`psi`: population stability index between two count distributions, and
  :func:`psi_noise_floor`, the PSI that sampling noise alone produces, so that a thin sample is
  reported as Inconclusive instead of as drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

PSI_EPSILON = 1e-4
"""Floor for a bucket's share in :func:`psi`: an empty bucket on one side gives a large, finite term."""

MIN_EXPECTED_COUNT = 5.0
"""The normal approximation of the z-test is trusted when every expected count is at least this."""

_NORMAL = NormalDist()


@dataclass(frozen=True)
class ProportionTest:
    """One-sided test of H0: p_canary - p_stable <= margin against H1: it is larger."""

    canary_rate: float
    stable_rate: float
    margin: float
    z: float  # test statistic (+inf / -inf when the standard error is 0)
    p_value: float  # P(Z >= z) under H0
    critical_z: float  # the z above which H0 is rejected at the confidence level
    min_expected: float  # smallest expected count of bad and good outcomes in either group
    valid: bool  # whether the normal approximation holds (min_expected >= MIN_EXPECTED_COUNT)

    @property
    def canary_looks_worse(self) -> bool:
        return self.canary_rate - self.stable_rate > self.margin

    @property
    def significant(self) -> bool:
        return self.z > self.critical_z


def two_proportion_test(
    canary_bad: float,
    canary_total: float,
    stable_bad: float,
    stable_total: float,
    *,
    margin: float = 0.0,
    confidence: float = 0.95,
) -> ProportionTest:
    """One-sided two-proportion z-test that the canary's rate exceeds stable's by more than ``margin``.

    With ``margin == 0`` the standard error is pooled (the classic test of equal rates); with a
    margin the rates differ under H0, so the unpooled (Wald) standard error is used. Validity is the
    textbook rule: every expected count (bad and good, canary and stable) at the pooled rate is >= 5.

    >>> t = two_proportion_test(60, 500, 40, 500)
    >>> round(t.z, 3), round(t.p_value, 4)
    (2.108, 0.0175)
    """
    if canary_total <= 0 or stable_total <= 0:
        raise ValueError("both groups need at least one request")
    if not 0.5 < confidence < 1:
        raise ValueError("confidence must be between 0.5 and 1")
    p_c = min(max(canary_bad / canary_total, 0.0), 1.0)
    p_s = min(max(stable_bad / stable_total, 0.0), 1.0)
    pooled = min(max((canary_bad + stable_bad) / (canary_total + stable_total), 0.0), 1.0)
    if margin == 0:
        se = math.sqrt(pooled * (1 - pooled) * (1 / canary_total + 1 / stable_total))
    else:
        se = math.sqrt(p_c * (1 - p_c) / canary_total + p_s * (1 - p_s) / stable_total)
    excess = p_c - p_s - margin
    # No variance (all or nothing on both sides): the sign of the excess decides.
    no_variance = math.copysign(math.inf, excess) if excess != 0 else 0.0
    z = excess / se if se > 0 else no_variance
    p_value = 1.0 - _NORMAL.cdf(z) if math.isfinite(z) else (0.0 if z > 0 else 1.0)
    min_expected = min(canary_total, stable_total) * min(pooled, 1 - pooled)
    return ProportionTest(
        canary_rate=p_c,
        stable_rate=p_s,
        margin=margin,
        z=z,
        p_value=p_value,
        critical_z=_NORMAL.inv_cdf(confidence),
        min_expected=min_expected,
        valid=min_expected >= MIN_EXPECTED_COUNT,
    )


def psi(expected: Mapping[str, float], actual: Mapping[str, float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over the union of buckets.

    Inputs are counts per bucket; each side is normalised to shares, and a share below ``epsilon``
    is raised to ``epsilon`` so an empty bucket gives a large finite term instead of infinity.
    PSI is symmetric in its two arguments.

    >>> psi({"a": 50, "b": 50}, {"a": 50, "b": 50})
    0.0
    >>> round(psi({"a": 90, "b": 10}, {"a": 10, "b": 90}), 4)
    3.5156
    """
    total_e = sum(max(v, 0.0) for v in expected.values())
    total_a = sum(max(v, 0.0) for v in actual.values())
    if total_e <= 0 or total_a <= 0:
        raise ValueError("both distributions need a positive total")
    value = 0.0
    for key in set(expected) | set(actual):
        e = max(max(expected.get(key, 0.0), 0.0) / total_e, epsilon)
        a = max(max(actual.get(key, 0.0), 0.0) / total_a, epsilon)
        value += (a - e) * math.log(a / e)
    return value


def merge_sparse_buckets(
    expected: Mapping[str, float],
    actual: Mapping[str, float],
    order: Sequence[str] | None = None,
    min_count: float = MIN_EXPECTED_COUNT,
) -> tuple[dict[str, float], dict[str, float]]:
    """Merge buckets until each holds at least ``min_count`` expected observations of the smaller
    sample, so PSI on thin data is not dominated by near-empty buckets.

    A bucket that is empty on one side contributes ``share * ln(share / epsilon)`` — about 0.1 for a
    2% share — so a good canary with ~100 predictions over 20 fixed buckets reads PSI 0.3-1.5 by
    chance, and the chi-square noise model behind :func:`psi_noise_floor` does not hold. Merging is the
    usual remedy (as for chi-square tests): with ``order`` (histogram buckets) adjacent buckets are
    merged left to right; without it (classes) the smallest buckets are pooled into one.

    >>> merge_sparse_buckets({"a": 50, "b": 1, "c": 49}, {"a": 45, "b": 0, "c": 55}, ["a", "b", "c"], 5)
    ({'a': 50.0, 'b+c': 50.0}, {'a': 45.0, 'b+c': 55.0})
    """
    keys = (
        list(order)
        if order is not None
        else sorted(set(expected) | set(actual), key=lambda k: -(expected.get(k, 0.0) + actual.get(k, 0.0)))
    )
    keys += [k for k in set(expected) | set(actual) if k not in keys]
    n_e = sum(max(v, 0.0) for v in expected.values())
    n_a = sum(max(v, 0.0) for v in actual.values())
    if n_e <= 0 or n_a <= 0:
        return dict(expected), dict(actual)
    smaller = min(n_e, n_a)

    def enough(e: float, a: float) -> bool:
        return (e / n_e + a / n_a) / 2 * smaller >= min_count

    groups: list[tuple[list[str], float, float]] = []
    current: list[str] = []
    e_sum = a_sum = 0.0
    for key in keys:
        current.append(key)
        e_sum += max(expected.get(key, 0.0), 0.0)
        a_sum += max(actual.get(key, 0.0), 0.0)
        if enough(e_sum, a_sum):
            groups.append((current, e_sum, a_sum))
            current, e_sum, a_sum = [], 0.0, 0.0
    if current:
        if groups:  # a thin tail joins the last full group
            keys_last, e_last, a_last = groups.pop()
            groups.append((keys_last + current, e_last + e_sum, a_last + a_sum))
        else:
            groups.append((current, e_sum, a_sum))
    merged_e = {"+".join(g): e for g, e, _ in groups}
    merged_a = {"+".join(g): a for g, _, a in groups}
    return merged_e, merged_a


def psi_noise_floor(buckets: int, n_expected: float, n_actual: float) -> float:
    """The PSI two samples of one distribution show on average: ``(k - 1) * (1/n1 + 1/n2)``.

    PSI is a symmetrised KL divergence; for samples of one distribution ``PSI * n1*n2/(n1+n2)`` is
    asymptotically chi-square with k-1 degrees of freedom, whose mean is k-1.
    """
    if n_expected <= 0 or n_actual <= 0:
        return math.inf
    return max(buckets - 1, 0) * (1 / n_expected + 1 / n_actual)


def histogram_counts(cumulative: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Per-bucket counts from cumulative ``(le, count)`` pairs (``le`` may be +inf).

    Counts from ``increase()`` are extrapolated, so a cumulative count may dip slightly below the
    previous one; such negative differences are taken as 0.
    """
    counts: dict[str, float] = {}
    previous = 0.0
    for le, count in sorted(cumulative):
        counts[f"{le:g}"] = max(count - previous, 0.0)
        previous = max(previous, count)
    return counts
