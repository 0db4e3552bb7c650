"""predictionDrift on thin samples: merged buckets keep a good canary's PSI at the noise floor,
while a degenerate canary stays far above any sensible bound."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from mlcanary.analysis.stats import merge_sparse_buckets, psi, psi_noise_floor

EDGES = [i / 20 for i in range(1, 21)]


def histogram(n: int, rng: random.Random, constant: float | None = None) -> dict[str, float]:
    counts = {f"{edge:g}": 0.0 for edge in EDGES}
    for _ in range(n):
        score = (
            constant if constant is not None else rng.betavariate(0.4, 0.4)
        )  # a classifier's bimodal scores
        counts[f"{next(edge for edge in EDGES if score <= edge):g}"] += 1
    return counts


def merged_psi(stable: dict[str, float], canary: dict[str, float]) -> tuple[float, float]:
    s, c = merge_sparse_buckets(stable, canary, order=list(canary))
    return psi(s, c), psi_noise_floor(len(c), sum(s.values()), sum(c.values()))


def test_good_canary_with_100_predictions_reads_near_the_noise_floor() -> None:
    rng = random.Random(7)
    raw, merged, floors = [], [], []
    for _ in range(200):
        stable, canary = histogram(1000, rng), histogram(100, rng)
        raw.append(psi(stable, canary))
        value, floor = merged_psi(stable, canary)
        merged.append(value)
        floors.append(floor)
    raw.sort()
    merged.sort()
    mean_floor = sum(floors) / len(floors)
    # Without merging, near-empty buckets dominate: the 95th percentile is several times the floor.
    assert raw[190] > 4 * mean_floor
    # With merging, PSI behaves as the chi-square model says: median near the floor, p95 ~2x.
    assert 0.5 * mean_floor < merged[100] < 1.5 * mean_floor
    assert merged[190] < 2.5 * mean_floor


def test_degenerate_canary_is_far_above_the_floor_after_merging() -> None:
    rng = random.Random(3)
    value, floor = merged_psi(histogram(1000, rng), histogram(100, rng, constant=0.97))
    assert value > 2.0 > 10 * floor


@given(
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 50), min_size=1),
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 50), min_size=1),
)
def test_merging_preserves_totals_and_keeps_every_group_filled(expected, actual) -> None:
    if sum(expected.values()) == 0 or sum(actual.values()) == 0:
        return
    e, a = merge_sparse_buckets(expected, actual)
    assert sum(e.values()) == sum(expected.values())
    assert sum(a.values()) == sum(actual.values())
    assert set(e) == set(a)
    grouped = sorted(k for key in e for k in key.split("+"))
    assert grouped == sorted(set(expected) | set(actual))
