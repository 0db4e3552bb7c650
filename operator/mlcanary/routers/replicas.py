"""Replica-ratio router: no mesh. The model's entry Service selects the ready pods of both revisions,
so the canary's share of traffic is its share of ready pods. The engine sizes both revisions with
:func:`mlcanary.weights.replica_plan`; this router owns no object of its own and reads the split back
from the revisions' ready pods.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mlcanary.engine import SetTraffic, TrafficObservation
from mlcanary.kube import EnsureResult, Kube
from mlcanary.models import RouterKind
from mlcanary.resources import Owner
from mlcanary.routers.base import RouteContext, safe_target
from mlcanary.weights import served_share


class ReplicaRouter:
    kind: ClassVar[RouterKind] = RouterKind.REPLICAS

    def desired_objects(self, ctx: RouteContext, target: SetTraffic) -> list[dict[str, Any]]:
        return []  # the entry Service, common to every router, is the split

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> list[EnsureResult]:
        return []  # the replica counts the engine asks for are the split

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        return self.observe_revisions(ctx, target)

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
