"""What the operator owns in each child object, and how to tell (and repair) a live object that no
longer carries it. Pure: the shell fetches objects, these functions compare them.

The comparison is "the live object carries what we wrote": every field the operator sets must have
the value it set, and every list it sets must hold exactly its items, but a live mapping may have keys
the operator never wrote — the API server's defaults (``terminationMessagePath``, ``clusterIP``,
``weight: 1`` ...). Comparing for strict equality would call every defaulted object drifted and write
it on every tick. Two refinements make the comparison complete for what matters:

* ``managed_spec``: the top-level spec fields the operator decides, set or not. One of them set on the
  live object but absent from the desired one (a hand-added ``paused: true`` on a Deployment, a
  ``hostnames`` on a route, ``externalIPs`` on a Service) is drift too. Builders write every
  traffic-relevant field explicitly (``sessionAffinity: None``, ``publishNotReadyAddresses: false``,
  ``paused: false`` ...) so a hand edit of any of them is seen.
* ``exact_maps``: mappings the operator owns whole, where an extra key changes behaviour: a Service's
  ``selector`` (one more key selects nothing, or something else).
* ``managed_item_keys``: in lists of route rules, the keys that change what a rule does (filters,
  mirrors, redirects, fault injection ...): one of them added by hand to a rule is drift, while other
  keys a newer CRD might default there are tolerated.

A repair is a JSON merge patch that sets every owned value and removes only what the operator owns
(extra keys of exact maps, managed fields it does not set): server-filled fields such as a Service's
``clusterIP`` are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OwnedFields:
    managed_spec: frozenset[str] = frozenset()
    exact_maps: tuple[tuple[str, ...], ...] = ()
    managed_item_keys: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = ()


DEPLOYMENT = OwnedFields(
    managed_spec=frozenset(
        {
            "replicas",
            "selector",
            "strategy",
            "template",
            "minReadySeconds",
            "paused",
            "progressDeadlineSeconds",
            "revisionHistoryLimit",
        }
    ),
    exact_maps=(("spec", "selector", "matchLabels"),),
)
# An HPA owns the replica count of an autoscaled revision: the operator leaves ``replicas`` alone.
AUTOSCALED_DEPLOYMENT = OwnedFields(
    managed_spec=DEPLOYMENT.managed_spec - {"replicas"}, exact_maps=DEPLOYMENT.exact_maps
)
HORIZONTAL_POD_AUTOSCALER = OwnedFields(
    managed_spec=frozenset({"scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"}),
)
# An HPA owns the replica count of an autoscaled revision: the operator leaves ``replicas`` alone.
AUTOSCALED_DEPLOYMENT = OwnedFields(
    managed_spec=DEPLOYMENT.managed_spec - {"replicas"}, exact_maps=DEPLOYMENT.exact_maps
)
HORIZONTAL_POD_AUTOSCALER = OwnedFields(
    managed_spec=frozenset({"scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"}),
)
SERVICE = OwnedFields(
    managed_spec=frozenset(
        {
            "selector",
            "ports",
            "type",
            "sessionAffinity",
            "sessionAffinityConfig",
            "publishNotReadyAddresses",
            "internalTrafficPolicy",
            "externalIPs",
            "externalName",
            "trafficDistribution",
        }
    ),
    exact_maps=(("spec", "selector"),),
)
HTTPROUTE = OwnedFields(
    managed_spec=frozenset({"parentRefs", "hostnames", "rules"}),
    managed_item_keys=(
        (
            ("spec", "rules"),
            frozenset(
                {"name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"}
            ),
        ),
    ),
)
VIRTUALSERVICE = OwnedFields(
    managed_spec=frozenset({"hosts", "gateways", "http", "tcp", "tls", "exportTo"}),
    managed_item_keys=(
        (
            ("spec", "http"),
            frozenset(
                {
                    "name",
                    "match",
                    "route",
                    "redirect",
                    "directResponse",
                    "delegate",
                    "rewrite",
                    "timeout",
                    "retries",
                    "fault",
                    "mirror",
                    "mirrors",
                    "mirrorPercentage",
                    "mirrorPercent",
                    "corsPolicy",
                    "headers",
                }
            ),
        ),
    ),
)
# spec.retraining's CronJob: the schedule and the Job it runs (requested Jobs are created once and
# never repaired: a Job's template is immutable and each one is a record of a run).
CRONJOB = OwnedFields(
    managed_spec=frozenset(
        {
            "schedule",
            "timeZone",
            "jobTemplate",
            "concurrencyPolicy",
            "suspend",
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        }
    )
)

BY_KIND: dict[str, OwnedFields] = {
    "CronJob": CRONJOB,
    "Deployment": DEPLOYMENT,
    "HorizontalPodAutoscaler": HORIZONTAL_POD_AUTOSCALER,
    "Service": SERVICE,
    "HTTPRoute": HTTPROUTE,
    "VirtualService": VIRTUALSERVICE,
}


def owned_fields(kind: str) -> OwnedFields:
    return BY_KIND.get(kind, OwnedFields())


def owned_fields_of(desired: Mapping[str, Any]) -> OwnedFields:
    """What the operator owns in ``desired``: a Deployment written without ``replicas`` is scaled by
    its HPA, whose writes to the count are not drift."""
    kind = str(desired.get("kind"))
    if kind == "Deployment" and "replicas" not in (desired.get("spec") or {}):
        return AUTOSCALED_DEPLOYMENT
    return owned_fields(kind)


def first_difference(desired: Any, live: Any, path: str = "") -> str | None:
    """Where ``live`` stops carrying ``desired``, as a field path with both values; None if it does.

    >>> first_difference({"a": [1, 2]}, {"a": [1, 2], "b": 3}) is None
    True
    >>> first_difference({"a": [{"w": 5}]}, {"a": [{"w": 50, "k": "x"}]})
    'a[0].w: 50, want 5'
    >>> first_difference({"paused": False, "replicas": 2}, {"replicas": 2}) is None   # omitempty
    True
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return f"{path or '.'}: {_show(live)}, want an object"
        for key, value in desired.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in live:
                if _zero(value):
                    continue  # the API omits zero values (Go's omitempty): absent is the same
                return f"{where}: missing, want {_show(value)}"
            found = first_difference(value, live[key], where)
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list):
            return f"{path}: {_show(live)}, want a list"
        if len(desired) != len(live):
            return f"{path}: {len(live)} items, want {len(desired)}"
        for index, (want, got) in enumerate(zip(desired, live, strict=True)):
            found = first_difference(want, got, f"{path}[{index}]")
            if found:
                return found
        return None
    if desired != live or type(desired) is not type(live):
        return f"{path}: {_show(live)}, want {_show(desired)}"
    return None


