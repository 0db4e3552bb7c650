"""Replica arithmetic: one sizing function for the engine and `mlcanary render`, and the doctests."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcanary import durations, ownership, weights
from mlcanary.weights import (
    ReplicaPlan,
    canary_pods,
    realisable,
    replica_plan,
    served_share,
    smallest_step,
    step_weight,
)


@pytest.mark.parametrize("module", [weights, durations, ownership])
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0


@pytest.mark.parametrize(
    ("replicas", "weight", "pods", "share"),
    [
        # the worked examples of the module docstring (N = 10)
        (10, 5, 0, None),
        (10, 10, 1, 9.1),
        (10, 20, 2, 16.7),
        (10, 50, 10, 50.0),
        # one replica: only 50% can be served with whole pods
        (1, 20, 0, None),
        (1, 50, 1, 50.0),
        (1, 99, 99, 99.0),
        (19, 5, 1, 5.0),
        (4, 20, 1, 20.0),
    ],
)
def test_canary_pods_never_exceed_the_weight(
    replicas: int, weight: int, pods: int, share: float | None
) -> None:
    assert canary_pods(replicas, weight) == pods
    if pods:
        assert served_share(replicas, pods) == share


@settings(max_examples=300, deadline=None)
@given(replicas=st.integers(0, 300), weight=st.integers(0, 99))
def test_canary_pods_is_the_largest_share_within_the_weight(replicas: int, weight: int) -> None:
    pods = canary_pods(replicas, weight)
    if pods:
        assert pods / (replicas + pods) <= weight / 100
    # one more pod would be too much
    assert weight == 0 or replicas == 0 or (pods + 1) / (replicas + pods + 1) > weight / 100


@pytest.mark.parametrize(
    ("replicas", "smallest"), [(1, 50), (2, 34), (3, 25), (4, 20), (9, 10), (10, 10), (19, 5)]
)
def test_smallest_step(replicas: int, smallest: int) -> None:
    assert smallest_step(replicas) == smallest
    assert realisable(replicas, smallest) and not realisable(replicas, smallest - 1)
    assert realisable(replicas, 100)


@pytest.mark.parametrize(
    ("weight", "stable_ready", "canary_ready", "expected"),
    [
        (0, 4, 2, (4, 0)),  # rollback: canary pods withdrawn at once, stable never shrank
        (20, 4, 0, (4, 1)),
        (50, 4, 1, (4, 4)),
        (50, 2, 4, (4, 2)),  # stable lost pods: the canary shrinks with it
        (50, 0, 4, (4, 0)),  # stable has none ready: the canary gets none either
        (80, 4, 4, (1, 4)),  # above 50%: the canary runs every replica, stable the fewest
        (80, 1, 4, (1, 4)),
        (80, 0, 4, (1, 0)),
        (100, 4, 2, (4, 4)),  # promotion: canary first ...
        (100, 4, 4, (0, 4)),  # ... then stable goes
    ],
)
def test_replica_plan_for_the_replicas_router(
    weight: int, stable_ready: int, canary_ready: int, expected: tuple[int, int]
) -> None:
    plan = replica_plan(True, 4, weight, stable_ready=stable_ready, canary_ready=canary_ready)
    assert (plan.stable, plan.canary) == expected


def test_replica_plan_for_mesh_routers_runs_every_replica_of_both() -> None:
    for weight in (0, 5, 50, 100):
        assert replica_plan(False, 3, weight, stable_ready=0, canary_ready=0) == ReplicaPlan(3, 3)


@settings(max_examples=300, deadline=None)
@given(
    replicas=st.integers(1, 40),
    weight=st.integers(1, 99),
    stable_ready=st.integers(0, 40),
    canary_ready=st.integers(0, 80),
)
def test_canary_share_of_ready_pods_never_exceeds_its_step(
    replicas: int, weight: int, stable_ready: int, canary_ready: int
) -> None:
    """Whatever stable's ready pods are (a crash, a hand edit), once the planned canary pods are in
    effect the canary's share of ready pods is at most the step; up to 50% stable is never scaled
    down, above it stable keeps at least one pod; neither revision runs more than ``replicas``."""
    stable_ready = min(stable_ready, replicas)
    plan = replica_plan(True, replicas, weight, stable_ready=stable_ready, canary_ready=canary_ready)
    assert 1 <= plan.stable <= replicas and 0 <= plan.canary <= replicas
    if weight <= 50:
        assert plan.stable == replicas
    ready_canary = min(canary_ready, plan.canary)
    share = served_share(stable_ready, ready_canary)
    assert share is None or share <= weight


def test_served_share() -> None:
    assert served_share(0, 0) is None
    assert served_share(4, 0) == 0.0
    assert served_share(0, 3) == 100.0
    assert served_share(2, 1) == 33.3


def test_step_weight_is_one_based_and_bounded() -> None:
    steps = [5, 20, 50, 100]
    assert [step_weight(steps, i) for i in (1, 2, 3, 4)] == steps
    for bad in (0, 5):
        with pytest.raises(ValueError, match="outside"):
            step_weight(steps, bad)
