"""The router interface: how a traffic split is applied and read back.

A router can build its desired objects (pure, used by ``mlcanary render`` and golden tests), apply
them, and observe whether the target it was given is in effect and what share the canary actually
gets. Routers never weight a backend whose Deployment is not available: :func:`safe_target` clamps
the target before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from mlcanary.engine import RevisionObservation, SetTraffic, TrafficObservation
from mlcanary.kube import EnsureResult, Kube
from mlcanary.models import ModelDeploymentSpec, RouterKind
from mlcanary.resources import Owner


@dataclass(frozen=True)
class RouteContext:
    owner: Owner
    spec: ModelDeploymentSpec
    revisions: Mapping[str, RevisionObservation]


def available(ctx: RouteContext, revision: str) -> bool:
    observed = ctx.revisions.get(revision)
    return observed is not None and observed.available


def safe_target(target: SetTraffic, revisions: Mapping[str, RevisionObservation]) -> SetTraffic:
    """Never send traffic to a revision that is not available.

    A canary that is not available gets weight 0. If stable is unavailable but the canary is, the
    canary keeps its weight (moving everything to an available canary is not this layer's decision)."""
    if target.canary is None:
        return target
    canary = revisions.get(target.canary)
    if canary is None or not canary.available:
        return SetTraffic(target.stable, target.canary, 0)
    return target


class Router(Protocol):
    kind: ClassVar[RouterKind]

    def desired_objects(self, ctx: RouteContext, target: SetTraffic) -> list[dict[str, Any]]:
        """The router's own objects for ``target`` (made safe first)."""
        ...

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> list[EnsureResult]:
        """Bring the router's objects in line with ``target`` (made safe first); what each write did."""
        ...

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        """Whether ``target`` (made safe) is in effect, and the share served, read back from the cluster."""
        ...

    async def remove(self, kube: Kube, owner: Owner) -> None:
        """Delete this router's own objects (the ModelDeployment switched to another router)."""
        ...
