"""Pure step and replica arithmetic.

The replica-ratio router has no proxy to split traffic: one Service selects the pods of both
revisions, so the canary's share is its share of ready pods. :func:`replica_split` turns a weight into
replica counts and keeps capacity while it moves.

Worked examples (``total=4``):

=======  ==================  ===============================================
weight   (stable, canary)    why
=======  ==================  ===============================================
0        (4, 0)              no canary traffic
5        (3, 1)              ceil(4*5/100)=1: the smallest share that exists
50       (2, 2)              exact
80       (1, 3)              stable keeps one pod while any traffic stays on it
100      (0, 4)              all traffic on the canary
=======  ==================  ===============================================

With ``total=1`` a split is impossible; any weight strictly between 0 and 100 runs one pod of each
(50% actual). Capacity rule: a revision is only scaled *down* as far as the other revision has ready
pods to take its place, so the sum of ready pods never drops below ``total`` because of a weight change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaSplit:
    stable: int
    canary: int


def target_split(total: int, weight: int) -> ReplicaSplit:
    """Replica counts that realise ``weight`` once every pod is ready (see the module table)."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is outside 0-100")
    if total < 1:
        raise ValueError(f"total replicas {total} must be at least 1")
    if weight == 0:
        return ReplicaSplit(stable=total, canary=0)
    if weight == 100:
        return ReplicaSplit(stable=0, canary=total)
    if total == 1:
        return ReplicaSplit(stable=1, canary=1)
    canary = min(max(1, math.ceil(total * weight / 100)), total - 1)
    return ReplicaSplit(stable=total - canary, canary=canary)


def replica_split(total: int, weight: int, stable_ready: int, canary_ready: int) -> ReplicaSplit:
    """Replica counts to ask for now: the target, but never shrink a revision below what the other
    revision cannot yet replace with ready pods.

    >>> replica_split(4, 50, stable_ready=4, canary_ready=0)   # canary pods not ready: keep stable
    ReplicaSplit(stable=4, canary=2)
    >>> replica_split(4, 50, stable_ready=4, canary_ready=2)
    ReplicaSplit(stable=2, canary=2)
    >>> replica_split(4, 0, stable_ready=2, canary_ready=2)    # rollback: restore stable first
    ReplicaSplit(stable=4, canary=2)
    """
    target = target_split(total, weight)
    stable = max(target.stable, min(total, total - canary_ready))
    canary = max(target.canary, min(total, total - stable_ready))
    if target.canary == 0 and canary_ready == 0:
        canary = 0  # nothing ready to keep: a canary that never came up is not capacity
    return ReplicaSplit(stable=stable, canary=canary)


def actual_weight(stable_ready: int, canary_ready: int) -> int | None:
    """The canary's share of ready pods in percent (None when nothing is ready)."""
    ready = stable_ready + canary_ready
    if ready == 0:
        return None
    return round(100 * canary_ready / ready)


def step_weight(steps: list[int], step: int) -> int:
    """Weight of 1-based ``step`` in ``steps`` (which already ends with 100)."""
    if not 1 <= step <= len(steps):
        raise ValueError(f"step {step} is outside 1-{len(steps)}")
    return steps[step - 1]
