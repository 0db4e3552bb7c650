"""Replica-ratio router: no mesh. The model's entry Service selects the ready pods of both revisions,
so the canary's share of traffic is its share of ready pods. The engine sizes both revisions with
:func:`mlcanary.weights.replica_plan`; this router owns no object of its own and reads the split back
from the revisions' ready pods.

*In sync* when the ready pods realise the target; *verified* once the same ready pods have been read
back for ``settleTime`` (default 2s): endpoints reach every node's proxy some moments after a pod
turns ready or unready, and a promotion must not be declared done while the old pods still answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from mlcanary.durations import parse_duration
from mlcanary.engine import SetTraffic, TrafficObservation
from mlcanary.kube import EnsureResult, Kube
from mlcanary.models import RouterKind
from mlcanary.resources import Owner
from mlcanary.routers.base import RouteContext, safe_target
from mlcanary.weights import served_share


class ReplicaRouter:
    kind: ClassVar[RouterKind] = RouterKind.REPLICAS

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (namespace, name) -> (what was read back, since when). In memory: a restarted operator
        # waits one settleTime again, which only delays a step.
        self._first_seen: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {}

    def desired_objects(self, ctx: RouteContext, target: SetTraffic) -> list[dict[str, Any]]:
        return []  # the entry Service, common to every router, is the split

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> list[EnsureResult]:
        return []  # the replica counts the engine asks for are the split

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        observation = self.observe_revisions(ctx, target)
        config = ctx.spec.traffic.replicas
        settle = parse_duration(config.settle_time).total_seconds() if config is not None else 0.0
        seen = (
            target,
            tuple(sorted((n, r.desired_replicas, r.ready_replicas) for n, r in ctx.revisions.items())),
        )
        key = (ctx.owner.namespace, ctx.owner.name)
        now = self._clock()
        first = self._first_seen.get(key)
        if first is None or first[0] != seen:
            self._first_seen[key] = first = (seen, now)
        waited = now - first[1]
        if waited >= settle:
            return observation
        return TrafficObservation(
            in_sync=observation.in_sync,
            verified=False,
            served_weight=observation.served_weight,
            message=f"{observation.message}; unchanged for {waited:.1f}s of settleTime {settle:g}s",
        )

    def forget(self, namespace: str, name: str) -> None:
        self._first_seen.pop((namespace, name), None)

    async def remove(self, kube: Kube, owner: Owner) -> None:
        return None

    @staticmethod
    def observe_revisions(ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        """In sync when every revision has the pods it was asked for and the canary's share of ready
        pods is what the target allows: none at 0%, all at 100%, at most the weight in between."""
        target = safe_target(target, ctx.revisions)
        stable = ctx.revisions.get(target.stable)
        canary = ctx.revisions.get(target.canary) if target.canary else None
        stable_ready = stable.ready_replicas if stable else 0
        canary_ready = canary.ready_replicas if canary else 0
        served = served_share(stable_ready, canary_ready)
        settled = stable is not None and all(
            r is None or r.ready_replicas == r.desired_replicas for r in (stable, canary)
        )
        weight = target.canary_weight
        message = f"ready pods stable={stable_ready} canary={canary_ready}"
        if weight == 0:
            in_sync = settled and canary_ready == 0 and stable_ready > 0
        elif weight == 100:
            in_sync = settled and stable_ready == 0 and canary_ready > 0
        else:
            over = served is not None and served > weight
            if over:
                message += f": the canary serves {served:g}%, more than {weight}%"
            in_sync = settled and canary_ready > 0 and stable_ready > 0 and not over
        return TrafficObservation(
            in_sync=in_sync,
            verified=True,  # the Service's endpoints are the ready pods: nothing more to confirm
            served_weight=served if target.canary else 0.0,
            message=message,
        )
