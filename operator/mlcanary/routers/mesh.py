"""What the Gateway API and Istio routers share: one object per ModelDeployment, named after it and
controlled by it, with a weighted rule over the revision Services, applied and read back the same way.

A subclass says how to build its object (pure), how the data plane confirms it (``verify``) and how
to read the canary's share from a live object; this base does the rest:

* **apply**: ensure the object (created only once some revision can answer, never written when it is
  controlled by someone else, written when what the operator owns differs from what is live — a hand
  edit is reverted);
* **observe**: *in sync* when the live object carries the desired one, *verified* when the data plane
  says so, plus the share the live weights give the canary.

Backend ports are the revision Services' own ports, read from the Services: a rollout that changes
``serving.port`` keeps the stable revision reachable on its old port.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from mlcanary import models, ownership
from mlcanary.engine import SetTraffic, TrafficObservation
from mlcanary.kube import SERVICES, EnsureResult, Kube, Outcome, controlled_by
from mlcanary.kubeapi import ApiError, Resource
from mlcanary.models import RouterKind
from mlcanary.resources import HTTP_PORT_NAME, LABEL_MANAGED_BY, LABEL_MDEP, MANAGED_BY, Owner
from mlcanary.routers.base import RouteContext, available, safe_target

logger = logging.getLogger(__name__)


def backends(target: SetTraffic) -> list[tuple[str, int]]:
    """(revision, weight) pairs of the weighted rule; a weight of 0 is left out.

    >>> backends(SetTraffic("v1", None, 0))
    [('v1', 100)]
    >>> backends(SetTraffic("v1", "v2", 0))
    [('v1', 100)]
    >>> backends(SetTraffic("v1", "v2", 20))
    [('v1', 80), ('v2', 20)]
    >>> backends(SetTraffic("v1", "v2", 100))
    [('v2', 100)]
    """
    if target.canary is None or target.canary_weight <= 0:
        return [(target.stable, 100)]
    if target.canary_weight >= 100:
        return [(target.canary, 100)]
    return [(target.stable, 100 - target.canary_weight), (target.canary, target.canary_weight)]


PREDICTION_PATHS = ("/predict", "/v2/models/{model}/infer")
"""The serving image's prediction routes (POST), the only requests ever mirrored: /feedback and
every other path are not idempotent or not predictions (a mirrored /feedback would count a label
twice), so mirror rules match these paths exactly instead of the router's prefix."""


def mirrored_paths(ctx: RouteContext, router_path: models.PathMatch | None) -> list[str]:
    """The prediction paths the router's own path match takes (a regular expression cannot be
    evaluated here: every prediction path is kept)."""
    paths = [p.format(model=ctx.spec.model.name) for p in PREDICTION_PATHS]
    if router_path is None or router_path.type == "RegularExpression":
        return paths
    if router_path.type == "Exact":
        return [p for p in paths if p == router_path.value]
    prefix = router_path.value.rstrip("/")
    return [p for p in paths if p == prefix or p.startswith(prefix + "/")]


def mirroring(target: SetTraffic) -> bool:
    """Whether ``target`` (made safe: an unavailable canary has weight and mirror 0) mirrors."""
    return target.canary is not None and target.mirror_percent > 0


def pinned_revision(rule: models.RouteRule, ctx: RouteContext, target: SetTraffic) -> str:
    """The revision an extra rule sends to: its backend, or stable while the canary is absent or
    not available (pinning testers must not send them to a revision that cannot answer)."""
    if rule.backend == "canary" and target.canary is not None and available(ctx, target.canary):
        return target.canary
    return target.stable


def route_labels(ctx: RouteContext) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": ctx.spec.model.name,
        "app.kubernetes.io/instance": ctx.owner.name,
        "app.kubernetes.io/component": "traffic-split",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MDEP: ctx.owner.name,
    }


