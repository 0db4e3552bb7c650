"""The operator's side of the Kubernetes API: reads from informer caches, owner-aware "ensure" writes.

Built on :mod:`mlcanary.kubeapi` (the project's one client layer). Two things make it cheap and safe:

* **Reads come from caches.** :class:`ChildCache` keeps informers (list + watch) of the kinds the
  operator creates, selected server-side by the ``app.kubernetes.io/managed-by=mlcanary`` label and
  indexed by ModelDeployment. A tick reads its children from memory: an idle ModelDeployment costs no
  API request at all. Without a cache (tests, ``mlcanary render``) every read is a request.
* **Writes compare with the live object.** :meth:`Kube.ensure` compares every field the operator owns
  (:mod:`mlcanary.ownership`) with what is live, not only a hash of what it last wrote, so a hand
  edit (``kubectl scale``, an edited selector, a route weight) is seen and undone on the next tick,
  and an object that already carries the desired state is never written. An object controlled by
  someone else is never touched.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlcanary import ownership
from mlcanary.kubeapi import (
    CRONJOBS,
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    HTTPROUTES,
    JOBS,
    MODEL_DEPLOYMENTS,
    PODS,
    SECRETS,
    SERVICES,
    VIRTUALSERVICES,
    ApiError,
    Informer,
    Obj,
    Resource,
    Transport,
    resource_for,
)
from mlcanary.resources import LABEL_MANAGED_BY, LABEL_MDEP, MANAGED_BY, Owner

logger = logging.getLogger(__name__)

__all__ = [
    "DEPLOYMENTS",
    "HORIZONTAL_POD_AUTOSCALERS",
    "HTTPROUTES",
    "JOBS",
    "MODEL_DEPLOYMENTS",
    "PODS",
    "SERVICES",
    "VIRTUALSERVICES",
    "ApiError",
    "ChildCache",
    "ConflictError",
    "EnsureResult",
    "Kube",
]

HASH_ANNOTATION = "mlcanary.io/desired-hash"
CHILD_KINDS: tuple[Resource, ...] = (
    DEPLOYMENTS,
    SERVICES,
    HORIZONTAL_POD_AUTOSCALERS,
    HTTPROUTES,
    VIRTUALSERVICES,
    JOBS,  # spec.loadTest Jobs; spec.retraining: requested training Jobs and the schedule's
    CRONJOBS,
)


class ConflictError(Exception):
    """The object changed since it was read (HTTP 409 on a conditional write): re-read and retry."""


def content_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def controller_uid(obj: Obj) -> str | None:
    """UID of the object's controlling owner, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid is not None else None
    return None


def controlled_by(obj: Obj, owner: Owner) -> bool:
    """Whether ``owner`` may write ``obj``: it is the controller, or the object has no controller and
    carries the owner's labels (an owner reference removed by hand is restored, not abandoned)."""
    uid = controller_uid(obj)
    if uid is not None:
        return uid == owner.uid
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_MDEP) == owner.name and labels.get(LABEL_MANAGED_BY) == MANAGED_BY


