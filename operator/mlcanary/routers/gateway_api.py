"""Gateway API router: one HTTPRoute per ModelDeployment, owned by it, weighting the revision Services.

The route (named after the ModelDeployment) attaches to ``spec.traffic.gatewayAPI.parentRefs`` (a
Gateway, or the model's entry Service in mesh/GAMMA mode) and has:

* one rule per ``extraRules`` entry, each sending its matches to one revision with no weighting
  (e.g. a header match pinning testers to the canary); a weight change never alters them;
* last, the weighted rule: the path match, the stable Service with ``100 - w`` and the canary
  Service with ``w``. A backend whose weight is 0 is left out, so a canary that is not available,
  or whose Service does not exist yet, is never referenced.

Every tick the live route is read back: when it no longer carries the desired spec (a hand edit)
it is written again, whatever the hash annotation says. Weights are *in sync* when the live
route carries the desired spec, and *verified* when every parent's status reports it ``Accepted``
(and not ``ResolvedRefs=False``) for the route's current ``metadata.generation``; the engine only
advances on both.

Backend ports are the revision Services' own ports, read from the Services: a rollout that changes
``serving.port`` keeps the stable revision reachable on its old port.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from mlcanary import models
from mlcanary.engine import SetTraffic, TrafficObservation
from mlcanary.kube import HTTPROUTES, Kube
from mlcanary.resources import LABEL_MANAGED_BY, LABEL_MDEP, MANAGED_BY, Owner
from mlcanary.routers.base import RouteContext, remove_owned, safe_target
from mlcanary.routers.readback import (
    ensure_route,
    generation,
    owned_by,
    revision_ports,
    spec_drift,
)

logger = logging.getLogger(__name__)

# Top-level spec fields the operator decides: one of these set by hand is reverted even when unset
# in the desired object. Fields a newer CRD adds are left alone (see readback.spec_drift).
MANAGED_SPEC = frozenset({"parentRefs", "hostnames", "rules"})

API_VERSION = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
CONTROLLER_NOTE = "the Gateway implementation's controller"


# ------------------------------------------------------------------------------------ pure building


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


def pinned_revision(rule: models.RouteRule, ctx: RouteContext, target: SetTraffic) -> str:
    """The revision an extra rule sends to: its backend, or stable while the canary is absent or
    not available (pinning testers must not send them to a revision that cannot answer)."""
    if rule.backend == "canary" and target.canary is not None:
        canary = ctx.revisions.get(target.canary)
        if canary is not None and canary.available:
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


def parent_ref(ref: models.ParentRef) -> dict[str, Any]:
    """A parentRef with group and kind spelled out (the API server would default them, and would
    default a Service parent's group to the Gateway API group, which no mesh accepts)."""
    out: dict[str, Any] = {"group": ref.effective_group(), "kind": ref.effective_kind(), "name": ref.name}
    if ref.namespace is not None:
        out["namespace"] = ref.namespace
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    if ref.port is not None:
        out["port"] = ref.port
    return out


def _path(path: models.PathMatch) -> dict[str, Any]:
    return {"type": path.type, "value": path.value}


def route_match(match: models.RouteMatch, default_path: models.PathMatch) -> dict[str, Any]:
    """An HTTPRouteMatch with every defaulted field written out. A match without a path takes the
    router's path, so pinned requests are the same requests the weighted rule would have taken."""
    out: dict[str, Any] = {"path": _path(match.path or default_path)}
    if match.headers:
        out["headers"] = [{"type": h.type, "name": h.name, "value": h.value} for h in match.headers]
    if match.query_params:
        out["queryParams"] = [{"type": q.type, "name": q.name, "value": q.value} for q in match.query_params]
    if match.method is not None:
        out["method"] = match.method
    return out


def backend_ref(revision: str, port: int, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": revision, "port": port, "weight": weight}


def httproute(
    ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The HTTPRoute for ``target`` (which must already be safe). ``ports``: revision -> Service port
    (default ``spec.serving.port``)."""
    config = ctx.spec.traffic.gateway_api
    if config is None:
        raise ValueError("spec.traffic.gatewayAPI is not set")
    ports = ports or {}

    def port(revision: str) -> int:
        return ports.get(revision, ctx.spec.serving.port)

    timeouts = config.timeouts.to_wire() if config.timeouts is not None else None
    rules: list[dict[str, Any]] = []
    for extra in config.extra_rules or []:
        revision = pinned_revision(extra, ctx, target)
        rule: dict[str, Any] = {
            "matches": [route_match(m, config.path) for m in extra.matches],
            "backendRefs": [backend_ref(revision, port(revision), 100)],
        }
        if timeouts:
            rule["timeouts"] = dict(timeouts)
        rules.append(rule)
    weighted: dict[str, Any] = {
        "matches": [{"path": _path(config.path)}],
        "backendRefs": [backend_ref(rev, port(rev), weight) for rev, weight in backends(target)],
    }
    if timeouts:
        weighted["timeouts"] = dict(timeouts)
    rules.append(weighted)
    spec: dict[str, Any] = {"parentRefs": [parent_ref(p) for p in config.parent_refs]}
    if config.hostnames:
        spec["hostnames"] = list(config.hostnames)
    spec["rules"] = rules
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": ctx.owner.metadata(ctx.owner.name, route_labels(ctx)),
        "spec": spec,
    }


# ----------------------------------------------------------------------------------------- read-back


def _parent_key(ref: Mapping[str, Any], route_namespace: str) -> tuple[Any, ...]:
    """A parentRef with the API's defaults filled in, for comparing spec and status entries."""
    group = ref.get("group")
    return (
        GATEWAY_GROUP if group is None else group,
        ref.get("kind") or "Gateway",
        ref.get("namespace") or route_namespace,
        ref.get("name"),
        ref.get("sectionName") or None,
        ref.get("port") or None,
    )


def _describe_parent(ref: Mapping[str, Any]) -> str:
    text = f"{ref.get('kind') or 'Gateway'} {ref.get('name')}"
    if ref.get("sectionName"):
        text += f"/{ref['sectionName']}"
    return text


def _condition(entry: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in entry.get("conditions") or []:
        if condition.get("type") == type_:
            found: Mapping[str, Any] = condition
            return found
    return None


def parents_verdict(route: Mapping[str, Any], parent_refs: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether every parent in ``parent_refs`` has accepted the live route at its current generation.

    A parent counts when some ``status.parents`` entry for it (any controller) has ``Accepted=True``
    with ``observedGeneration`` equal to the route's ``metadata.generation`` and does not report
    ``ResolvedRefs=False`` for that generation (a backend the gateway cannot resolve gets errors).
    """
    meta = route.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    current = generation(route)
    entries = ((route.get("status") or {}).get("parents")) or []
    for ref in parent_refs:
        key = _parent_key(ref, namespace)
        mine = [e for e in entries if _parent_key(e.get("parentRef") or {}, namespace) == key]
        problem = f"no status from {CONTROLLER_NOTE} yet"
        accepted = False
        for entry in mine:
            condition = _condition(entry, "Accepted")
            resolved = _condition(entry, "ResolvedRefs")
            if condition is None:
                problem = "no Accepted condition yet"
                continue
            observed = condition.get("observedGeneration")
            if observed != current:
                problem = f"Accepted refers to generation {observed}, route is at {current}"
                continue
            if condition.get("status") != "True":
                problem = f"not accepted: {condition.get('reason')}: {condition.get('message', '')}".rstrip(
                    ": "
                )
                continue
            if (
                resolved is not None
                and resolved.get("observedGeneration") == current
                and resolved.get("status") == "False"
            ):
                problem = f"backends not resolved: {resolved.get('reason')}: {resolved.get('message', '')}"
                continue
            accepted = True
            break
        if not accepted:
            return False, f"{_describe_parent(ref)}: {problem}"
    return True, f"accepted by every parent at generation {current}"


def live_canary_weight(route: Mapping[str, Any], canary: str | None) -> int | None:
    """The canary's share (percent) of the live weighted rule, the route's last rule."""
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return None
    refs = rules[-1].get("backendRefs") or []
    weights = {str(r.get("name")): int(r.get("weight", 1)) for r in refs}
    total = sum(weights.values())
    if total <= 0:
        return None
    return round(100 * weights.get(canary or "", 0) / total)


# ------------------------------------------------------------------------------------------- router


class GatewayAPIRouter:
    kind: ClassVar[str] = "gatewayAPI"

    def desired_objects(
        self, ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
    ) -> list[dict[str, Any]]:
        return [httproute(ctx, safe_target(target, ctx.revisions), ports)]

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> None:
        target = safe_target(target, ctx.revisions)
        desired = httproute(ctx, target, await revision_ports(kube, ctx.owner.namespace, target))
        can_create = any(available(ctx, rev) for rev, _ in backends(target))
        await ensure_route(kube, HTTPROUTES, desired, ctx.owner, MANAGED_SPEC, can_create=can_create)

    async def remove(self, kube: Kube, owner: Owner) -> None:
        await remove_owned(kube, HTTPROUTES, owner)

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        target = safe_target(target, ctx.revisions)
        owner = ctx.owner
        name = f"HTTPRoute {owner.name}"
        live = await kube.get(HTTPROUTES, owner.namespace, owner.name)
        if live is None:
            return TrafficObservation(False, False, None, f"{name} does not exist yet")
        if not owned_by(live, owner):
            return TrafficObservation(
                False, False, None, f"{name} exists but is not controlled by this ModelDeployment"
            )
        desired = httproute(ctx, target, await revision_ports(kube, ctx.owner.namespace, target))
        return self.compare(desired, live, target)

    @staticmethod
    def compare(desired: dict[str, Any], live: dict[str, Any], target: SetTraffic) -> TrafficObservation:
        """Read-back verdict for a live route against the desired one (pure, for tests)."""
        drift = spec_drift(desired, live, MANAGED_SPEC)
        verified, why = parents_verdict(live, desired["spec"]["parentRefs"])
        weight = live_canary_weight(live, target.canary)
        if drift is not None:
            message = f"HTTPRoute differs from desired: {drift}"
        elif verified:
            message = f"HTTPRoute at canary {weight}%: {why}"
        else:
            message = f"HTTPRoute at canary {weight}%, not yet verified: {why}"
        return TrafficObservation(
            in_sync=drift is None, verified=verified, actual_weight=weight, message=message
        )


def available(ctx: RouteContext, revision: str) -> bool:
    observed = ctx.revisions.get(revision)
    return observed is not None and observed.available
