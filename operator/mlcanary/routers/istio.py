"""Istio router: one VirtualService per ModelDeployment, owned by it, weighting the revision Services.

The VirtualService (named after the ModelDeployment) has ``spec.traffic.istio.hosts`` and, when
given, ``gateways``. Its ``http`` routes are evaluated in order (first match wins):

* one route per ``extraRules`` entry, each sending its matches to one revision (e.g. a header match
  pinning testers to the canary); a weight change never alters them;
* last, the weighted route: the stable Service with ``100 - w`` and the canary Service with ``w``;
  a destination whose weight is 0 is left out, so an unavailable canary is never referenced.

Apply and read-back are :class:`~mlcanary.routers.mesh.MeshRouter`'s, as for the Gateway API
router: the live object must carry the desired one (a hand edit is written over) for the weights to
be *in sync*.

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

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from mlcanary import models
from mlcanary.durations import parse_duration
from mlcanary.engine import SetTraffic
from mlcanary.kube import VIRTUALSERVICES
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

API_VERSION = "networking.istio.io/v1"
WEIGHTED_ROUTE = models.WEIGHTED_RULE
MIRROR_ROUTE = models.MIRROR_RULE


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
    paths = mirrored_paths(ctx, config.path)
    if mirroring(target) and paths:
        assert target.canary is not None
        # Before the weighted route (first match wins): the stable answers, the canary gets a copy.
        routes.append(
            {
                "name": MIRROR_ROUTE,
                "match": [{"uri": {"exact": p}, "method": {"exact": "POST"}} for p in paths],
                "route": [destination(target.stable, port(target.stable), 100)],
                "mirror": {"host": target.canary, "port": {"number": port(target.canary)}},
                "mirrorPercentage": {"value": float(target.mirror_percent)},
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


def live_served_weight(vs: Mapping[str, Any], canary: str | None) -> float | None:
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
    return share(weights, canary)


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


class IstioRouter(MeshRouter):
    kind: ClassVar[RouterKind] = RouterKind.ISTIO
    resource = VIRTUALSERVICES

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (namespace, name, uid) -> (generation, when first read back). In memory: a restarted
        # operator waits one settleTime again, which only delays a step.
        self._first_seen: dict[tuple[str, str, str], tuple[int, float]] = {}

    def build(
        self, ctx: RouteContext, target: SetTraffic, ports: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        return virtualservice(ctx, target, ports)

    def served_weight(self, live: Mapping[str, Any], canary: str | None) -> float | None:
        return live_served_weight(live, canary)

    def verify(
        self, ctx: RouteContext, desired: Mapping[str, Any], live: Mapping[str, Any]
    ) -> tuple[bool, str]:
        config = ctx.spec.traffic.istio
        assert config is not None
        verified, why = istiod_verdict(live, config.require_status)
        if verified is None:
            return self._settled(live, parse_duration(config.settle_time).total_seconds())
        return verified, why

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self._first_seen if k[:2] == (namespace, name)]:
            del self._first_seen[key]

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