class Outcome(enum.StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    UPDATED = "updated"  # our desired state moved on
    REVERTED = "reverted"  # someone else edited what we own
    FOREIGN = "foreign"  # the name is taken by an object we do not control
    NOT_SERVED = "not-served"  # the API server does not serve the kind (a CRD not installed)


@dataclass(frozen=True)
class EnsureResult:
    outcome: Outcome
    obj: Obj | None = None
    drift: str | None = None


class ChildCache:
    """Informers for the kinds the operator creates, in the namespaces it watches (all when empty)."""

    def __init__(
        self, transport: Transport, namespaces: Sequence[str] = (), kinds: Iterable[Resource] = CHILD_KINDS
    ) -> None:
        self.informers = {
            resource: Informer(
                transport,
                resource,
                namespaces=list(namespaces) or None,
                label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
                index_label=LABEL_MDEP,
            )
            for resource in kinds
        }

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    async def stop(self) -> None:
        for informer in self.informers.values():
            await informer.stop()

    async def wait_synced(self, within: float | None = None) -> bool:
        results = [await informer.wait_synced(within) for informer in self.informers.values()]
        return all(results)

    def informer(self, resource: Resource) -> Informer | None:
        """The informer to read ``resource`` from, or None: not cached, not synced yet, or blind (a
        403 or 404 — then reads go to the API server, which answers for itself)."""
        informer = self.informers.get(resource)
        if informer is None or not informer.synced.is_set() or not informer.available:
            return None
        return informer

    def missing(self, resource: Resource) -> bool:
        """Whether the informer learnt that the API server does not serve ``resource`` (404)."""
        informer = self.informers.get(resource)
        return informer is not None and informer.synced.is_set() and informer.missing

    def objects(self) -> int:
        return sum(len(informer) for informer in self.informers.values())


class Kube:
    """Async facade for the operator: cached reads, owner-aware writes, status, Secrets, Events."""

    def __init__(self, transport: Transport, cache: ChildCache | None = None) -> None:
        self.api = transport
        self.cache = cache
        self.writes = 0  # counted for tests and metrics: a quiet tick writes nothing
        self._pending_events: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------- reads

    def _informer(self, resource: Resource) -> Informer | None:
        return self.cache.informer(resource) if self.cache is not None else None

    def served(self, resource: Resource) -> bool:
        """False when the cache learnt that the API server does not serve ``resource``."""
        return self.cache is None or not self.cache.missing(resource)

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        informer = self._informer(resource)
        if informer is not None:
            return informer.get(namespace, name)
        try:
            return await self.api.get(resource, namespace, name)
        except ApiError as error:
            if error.not_found:  # the kind itself is not served
                return None
            raise

    async def children(self, resource: Resource, namespace: str, owner_name: str) -> list[Obj]:
        """The objects labelled as children of the ModelDeployment ``owner_name``."""
        informer = self._informer(resource)
        if informer is not None:
            return informer.with_label(namespace, owner_name)
        selector = f"{LABEL_MDEP}={owner_name},{LABEL_MANAGED_BY}={MANAGED_BY}"
        items, _ = await self.api.list(resource, namespace, selector)
        return items

    # ------------------------------------------------------------------------------------ writes

    def _remember(self, resource: Resource, obj: Obj) -> None:
        informer = self._informer(resource)
        if informer is not None:
            informer.write_through(obj)

    async def _write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        return await getattr(self.api, method)(*args, **kwargs)

    async def ensure(self, desired: Obj, owner: Owner, *, can_create: bool = True) -> EnsureResult:
        """Create ``desired`` or make the live object carry it again; write only on a difference.

        ``can_create=False`` only repairs an existing object (a route before any revision can answer)."""
        resource = resource_for(desired)
        meta = desired["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        stamped = json.loads(json.dumps(desired))
        stamped["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = content_hash(desired)
        live = await self.get(resource, namespace, name)
        if live is None:
            if not can_create:
                return EnsureResult(Outcome.UNCHANGED)
            try:
                created: Obj = await self._write("create", stamped)
                self._remember(resource, created)
                return EnsureResult(Outcome.CREATED, created)
            except ApiError as error:
                if error.not_found:
                    return EnsureResult(Outcome.NOT_SERVED, drift=error.message)
                if not error.conflict:
                    raise
            # It exists after all: created concurrently, or hidden from the cache (its labels edited).
            live = await self.api.get(resource, namespace, name)
            if live is None:
                raise ConflictError(f"{resource.kind} {namespace}/{name} exists and does not")
        if not controlled_by(live, owner):
            return EnsureResult(Outcome.FOREIGN, live)
        difference = ownership.drift(stamped, live)
        if difference is None:
            return EnsureResult(Outcome.UNCHANGED, live)
        hand_edit = ((live.get("metadata") or {}).get("annotations") or {}).get(
            HASH_ANNOTATION
        ) == content_hash(desired)
        patched: Obj = await self._write(
            "patch", resource, namespace, name, ownership.repair_patch(stamped, live)
        )
        self._remember(resource, patched)
        return EnsureResult(Outcome.REVERTED if hand_edit else Outcome.UPDATED, patched, difference)

    async def create_once(self, desired: Obj, owner: Owner) -> EnsureResult:
        """Create ``desired`` unless an object of that name exists; never update it (a Job's pod
        template is immutable, and a running load test must not be disturbed)."""
        resource = resource_for(desired)
        meta = desired["metadata"]
        live = await self.get(resource, meta["namespace"], meta["name"])
        if live is not None:
            return EnsureResult(Outcome.UNCHANGED if controlled_by(live, owner) else Outcome.FOREIGN, live)
        try:
            created: Obj = await self._write("create", desired)
        except ApiError as error:
            if error.conflict:  # created meanwhile (the cache had not seen it yet)
                return EnsureResult(Outcome.UNCHANGED)
            raise
        self._remember(resource, created)
        return EnsureResult(Outcome.CREATED, created)

    async def create(self, obj: Obj) -> Obj:
        """Create ``obj`` as it is (a Job: created once, never repaired); 409 raises ApiError."""
        created: Obj = await self._write("create", obj)
        self._remember(resource_for(obj), created)
        return created

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        deleted: bool = await self._write("delete", resource, namespace, name)
        informer = self._informer(resource)
        if informer is not None:
            informer.forget(namespace, name)
        return deleted

    async def patch_status(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        status_patch: dict[str, Any],
        resource_version: str,
    ) -> Obj:
        """Merge-patch the status subresource, conditional on ``resource_version`` (409 if stale)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status_patch}
        try:
            patched: Obj = await self._write("patch", resource, namespace, name, body, subresource="status")
        except ApiError as error:
            if error.conflict:
                raise ConflictError(error.message) from None
            raise
        return patched

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        secret = await self.api.get(SECRETS, namespace, name)
        if secret is None:
            raise ApiError(404, "NotFound", f"secret {namespace}/{name} not found")
        return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}

    async def post_event(
        self, involved: Obj, type_: str, reason: str, message: str, component: str = "mlcanary"
    ) -> None:
        event = self._event(involved, type_, reason, message, component)
        self.writes += 1
        await self._create_event(event)

    def post_event_soon(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        """Post an Event beside the tick instead of within it: an Event is best effort, and waiting
        for its round trip held transition ticks up (the tail of the reconcile duration). Counted as
        a write of the tick that emits it."""
        event = self._event(involved, type_, reason, message, "mlcanary")
        self.writes += 1
        task = asyncio.get_running_loop().create_task(self._create_event(event))
        self._pending_events.add(task)  # a reference, so the task is not garbage-collected mid-way
        task.add_done_callback(self._pending_events.discard)

    async def _create_event(self, event: Obj) -> None:
        try:
            await self.api.create(event)
        except Exception as error:  # events are best effort: never fail a tick for one
            meta = event["involvedObject"]
            logger.warning(
                "could not post event %s on %s/%s: %s",
                event["reason"],
                meta["namespace"],
                meta["name"],
                error,
            )

    def _event(self, involved: Obj, type_: str, reason: str, message: str, component: str) -> Obj:
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Named as client-go's recorder names them (<object>.<hex time>): a generateName ending in
        # "." is not a valid DNS-1123 prefix, and a real API server refuses it.
        event_name = f"{meta['name']}.{time.time_ns():x}{secrets.token_hex(2)}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        return event
