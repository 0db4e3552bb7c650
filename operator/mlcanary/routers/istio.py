"""Istio router: one VirtualService per ModelDeployment, owned by it, weighting the revision Services.

The VirtualService (named after the ModelDeployment) has ``spec.traffic.istio.hosts`` and, when
given, ``gateways``. Its ``http`` routes are evaluated in order (first match wins):

* one route per ``extraRules`` entry, each sending its matches to one revision (e.g. a header match
  pinning testers to the canary); a weight change never alters them;
* last, the weighted route: the stable Service with ``100 - w`` and the canary Service with ``w``;
  a destination whose weight is 0 is left out, so an unavailable canary is never referenced.

Read-back is the Gateway API router's: the live object must carry the desired spec (a hand edit is
written over on the next tick) for the weights to be *in sync*.

*Verified* is weaker than for an HTTPRoute because Istio reports no status by default. When istiod
runs with status reporting (``PILOT_ENABLE_STATUS=true`` and config distribution tracking), it writes
``status.observedGeneration`` and a ``Reconciled`` condition that turns True once every proxy has
acknowledged the configuration: then the weights are verified when ``observedGeneration`` equals the
object's ``metadata.generation`` and ``Reconciled`` is True. Without any status, the weights are
verified once the same generation has been read back for ``settleTime`` (default 10s, istiod's
maximum push debounce): this proves that our write was accepted and stayed put, not that every
Envoy has it; ``requireStatus: true`` refuses that fallback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from mlcanary import models
from mlcanary.durations import parse_duration
from mlcanary.engine import SetTraffic, TrafficObservation
from mlcanary.kube import VIRTUALSERVICES, Kube
from mlcanary.resources import Owner
from mlcanary.routers.base import RouteContext, remove_owned, safe_target
from mlcanary.routers.gateway_api import available, backends, pinned_revision, route_labels
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
MANAGED_SPEC = frozenset({"hosts", "gateways", "http", "tcp", "tls", "exportTo"})

API_VERSION = "networking.istio.io/v1"
WEIGHTED_ROUTE = models.WEIGHTED_RULE


# ------------------------------------------------------------------------------------ pure building


def _string_match(kind: str, value: str) -> dict[str, str]:
    return {"regex": value} if kind == "RegularExpression" else {"exact": value}


def uri_match(path: models.PathMatch) -> dict[str, str]:
    if path.type == "PathPrefix":
        return {"prefix": path.value}
    return _string_match(path.type, path.value)


def http_match(match: models.RouteMatch, default_path: models.PathMatch | None) -> dict[str, Any]:
    """An Istio HTTPMatchRequest. Header names are lower-cased (Istio matches on lower-case names); a
    match without a path takes the router's path, if it has one."""
    out: dict[str, Any] = {}
    path = match.path or default_path
    if path is not None:
        out["uri"] = uri_match(path)
    if match.headers:
        out["headers"] = {h.name.lower(): _string_match(h.type, h.value) for h in match.headers}
    if match.query_params:
        out["queryParams"] = {q.name: _string_match(q.type, q.value) for q in match.query_params}
    if match.method is not None:
        out["method"] = {"exact": match.method}
    return out


def destination(revision: str, port: int, weight: int) -> dict[str, Any]:
    return {"destination": {"host": revision, "port": {"number": port}}, "weight": weight}


