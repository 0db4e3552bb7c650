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

**With autoscaling** (``serving.autoscaling``) an HPA owns the replica count of every revision it
scales, and the plan says ``None`` for those: the engine never writes their replicas. Behind mesh
routers both revisions scale on their own load. Behind the replicas router only stable has an HPA,
and the canary runs ``canary_pods(stable's current pods, w)`` (at most ``maxReplicas``), recomputed
every tick from the stable's live count. Its share can only exceed the step if stable loses pods
before the canary follows, so while a canary runs, stable's HPA is told not to scale down
(``hold_stable_scale_down``: ``behavior.scaleDown.selectPolicy: Disabled``); scaling up only lowers
the canary's share, which the next tick restores. At 100% (the promotion) the engine takes the count
back from the HPA: both revisions run the larger of their current counts (within the bounds), stable
goes once the canary's are ready, and the promoted revision gets its HPA back.

The count is taken against stable's **ready** pods too, so when stable loses pods (a crash, a hand
edit) the canary shrinks with it and never serves more than its step. A step is realisable when it
gives the canary at least one pod, i.e. ``w ≥ 100 / (N + 1)``; the models refuse steps that are not.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaPlan:
    """Pods per revision; ``None``: the revision's HPA decides."""

    stable: int | None
    canary: int | None
    hold_stable_scale_down: bool = False


@dataclass(frozen=True)
class Autoscaled:
    """The HPA bounds of ``serving.autoscaling``."""

    min_replicas: int
    max_replicas: int


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
    autoscaled: Autoscaled | None = None,
    stable_current: int = 0,
    canary_current: int = 0,
) -> ReplicaPlan:
    """Pods to ask for now for stable and canary (see the module docstring). With ``autoscaled``,
    ``stable_current`` and ``canary_current`` are the revisions' live replica counts (what their
    HPAs last set) and ``replicas`` is not used.

    >>> replica_plan(True, 10, 20, stable_ready=10, canary_ready=0)
    ReplicaPlan(stable=10, canary=2, hold_stable_scale_down=False)
    >>> replica_plan(True, 10, 20, stable_ready=0, canary_ready=2)     # stable lost its pods
    ReplicaPlan(stable=10, canary=0, hold_stable_scale_down=False)
    >>> replica_plan(True, 10, 80, stable_ready=10, canary_ready=10)   # above 50%: stable shrinks
    ReplicaPlan(stable=3, canary=10, hold_stable_scale_down=False)
    >>> replica_plan(True, 4, 100, stable_ready=4, canary_ready=2)     # promoting: canary first
    ReplicaPlan(stable=4, canary=4, hold_stable_scale_down=False)
    >>> replica_plan(True, 4, 100, stable_ready=4, canary_ready=4)
    ReplicaPlan(stable=0, canary=4, hold_stable_scale_down=False)
    >>> replica_plan(False, 3, 20, stable_ready=3, canary_ready=0)     # a mesh router
    ReplicaPlan(stable=3, canary=3, hold_stable_scale_down=False)
    >>> hpa = Autoscaled(2, 20)
    >>> replica_plan(False, 1, 20, stable_ready=3, canary_ready=0, autoscaled=hpa)   # HPAs decide
    ReplicaPlan(stable=None, canary=None, hold_stable_scale_down=False)
    >>> replica_plan(True, 1, 20, stable_ready=12, canary_ready=0, autoscaled=hpa, stable_current=12)
    ReplicaPlan(stable=None, canary=3, hold_stable_scale_down=True)
    >>> replica_plan(True, 1, 100, stable_ready=6, canary_ready=2, autoscaled=hpa,
    ...              stable_current=6, canary_current=2)                 # promoting: counts taken back
    ReplicaPlan(stable=6, canary=6, hold_stable_scale_down=False)
    """
    if autoscaled is not None:
        return _autoscaled_plan(
            follows_ready_pods, weight, autoscaled, stable_ready, canary_ready, stable_current, canary_current
        )
    if replicas < 1:
        raise ValueError(f"replicas {replicas} must be at least 1")
    if not follows_ready_pods:
        return ReplicaPlan(stable=replicas, canary=replicas)
    if weight == 100:
        return ReplicaPlan(stable=0 if canary_ready >= replicas else replicas, canary=replicas)
    stable = replicas if weight <= 50 else -(-replicas * (100 - weight) // weight)
    canary = min(replicas, canary_pods(replicas, weight), canary_pods(stable_ready, weight))
    return ReplicaPlan(stable=stable, canary=canary)


def _autoscaled_plan(
    follows_ready_pods: bool,
    weight: int,
    bounds: Autoscaled,
    stable_ready: int,
    canary_ready: int,
    stable_current: int,
    canary_current: int,
) -> ReplicaPlan:
    if not follows_ready_pods:
        return ReplicaPlan(stable=None, canary=None)
    if weight == 100:
        pods = min(bounds.max_replicas, max(bounds.min_replicas, stable_current, canary_current))
        return ReplicaPlan(stable=0 if canary_ready >= pods else pods, canary=pods)
    # The smaller of stable's live count and its ready pods: a scale-down already decided counts.
    stable_pods = min(stable_ready, stable_current)
    canary = min(bounds.max_replicas, canary_pods(stable_pods, weight))
    hold = weight > 0 or canary_ready > 0 or canary_current > 0
    return ReplicaPlan(stable=None, canary=canary, hold_stable_scale_down=hold)


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
