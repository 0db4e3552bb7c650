"""Read-back helpers shared by the mesh routers: is a live object still the one we wrote, whose is
it, and which port each revision's Service has.

Pure except :func:`revision_ports`: the routers fetch the objects, these functions compare them.

The comparison is "the live object carries what we wrote": every field the operator sets must have the
value it set, and every list it sets must hold exactly its items, but a live mapping may have keys
the operator never wrote. Those are the API server's defaults (``weight: 1``, ``group: ""``, ...):
comparing for strict equality would call every defaulted route drifted, write it on every tick and
never let a rollout advance. The routers write the defaulted fields they care about explicitly, so
a hand edit of any of them (a weight, a backend, a parent, a hostname list) is still seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlcanary.engine import SetTraffic
from mlcanary.kube import HASH_ANNOTATION, SERVICES, Kube, Resource, content_hash
from mlcanary.resources import HTTP_PORT_NAME, Owner


def first_difference(desired: Any, live: Any, path: str = "") -> str | None:
    """Where ``live`` stops carrying ``desired``, as a field path with both values; None if it does.

    >>> first_difference({"a": [1, 2]}, {"a": [1, 2], "b": 3}) is None
    True
    >>> first_difference({"a": [{"w": 5}]}, {"a": [{"w": 50, "k": "x"}]})
    'a[0].w: 50, want 5'
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return f"{path or '.'}: {_show(live)}, want an object"
        for key, value in desired.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in live:
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


def spec_drift(
    desired: Mapping[str, Any], live: Mapping[str, Any], managed: frozenset[str] = frozenset()
) -> str | None:
    """How the live object's spec differs from the desired one, or None when it carries it.

    ``managed``: top-level spec fields the operator decides, set or not. One of them set on the live
    object but absent from desired (a hand-added ``hostnames``) is drift too. Other unknown top-level
    fields are tolerated: a newer CRD may default one, and calling that drift would rewrite the object
    on every tick and stall the rollout on a difference nobody can remove."""
    want = desired.get("spec") or {}
    got = live.get("spec") or {}
    for key in sorted(managed):
        if key in got and key not in want:
            return f"spec.{key}: set on the live object, not by the operator"
    return first_difference(want, got, "spec")


def written_by_us(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether the live object records that the operator already wrote exactly ``desired``: if its spec
    differs nonetheless, someone else edited it (rather than our target having moved on)."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(HASH_ANNOTATION) == content_hash(dict(desired)))


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """UID of the object's controlling owner, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid is not None else None
    return None


def owned_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    return controller_uid(obj) == owner.uid


def generation(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# (namespace, revision) -> port. A revision's name carries the hash of its template, serving.port
# included, so once its Service has been seen the answer never changes: no GET per tick after that.
_PORTS: dict[tuple[str, str], int] = {}
_PORTS_LIMIT = 10_000


async def revision_ports(kube: Kube, namespace: str, target: SetTraffic) -> dict[str, int]:
    """The ``http`` port of each target revision's Service as it exists (absent Services left out).

    Revision Services expose their own revision's ``serving.port``; reading it keeps a stable
    revision reachable while a rollout changes the port."""
    ports: dict[str, int] = {}
    for revision in (target.stable, target.canary):
        if revision is None or revision in ports:
            continue
        cached = _PORTS.get((namespace, revision))
        if cached is not None:
            ports[revision] = cached
            continue
        service = await kube.get(SERVICES, namespace, revision)
        for entry in ((service or {}).get("spec") or {}).get("ports") or []:
            if entry.get("name") == HTTP_PORT_NAME:
                ports[revision] = int(entry["port"])
                if len(_PORTS) >= _PORTS_LIMIT:
                    _PORTS.clear()
                _PORTS[(namespace, revision)] = ports[revision]
    return ports


logger = logging.getLogger(__name__)


async def ensure_route(
    kube: Kube,
    resource: Resource,
    desired: dict[str, Any],
    owner: Owner,
    managed_spec: frozenset[str],
    *,
    can_create: bool,
) -> None:
    """Create or re-assert a router's object: never one we do not control, never a new one before a
    revision can answer, and rewritten whole when its managed spec drifted (a hand edit is reverted)."""
    kind = str(desired["kind"])
    live = await kube.get(resource, owner.namespace, owner.name)
    if live is None:
        if not can_create:
            # First deploy: no route to a revision that cannot answer yet.
            logger.info("%s/%s: %s waits for an available revision", owner.namespace, owner.name, kind)
            return
        await kube.ensure(desired)
        return
    if not owned_by(live, owner):
        logger.warning(
            "%s/%s: %s %s exists and is not controlled by this ModelDeployment; not touching it",
            owner.namespace,
            owner.name,
            kind,
            owner.name,
        )
        return
    drift = spec_drift(desired, live, managed_spec)
    if drift is not None and written_by_us(desired, live):
        logger.warning(
            "%s/%s: %s was edited outside the operator (%s): reverting it",
            owner.namespace,
            owner.name,
            kind,
            drift,
        )
    # A spec that differs is written whole (force), so fields the desired spec lacks are removed.
    await kube.ensure(desired, force=drift is not None)
