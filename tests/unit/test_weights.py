"""Replica arithmetic of the replica-ratio router, and the modules' doctests."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcanary import durations, weights
from mlcanary.weights import ReplicaSplit, actual_weight, replica_split, step_weight, target_split


@pytest.mark.parametrize("module", [weights, durations])
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0


@pytest.mark.parametrize(
    ("total", "weight", "stable", "canary"),
    [
        # the worked examples of the module docstring
        (4, 0, 4, 0),
        (4, 5, 3, 1),
        (4, 50, 2, 2),
        (4, 80, 1, 3),
        (4, 100, 0, 4),
        # one replica: any split runs one pod of each
        (1, 0, 1, 0),
        (1, 5, 1, 1),
        (1, 99, 1, 1),
        (1, 100, 0, 1),
        # rounding up, and stable keeps one pod while it carries traffic
        (10, 5, 9, 1),
        (10, 15, 8, 2),
        (10, 99, 1, 9),
        (3, 20, 2, 1),
        (3, 50, 1, 2),
    ],
)
def test_target_split(total: int, weight: int, stable: int, canary: int) -> None:
    assert target_split(total, weight) == ReplicaSplit(stable=stable, canary=canary)


@pytest.mark.parametrize(("total", "weight"), [(4, -1), (4, 101), (0, 50), (-1, 0)])
def test_target_split_refuses_impossible_input(total: int, weight: int) -> None:
    with pytest.raises(ValueError, match=r"weight|total"):
        target_split(total, weight)


@pytest.mark.parametrize(
    ("total", "weight", "stable_ready", "canary_ready", "expected"),
    [
        (4, 50, 4, 0, (4, 2)),  # canary pods not ready yet: stable keeps its pods
        (4, 50, 4, 1, (3, 2)),  # one canary pod ready: stable gives up one
        (4, 50, 4, 2, (2, 2)),  # settled
        (4, 0, 2, 2, (4, 2)),  # rollback: stable first, canary pods kept until replaced
        (4, 0, 4, 2, (4, 0)),  # stable back: canary goes
        (4, 0, 4, 0, (4, 0)),  # a canary that never came up is not capacity
        (4, 100, 2, 2, (2, 4)),  # promotion: stable shrinks as canary pods become ready
        (4, 100, 2, 4, (0, 4)),
    ],
)
def test_replica_split_keeps_capacity_while_moving(
    total: int, weight: int, stable_ready: int, canary_ready: int, expected: tuple[int, int]
) -> None:
    split = replica_split(total, weight, stable_ready=stable_ready, canary_ready=canary_ready)
    assert (split.stable, split.canary) == expected


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 200), weight=st.integers(0, 100))
def test_target_split_properties(total: int, weight: int) -> None:
    split = target_split(total, weight)
    assert 0 <= split.stable <= total and 0 <= split.canary <= total
    assert (split.canary == 0) == (weight == 0)  # any traffic gets a pod, none gets none
    assert (split.stable == 0) == (weight == 100)  # stable keeps a pod while it carries traffic
    if total > 1:
        assert split.stable + split.canary == total
        if 0 < weight < 100:
            # the canary's share is the smallest one not below the weight (within the 1..total-1 clamp)
            assert split.canary == min(max(1, -(-total * weight // 100)), total - 1)


@settings(max_examples=150, deadline=None)
@given(
    total=st.integers(1, 12),
    moves=st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=25
    ),
)
def test_ready_capacity_never_drops_below_total(total: int, moves: list[tuple[int, int, int]]) -> None:
    """Pods become ready only some time after being asked for; scale-downs take effect at once.

    Starting settled on stable, whatever weights are asked for and however slowly pods come up, the
    ready pods of both revisions together never drop below ``total``."""
    stable_ready, canary_ready = total, 0
    for weight, stable_progress, canary_progress in moves:
        split = replica_split(total, weight, stable_ready=stable_ready, canary_ready=canary_ready)
        assert 0 <= split.stable <= total and 0 <= split.canary <= total
        target = target_split(total, weight)
        assert split.stable >= target.stable and split.canary >= target.canary
        # scale-down now, scale-up by some pods later
        stable_ready = min(stable_ready, split.stable)
        canary_ready = min(canary_ready, split.canary)
        assert stable_ready + canary_ready >= total
        stable_ready = min(split.stable, stable_ready + stable_progress)
        canary_ready = min(split.canary, canary_ready + canary_progress)
        assert stable_ready + canary_ready >= total


@settings(max_examples=150, deadline=None)
@given(total=st.integers(1, 12), weights_=st.lists(st.integers(0, 100), min_size=1, max_size=6))
def test_replica_split_converges_to_the_target(total: int, weights_: list[int]) -> None:
    """When pods become ready as asked, each weight is reached within two rounds."""
    stable_ready, canary_ready = total, 0
    for weight in weights_:
        for _ in range(2):
            split = replica_split(total, weight, stable_ready=stable_ready, canary_ready=canary_ready)
            stable_ready, canary_ready = split.stable, split.canary
        assert replica_split(total, weight, stable_ready, canary_ready) == target_split(total, weight)


@pytest.mark.parametrize(
    ("stable_ready", "canary_ready", "expected"),
    [(0, 0, None), (4, 0, 0), (0, 3, 100), (3, 1, 25), (1, 1, 50), (2, 1, 33)],
)
def test_actual_weight(stable_ready: int, canary_ready: int, expected: int | None) -> None:
    assert actual_weight(stable_ready, canary_ready) == expected


def test_step_weight_is_one_based_and_bounded() -> None:
    steps = [5, 20, 50, 100]
    assert [step_weight(steps, i) for i in (1, 2, 3, 4)] == steps
    for bad in (0, 5):
        with pytest.raises(ValueError, match="outside"):
            step_weight(steps, bad)
