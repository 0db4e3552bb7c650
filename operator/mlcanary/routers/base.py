"""The router interface: how a traffic split is applied and read back.

A router can build its desired objects (pure, used by ``mlcanary render`` and golden tests), apply
them, and observe whether the target it was given is in effect. Routers never weight a backend whose
Deployment is not available: :func:`safe_target` clamps the target before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from mlcanary.engine import RevisionObservation, SetTraffic, TrafficObservation
from mlcanary.kube import Kube, KubeError, Resource
from mlcanary.models import ModelDeploymentSpec
from mlcanary.resources import Owner


@dataclass(frozen=True)
class RouteContext:
    owner: Owner
    spec: ModelDeploymentSpec
    revisions: Mapping[str, RevisionObservation]


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
    kind: ClassVar[str]

    def desired_objects(self, ctx: RouteContext, target: SetTraffic) -> list[dict[str, Any]]:
        """The router's own objects for ``target`` (already made safe)."""
        ...

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> None: ...

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        """Whether ``target`` (made safe) is in effect, read back from the cluster."""
        ...

    async def remove(self, kube: Kube, owner: Owner) -> None:
        """Delete this router's own objects (the ModelDeployment switched to another router)."""
        ...


async def remove_owned(kube: Kube, resource: Resource, owner: Owner) -> bool:
    """Delete the object named after ``owner`` if, and only if, ``owner`` controls it."""
    try:
        live = await kube.get(resource, owner.namespace, owner.name)
    except KubeError as error:
        if error.status == 404:  # the kind is not installed at all
            return False
        raise
    if live is None:
        return False
    refs = live["metadata"].get("ownerReferences") or []
    if not any(ref.get("uid") == owner.uid and ref.get("controller") for ref in refs):
        return False  # a user's object of the same name: never ours to delete
    return await kube.delete(resource, owner.namespace, owner.name)