def generation(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def share(weights: Mapping[str, int], canary: str | None) -> float | None:
    """The canary's share (percent, one decimal) of integer backend weights."""
    total = sum(weights.values())
    if total <= 0:
        return None
    return round(100 * weights.get(canary or "", 0) / total, 1)


async def revision_ports(kube: Kube, namespace: str, target: SetTraffic) -> dict[str, int]:
    """The ``http`` port of each target revision's Service as it exists (absent Services left out)."""
    ports: dict[str, int] = {}
    for revision in (target.stable, target.canary):
        if revision is None or revision in ports:
            continue
        service = await kube.get(SERVICES, namespace, revision)
        for entry in ((service or {}).get("spec") or {}).get("ports") or []:
            if entry.get("name") == HTTP_PORT_NAME:
                ports[revision] = int(entry["port"])
    return ports


class MeshRouter(abc.ABC):
    kind: ClassVar[RouterKind]
    resource: ClassVar[Resource]

    # --- what a subclass says

    @abc.abstractmethod
    def build(
        self, ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """The object for ``target`` (already safe); ``ports``: revision -> its Service's port."""

    @abc.abstractmethod
    def verify(
        self, ctx: RouteContext, desired: Mapping[str, Any], live: Mapping[str, Any]
    ) -> tuple[bool, str]:
        """Whether the data plane has taken the live object's current generation, and why (not)."""

    @abc.abstractmethod
    def served_weight(self, live: Mapping[str, Any], canary: str | None) -> float | None:
        """The canary's share (percent) of the live weighted rule."""

    # --- shared behaviour

    def desired_objects(
        self, ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
    ) -> list[dict[str, Any]]:
        return [self.build(ctx, safe_target(target, ctx.revisions), ports)]

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> list[EnsureResult]:
        target = safe_target(target, ctx.revisions)
        desired = self.build(ctx, target, await revision_ports(kube, ctx.owner.namespace, target))
        # First deploy: no route to a revision that cannot answer yet.
        can_create = any(available(ctx, rev) for rev, _ in backends(target))
        result = await kube.ensure(desired, ctx.owner, can_create=can_create)
        if result.outcome == Outcome.FOREIGN:
            logger.warning(
                "%s/%s: %s %s exists and is not controlled by this ModelDeployment; not touching it",
                ctx.owner.namespace,
                ctx.owner.name,
                self.resource.kind,
                ctx.owner.name,
            )
        return [result]

    async def remove(self, kube: Kube, owner: Owner) -> None:
        """Delete the object named after ``owner`` if, and only if, ``owner`` controls it."""
        try:
            live = await kube.get(self.resource, owner.namespace, owner.name)
        except ApiError as error:
            if error.not_found:  # the kind is not installed at all
                return
            raise
        if live is not None and controlled_by(live, owner):
            await kube.delete(self.resource, owner.namespace, owner.name)

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        target = safe_target(target, ctx.revisions)
        owner = ctx.owner
        name = f"{self.resource.kind} {owner.name}"
        if not kube.served(self.resource):
            return TrafficObservation(
                False,
                False,
                None,
                f"the API server does not serve {self.resource.plural}: is its CRD installed?",
            )
        live = await kube.get(self.resource, owner.namespace, owner.name)
        if live is None:
            return TrafficObservation(False, False, None, f"{name} does not exist yet")
        if not controlled_by(live, owner):
            return TrafficObservation(
                False, False, None, f"{name} exists but is not controlled by this ModelDeployment"
            )
        desired = self.build(ctx, target, await revision_ports(kube, owner.namespace, target))
        return self.compare(ctx, desired, live, target)

    def compare(
        self, ctx: RouteContext, desired: Mapping[str, Any], live: Mapping[str, Any], target: SetTraffic
    ) -> TrafficObservation:
        """Read-back verdict for a live object against the desired one (pure, for tests)."""
        kind = self.resource.kind
        drift = ownership.drift(desired, live)
        verified, why = self.verify(ctx, desired, live)
        served = self.served_weight(live, target.canary)
        if drift is not None:
            message = f"{kind} differs from desired: {drift}"
        elif verified:
            message = f"{kind} at canary {served}%: {why}"
        else:
            message = f"{kind} at canary {served}%, not yet verified: {why}"
        return TrafficObservation(
            in_sync=drift is None, verified=verified, served_weight=served, message=message
        )