def _zero(value: Any) -> bool:
    return value is None or value is False or (type(value) is int and value == 0) or value in ("", [], {})


def _at(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _owner_ref_missing(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    live_refs = (live.get("metadata") or {}).get("ownerReferences") or []
    for ref in (desired.get("metadata") or {}).get("ownerReferences") or []:
        if not any(first_difference(ref, other) is None for other in live_refs):
            return f"metadata.ownerReferences: {ref.get('kind')} {ref.get('name')} missing"
    return None


def drift(
    desired: Mapping[str, Any], live: Mapping[str, Any], owned: OwnedFields | None = None
) -> str | None:
    """How ``live`` differs from ``desired`` in what the operator owns, or None when it carries it:
    our labels and annotations, our owner reference, and the spec (see the module docstring)."""
    owned = owned or owned_fields_of(desired)
    want_meta = desired.get("metadata") or {}
    got_meta = live.get("metadata") or {}
    for field in ("labels", "annotations"):
        found = first_difference(want_meta.get(field) or {}, got_meta.get(field) or {}, f"metadata.{field}")
        if found:
            return found
    missing_owner = _owner_ref_missing(desired, live)
    if missing_owner:
        return missing_owner
    want = desired.get("spec") or {}
    got = live.get("spec") or {}
    for key in sorted(owned.managed_spec):
        if key in got and key not in want:
            return f"spec.{key}: set on the live object, not by the operator"
    for path in owned.exact_maps:
        want_map, got_map = _at(desired, path) or {}, _at(live, path) or {}
        extra = sorted(set(got_map) - set(want_map))
        if extra:
            return f"{'.'.join(path)}.{extra[0]}: {_show(got_map[extra[0]])}, not set by the operator"
    for path, keys in owned.managed_item_keys:
        want_items, got_items = _at(desired, path) or [], _at(live, path) or []
        for index, (want_item, got_item) in enumerate(zip(want_items, got_items, strict=False)):
            if isinstance(want_item, Mapping) and isinstance(got_item, Mapping):
                extra = sorted((set(got_item) - set(want_item)) & keys)
                if extra:
                    return (
                        f"{'.'.join(path)}[{index}].{extra[0]}: set on the live object, not by the operator"
                    )
    return first_difference(want, got, "spec")


def repair_patch(
    desired: Mapping[str, Any], live: Mapping[str, Any], owned: OwnedFields | None = None
) -> dict[str, Any]:
    """A JSON merge patch that makes ``live`` carry ``desired`` again (see the module docstring)."""
    owned = owned or owned_fields_of(desired)
    want_meta = desired.get("metadata") or {}
    meta: dict[str, Any] = {}
    for field in ("labels", "annotations"):
        if want_meta.get(field):
            meta[field] = dict(want_meta[field])
    if want_meta.get("ownerReferences") and _owner_ref_missing(desired, live):
        meta["ownerReferences"] = list(want_meta["ownerReferences"])
    patch: dict[str, Any] = {"metadata": meta} if meta else {}
    if "spec" in desired:
        spec: dict[str, Any] = _deep_copy(desired["spec"])
        got = live.get("spec") or {}
        for key in owned.managed_spec:
            if key in got and key not in spec:
                spec[key] = None
        for path in owned.exact_maps:
            if path[0] != "spec":
                continue
            want_map, got_map = _at(desired, path), _at(live, path) or {}
            if not isinstance(want_map, Mapping):
                continue
            node = spec
            for key in path[1:]:
                node = node[key]
            for extra in set(got_map) - set(want_map):
                node[extra] = None
        patch["spec"] = spec
    return patch


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
