"""Gateway API router: one HTTPRoute per ModelDeployment, owned by it, weighting the revision Services.

The route (named after the ModelDeployment) attaches to ``spec.traffic.gatewayAPI.parentRefs`` (a
Gateway, or the model's entry Service in mesh/GAMMA mode) and has:

* one rule per ``extraRules`` entry, each sending its matches to one revision with no weighting
  (e.g. a header match pinning testers to the canary); a weight change never alters them;
* last, the weighted rule: the path match, the stable Service with ``100 - w`` and the canary
  Service with ``w``. A backend whose weight is 0 is left out, so a canary that is not available,
  or whose Service does not exist yet, is never referenced.

Apply and read-back are :class:`~mlcanary.routers.mesh.MeshRouter`'s: a hand edit is written over,
weights are *in sync* when the live route carries the desired one, and *verified* when every
parent's status reports it ``Accepted`` (and not ``ResolvedRefs=False``) for the route's current
``metadata.generation``; the engine only advances on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mlcanary import models
from mlcanary.engine import SetTraffic
from mlcanary.kube import HTTPROUTES
from mlcanary.models import RouterKind
from mlcanary.routers.base import RouteContext
from mlcanary.routers.mesh import (
    MeshRouter,
    backends,
    generation,
    mirrored_paths,
    mirroring,
    pinned_revision,
    route_labels,
    share,
)

API_VERSION = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
CONTROLLER_NOTE = "the Gateway implementation's controller"


# ------------------------------------------------------------------------------------ pure building


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
    paths = mirrored_paths(ctx, config.path)
    if mirroring(target) and paths:
        assert target.canary is not None
        # Exact paths outrank the weighted rule's prefix; the stable answers, the canary gets a copy.
        mirror: dict[str, Any] = {
            "matches": [{"path": {"type": "Exact", "value": p}, "method": "POST"} for p in paths],
            "filters": [
                {
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": {
                            "group": "",
                            "kind": "Service",
                            "name": target.canary,
                            "port": port(target.canary),
                        },
                        "percent": target.mirror_percent,
                    },
                }
            ],
            "backendRefs": [backend_ref(target.stable, port(target.stable), 100)],
        }
        if timeouts:
            mirror["timeouts"] = dict(timeouts)
        rules.append(mirror)
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


def live_served_weight(route: Mapping[str, Any], canary: str | None) -> float | None:
    """The canary's share (percent) of the live weighted rule, the route's last rule."""
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return None
    refs = rules[-1].get("backendRefs") or []
    return share({str(r.get("name")): int(r.get("weight", 1)) for r in refs}, canary)


# ------------------------------------------------------------------------------------------- router


class GatewayAPIRouter(MeshRouter):
    kind: ClassVar[RouterKind] = RouterKind.GATEWAY_API
    resource = HTTPROUTES

    def build(
        self, ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        return httproute(ctx, target, ports)

    def verify(
        self, ctx: RouteContext, desired: Mapping[str, Any], live: Mapping[str, Any]
    ) -> tuple[bool, str]:
        return parents_verdict(live, desired["spec"]["parentRefs"])

    def served_weight(self, live: Mapping[str, Any], canary: str | None) -> float | None:
        return live_served_weight(live, canary)