def _policies(config: models.IstioRouter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.timeout is not None:
        out["timeout"] = config.timeout
    if config.retries is not None:
        out["retries"] = config.retries.to_wire()
    return out


def virtualservice(
    ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The VirtualService for ``target`` (which must already be safe)."""
    config = ctx.spec.traffic.istio
    if config is None:
        raise ValueError("spec.traffic.istio is not set")
    ports = ports or {}

    def port(revision: str) -> int:
        return ports.get(revision, ctx.spec.serving.port)

    routes: list[dict[str, Any]] = []
    for extra in config.extra_rules or []:
        revision = pinned_revision(extra, ctx, target)
        routes.append(
            {
                "name": extra.name,
                "match": [http_match(m, config.path) for m in extra.matches],
                "route": [destination(revision, port(revision), 100)],
                **_policies(config),
            }
        )
    weighted: dict[str, Any] = {"name": WEIGHTED_ROUTE}
    if config.path is not None:
        weighted["match"] = [{"uri": uri_match(config.path)}]
    weighted["route"] = [destination(rev, port(rev), weight) for rev, weight in backends(target)]
    weighted.update(_policies(config))
    routes.append(weighted)
    spec: dict[str, Any] = {"hosts": list(config.hosts)}
    if config.gateways:
        spec["gateways"] = list(config.gateways)
    spec["http"] = routes
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": ctx.owner.metadata(ctx.owner.name, route_labels(ctx)),
        "spec": spec,
    }


# ----------------------------------------------------------------------------------------- read-back


def live_canary_weight(vs: Mapping[str, Any], canary: str | None) -> int | None:
    """The canary's share (percent) of the live weighted route (the last one)."""
    routes = (vs.get("spec") or {}).get("http") or []
    if not routes:
        return None
    entries = routes[-1].get("route") or []
    weights: dict[str, int] = {}
    for entry in entries:
        host = str((entry.get("destination") or {}).get("host"))
        # Istio: a lone destination may omit its weight and takes everything.
        weights[host] = int(entry.get("weight", 100 if len(entries) == 1 else 0))
    total = sum(weights.values())
    if total <= 0:
        return None
    return round(100 * weights.get(canary or "", 0) / total)


def istiod_verdict(vs: Mapping[str, Any], require_status: bool) -> tuple[bool | None, str]:
    """From istiod's status: True/False when it reports on the object, None when it reports nothing
    (status reporting is off) and ``require_status`` is not set."""
    status = vs.get("status") or {}
    current = generation(vs)
    observed = status.get("observedGeneration")
    reconciled = next((c for c in status.get("conditions") or [] if c.get("type") == "Reconciled"), None)
    if observed is None and reconciled is None:
        if require_status:
            return False, "istiod reports no status (requireStatus: enable PILOT_ENABLE_STATUS)"
        return None, "istiod reports no status"
    if observed is not None and str(observed) != str(current):
        return False, f"istiod has processed generation {observed}, object is at {current}"
    if reconciled is None:
        if require_status:
            return False, f"generation {current} has no Reconciled condition yet"
        return True, f"istiod processed generation {current}"
    if reconciled.get("status") != "True":
        detail = f"{reconciled.get('reason', '')} {reconciled.get('message', '')}".strip()
        return False, f"not yet Reconciled ({detail or reconciled.get('status')})"
    return True, f"istiod reports generation {current} Reconciled"


# ------------------------------------------------------------------------------------------- router


class IstioRouter:
    kind: ClassVar[str] = "istio"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (namespace, name, uid) -> (generation, when first read back). In memory: a restarted
        # operator waits one settleTime again, which only delays a step.
        self._first_seen: dict[tuple[str, str, str], tuple[int, float]] = {}

    def desired_objects(
        self, ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
    ) -> list[dict[str, Any]]:
        return [virtualservice(ctx, safe_target(target, ctx.revisions), ports)]

    async def apply(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> None:
        target = safe_target(target, ctx.revisions)
        desired = virtualservice(ctx, target, await revision_ports(kube, ctx.owner.namespace, target))
        can_create = any(available(ctx, rev) for rev, _ in backends(target))
        await ensure_route(kube, VIRTUALSERVICES, desired, ctx.owner, MANAGED_SPEC, can_create=can_create)

    async def remove(self, kube: Kube, owner: Owner) -> None:
        await remove_owned(kube, VIRTUALSERVICES, owner)

    async def observe(self, kube: Kube, ctx: RouteContext, target: SetTraffic) -> TrafficObservation:
        target = safe_target(target, ctx.revisions)
        owner = ctx.owner
        live = await kube.get(VIRTUALSERVICES, owner.namespace, owner.name)
        if live is None:
            return TrafficObservation(False, False, None, f"VirtualService {owner.name} does not exist yet")
        if not owned_by(live, owner):
            return TrafficObservation(
                False,
                False,
                None,
                f"VirtualService {owner.name} exists but is not controlled by this ModelDeployment",
            )
        desired = virtualservice(ctx, target, await revision_ports(kube, owner.namespace, target))
        return self.compare(ctx, desired, live, target)

    def compare(
        self, ctx: RouteContext, desired: dict[str, Any], live: dict[str, Any], target: SetTraffic
    ) -> TrafficObservation:
        """Read-back verdict for a live VirtualService against the desired one."""
        config = ctx.spec.traffic.istio
        assert config is not None
        drift = spec_drift(desired, live, MANAGED_SPEC)
        verified, why = istiod_verdict(live, config.require_status)
        if verified is None:
            verified, why = self._settled(live, parse_duration(config.settle_time).total_seconds())
        weight = live_canary_weight(live, target.canary)
        if drift is not None:
            message = f"VirtualService differs from desired: {drift}"
        elif verified:
            message = f"VirtualService at canary {weight}%: {why}"
        else:
            message = f"VirtualService at canary {weight}%, not yet verified: {why}"
        return TrafficObservation(
            in_sync=drift is None, verified=verified, actual_weight=weight, message=message
        )

    def _settled(self, live: Mapping[str, Any], settle_seconds: float) -> tuple[bool, str]:
        meta = live.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")))
        current = generation(live)
        now = self._clock()
        seen = self._first_seen.get(key)
        if seen is None or seen[0] != current:
            self._first_seen[key] = (current, now)
            seen = (current, now)
        waited = now - seen[1]
        if waited >= settle_seconds:
            return True, f"generation {current} unchanged for {waited:.0f}s (no istiod status)"
        return False, f"generation {current} read back {waited:.1f}s ago, settleTime is {settle_seconds:g}s"
