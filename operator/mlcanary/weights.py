"""Pure step and replica arithmetic: how many pods each revision runs, decided in one place.

:func:`replica_plan` is used by the engine (every tick) and by ``mlcanary render``.

**Mesh routers** (Gateway API, Istio) split traffic by weight in the proxy, so both revisions run
``serving.replicas`` (N) pods and the weight alone decides the share.

**The replicas router** has no proxy: one Service selects the ready pods of both revisions, so the
canary's share of traffic is its share of ready pods. Up to 50% the stable revision keeps its N pods
(capacity never drops, and a rollback only removes canary pods) and the canary runs the most pods
that keep its share at or below the step's weight ``w``; above 50% the canary runs N pods and stable
the fewest that keep the canary's share at or below ``w``::

    w <= 50:  stable N, canary floor(N * w / (100 - w))      share = canary / (stable + canary) <= w
    w >  50:  canary N, stable ceil(N * (100 - w) / w)

Worked examples (N = 10):

=======  ============  ============  ========  ============================================
weight   stable pods   canary pods   share     why
=======  ============  ============  ========  ============================================
5        10            0             -         not realisable: one pod beside 10 is 9.1%
10       10            1             9.1%      1 / 11
20       10            2             16.7%     2 / 12 (3 pods would be 23%)
50       10            10            50%       as many as stable
80       3             10            76.9%     10 / 13 (2 stable pods would be 83%)
100      0             10            100%      stable goes once the canary's 10 are ready
=======  ============  ============  ========  ============================================

The count is taken against stable's **ready** pods too, so when stable loses pods (a crash, a hand
edit) the canary shrinks with it and never serves more than its step. A step is realisable when it
gives the canary at least one pod, i.e. ``w ≥ 100 / (N + 1)``; the models refuse steps that are not.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaPlan:
    stable: int
    canary: int


def canary_pods(stable_pods: int, weight: int) -> int:
    """The most canary pods whose share beside ``stable_pods`` stays at or below ``weight`` percent.

    >>> canary_pods(10, 20), canary_pods(10, 5), canary_pods(3, 50), canary_pods(3, 80)
    (2, 0, 3, 12)
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is outside 0-100")
    if weight == 0 or stable_pods <= 0:
        return 0
    if weight == 100:
        raise ValueError("at 100% the canary is sized by the promotion, not by a share")
    return (stable_pods * weight) // (100 - weight)


def smallest_step(replicas: int) -> int:
    """The smallest weight (percent) the replicas router can give a canary beside ``replicas`` pods.

    >>> smallest_step(1), smallest_step(4), smallest_step(10), smallest_step(19)
    (50, 20, 10, 5)
    """
    weight = 1
    while canary_pods(replicas, weight) < 1:
        weight += 1
    return weight


def realisable(replicas: int, weight: int) -> bool:
    """Whether the replicas router can serve ``weight`` with ``replicas`` stable pods."""
    return weight == 100 or canary_pods(replicas, weight) >= 1


def replica_plan(
    follows_ready_pods: bool,
    replicas: int,
    weight: int,
    *,
    stable_ready: int,
    canary_ready: int,
) -> ReplicaPlan:
    """Pods to ask for now for stable and canary (see the module docstring).

    >>> replica_plan(True, 10, 20, stable_ready=10, canary_ready=0)
    ReplicaPlan(stable=10, canary=2)
    >>> replica_plan(True, 10, 20, stable_ready=0, canary_ready=2)     # stable lost its pods
    ReplicaPlan(stable=10, canary=0)
    >>> replica_plan(True, 10, 80, stable_ready=10, canary_ready=10)   # above 50%: stable shrinks
    ReplicaPlan(stable=3, canary=10)
    >>> replica_plan(True, 4, 100, stable_ready=4, canary_ready=2)     # promoting: canary first
    ReplicaPlan(stable=4, canary=4)
    >>> replica_plan(True, 4, 100, stable_ready=4, canary_ready=4)
    ReplicaPlan(stable=0, canary=4)
    >>> replica_plan(False, 3, 20, stable_ready=3, canary_ready=0)     # a mesh router
    ReplicaPlan(stable=3, canary=3)
    """
    if replicas < 1:
        raise ValueError(f"replicas {replicas} must be at least 1")
    if not follows_ready_pods:
        return ReplicaPlan(stable=replicas, canary=replicas)
    if weight == 100:
        return ReplicaPlan(stable=0 if canary_ready >= replicas else replicas, canary=replicas)
    stable = replicas if weight <= 50 else -(-replicas * (100 - weight) // weight)
    canary = min(replicas, canary_pods(replicas, weight), canary_pods(stable_ready, weight))
    return ReplicaPlan(stable=stable, canary=canary)


def served_share(stable_ready: int, canary_ready: int) -> float | None:
    """The canary's share of ready pods in percent, to one decimal (None when nothing is ready)."""
    ready = stable_ready + canary_ready
    if ready == 0:
        return None
    return round(100 * canary_ready / ready, 1)


def step_weight(steps: list[int], step: int) -> int:
    """Weight of 1-based ``step`` in ``steps`` (which already ends with 100)."""
    if not 1 <= step <= len(steps):
        raise ValueError(f"step {step} is outside 1-{len(steps)}")
    return steps[step - 1]
