"""Replica-ratio router: no mesh. One entry Service selects the pods of both revisions, so the canary
gets the share of traffic that its ready pods are of all ready pods (see :mod:`mlcanary.weights` for
the rounding). The engine sets the replica counts; this router only reads back whether they settled.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mlcanary.engine import SetTraffic, TrafficObservation
from mlcanary.kube import Kube
from mlcanary.resources import Owner
from mlcanary.routers.base import RouteContext, safe_target
from mlcanary.weights import actual_weight


class ReplicaRouter:
    kind: ClassVar[str] = "replicas"

    def desired_objects(self, ctx: RouteContext, target: SetTraffic) -> list[dict[str, Any]]:
        return []  # the entry Service, common to every router, is all it needs

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> None:
        return None

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        return self.observe_revisions(ctx, target)

    async def remove(self, kube: Kube, owner: Owner) -> None:
        return None  # it owns nothing beyond the entry Service every router uses

    @staticmethod
    def observe_revisions(ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        target = safe_target(target, ctx.revisions)
        stable = ctx.revisions.get(target.stable)
        canary = ctx.revisions.get(target.canary) if target.canary else None
        stable_ready = stable.ready_replicas if stable else 0
        canary_ready = canary.ready_replicas if canary else 0
        weight = actual_weight(stable_ready, canary_ready)
        settled = (
            all(r is None or r.ready_replicas == r.desired_replicas for r in (stable, canary))
            and stable is not None
        )
        if target.canary_weight == 0:
            in_sync = settled and canary_ready == 0 and stable_ready > 0
        elif target.canary_weight == 100:
            in_sync = settled and stable_ready == 0 and canary_ready > 0
        else:
            in_sync = settled and canary_ready > 0 and stable_ready > 0
        return TrafficObservation(
            in_sync=in_sync,
            verified=True,  # the Service's endpoints are the ready pods: nothing more to confirm
            actual_weight=weight,
            message=f"ready pods stable={stable_ready} canary={canary_ready}",
        )
