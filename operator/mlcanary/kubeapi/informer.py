"""Informers: a live, in-memory copy of one resource (list, then watch), the way controllers avoid
polling the API server.

* list once, then watch from the list's resourceVersion with bookmarks; when the server ends a watch
  (its timeout), watch again from the last version seen; list again only on ``410 Gone`` or an error;
* optionally per namespace (an operator limited to some namespaces holds Roles there only) and with a
  server-side label selector (only the objects the owner cares about cross the wire);
* an index by one label value, so "the children of X" is a dict lookup;
* write-through: what a write returned goes into the cache at once, so the next read sees it even
  before the watch echoes it, and the echo (same resourceVersion) does not notify listeners;
* a resource the server does not serve (a CRD that is not installed: 404) or that we may not read
  (403) is synced but not ``available`` (``missing`` tells a 404), and is retried every
  ``retry_seconds``: readers must not take a blind cache for an empty one.

``managedFields`` and the ``last-applied-configuration`` annotation are dropped from cached objects:
they are large and nothing here reads them. By default objects are kept as compact JSON and decoded
on read: an operator caching thousands of children holds a few KiB per object instead of tens of KiB
of Python dicts, and every reader gets its own copy. ``compact=False`` keeps the decoded objects for
readers on a hot path (the local gateway picks a pod per request); they must not mutate them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Sequence

from mlcanary.kubeapi.client import Transport
from mlcanary.kubeapi.errors import ApiError
from mlcanary.kubeapi.resources import Obj, Resource

logger = logging.getLogger(__name__)

Listener = Callable[[str, Obj], None]  # (event type: ADDED | MODIFIED | DELETED, object)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(obj: Obj) -> Obj:
    """The object without what no controller here reads (managedFields, last-applied)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or (
        "managedFields" not in meta and LAST_APPLIED not in (meta.get("annotations") or {})
    ):
        return obj
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**obj, "metadata": meta}


def resource_version(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def newer(candidate: str, current: str) -> bool:
    """Whether resourceVersion ``candidate`` is newer than ``current``. Versions are opaque to clients,
    but every API server in practice (etcd revisions) uses integers; other strings count as newer
    whenever they differ."""
    if candidate.isdigit() and current.isdigit():
        return int(candidate) > int(current)
    return candidate != current


class Informer:
    def __init__(
        self,
        transport: Transport,
        resource: Resource,
        *,
        namespaces: Sequence[str] | None = None,
        label_selector: str = "",
        index_label: str | None = None,
        retry_seconds: float = 60.0,
        watch_seconds: tuple[int, int] = (240, 300),
        compact: bool = True,
    ) -> None:
        self.transport = transport
        self.resource = resource
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self.label_selector = label_selector
        self.index_label = index_label
        self.retry_seconds = retry_seconds
        self.watch_seconds = watch_seconds
        self.compact = compact
        # (namespace, name) -> (resourceVersion, value of index_label, compact JSON or the object)
        self._objects: dict[tuple[str, str], tuple[str, str | None, bytes | Obj]] = {}
        self.changed = asyncio.Event()  # set on every change; a reader clears it
        self.available = True
        self.missing = False  # the server does not serve the resource at all (404)
        self.synced = asyncio.Event()
        self.listeners: list[Listener] = []
        self._index: dict[tuple[str, str], set[str]] = {}
        self._synced_namespaces: set[str | None] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # --------------------------------------------------------------------------------------- reads

    def get(self, namespace: str, name: str) -> Obj | None:
        entry = self._objects.get((namespace, name))
        return _decode(entry[2]) if entry is not None else None

    def with_label(self, namespace: str, value: str) -> list[Obj]:
        """Objects in ``namespace`` whose ``index_label`` equals ``value``, by name."""
        names = self._index.get((namespace, value)) or ()
        found = (self._objects.get((namespace, name)) for name in sorted(names))
        return [_decode(entry[2]) for entry in found if entry is not None]

    def keys(self) -> list[tuple[str, str]]:
        return list(self._objects)

    def items(self) -> list[tuple[tuple[str, str], Obj]]:
        """Every cached object with its (namespace, name), as of now."""
        return [(key, _decode(entry[2])) for key, entry in list(self._objects.items())]

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    def __len__(self) -> int:
        return len(self._objects)

    def _version(self, key: tuple[str, str]) -> str | None:
        entry = self._objects.get(key)
        return entry[0] if entry is not None else None

    # ------------------------------------------------------------------------------------- writes

    def write_through(self, obj: Obj) -> None:
        """Put what a write returned into the cache, unless the cache already holds a newer version."""
        key = self.resource.key(obj)
        current = self._version(key)
        if current is not None and not newer(resource_version(obj), current):
            return
        self._store(key, obj)

    def forget(self, namespace: str, name: str) -> None:
        """Drop an object we just deleted (the watch's DELETED event may come later)."""
        self._remove((namespace, name))

    # ----------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for namespace in self.namespaces:
            self._tasks.append(
                asyncio.create_task(
                    self._run(namespace), name=f"informer {self.resource.plural} {namespace or '*'}"
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def wait_synced(self, within: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.synced.wait(), within)
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------------------------------ internals

    def _store(self, key: tuple[str, str], obj: Obj) -> None:
        old = self._objects.get(key)
        value: str | None = None
        if self.index_label is not None:
            value = (obj.get("metadata", {}).get("labels") or {}).get(self.index_label)
            old_value = old[1] if old is not None else None
            if old_value != value:
                if old_value is not None:
                    self._index.get((key[0], old_value), set()).discard(key[1])
                if value is not None:
                    self._index.setdefault((key[0], value), set()).add(key[1])
        stored: bytes | Obj = _encode(slim(obj)) if self.compact else slim(obj)
        self._objects[key] = (resource_version(obj), value, stored)

    def _remove(self, key: tuple[str, str]) -> Obj | None:
        old = self._objects.pop(key, None)
        if old is None:
            return None
        if old[1] is not None:
            names = self._index.get((key[0], old[1]))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._index[(key[0], old[1])]
        return _decode(old[2])

    def _notify(self, event_type: str, obj: Obj) -> None:
        self.changed.set()
        for listener in self.listeners:
            try:
                listener(event_type, obj)
            except Exception:  # a listener's bug must not stop the cache
                logger.exception("informer %s: listener failed", self.resource.plural)

    def _mark_synced(self, namespace: str | None) -> None:
        self._synced_namespaces.add(namespace)
        if len(self._synced_namespaces) == len(self.namespaces):
            self.synced.set()

    def _in_namespace(self, key: tuple[str, str], namespace: str | None) -> bool:
        return namespace is None or key[0] == namespace

    async def _run(self, namespace: str | None) -> None:
        backoff = 0.5
        last_problem = ""
        while True:
            try:
                version = await self._list(namespace)
                backoff = 0.5
                last_problem = ""
                while version:
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except ApiError as error:
                if error.status in (403, 404):
                    # Not served (a CRD not installed) or not allowed: empty, synced, and asked again later.
                    if self.available or str(error) != last_problem:
                        logger.warning(
                            "informer %s: %s; retrying in %ss",
                            self.resource.plural,
                            error,
                            self.retry_seconds,
                        )
                    last_problem = str(error)
                    self.available = False
                    self.missing = error.status == 404
                    for key in [k for k in self._objects if self._in_namespace(k, namespace)]:
                        self._notify("DELETED", self._remove(key) or {})
                    self._mark_synced(namespace)
                    await asyncio.sleep(self.retry_seconds)
                    continue
                await self._pause(error, backoff, last_problem)
                last_problem, backoff = str(error), min(backoff * 2, 30.0)
            except Exception as error:  # the API server restarting, a network blip
                await self._pause(error, backoff, last_problem)
                last_problem, backoff = str(error), min(backoff * 2, 30.0)

    async def _pause(self, error: Exception, backoff: float, last_problem: str) -> None:
        log = logger.debug if str(error) == last_problem else logger.info
        log(
            "informer %s: %s; listing again in %.1fs",
            self.resource.plural,
            error or type(error).__name__,
            backoff,
        )
        await asyncio.sleep(backoff)

    async def _list(self, namespace: str | None) -> str:
        items, version = await self.transport.list(self.resource, namespace, self.label_selector)
        self.available, self.missing = True, False
        self.missing = False  # the server does not serve the resource at all (404)
        fresh = {self.resource.key(item): item for item in items}
        for key in [k for k in self._objects if self._in_namespace(k, namespace) and k not in fresh]:
            self._notify("DELETED", self._remove(key) or {})
        for key, item in fresh.items():
            current = self._version(key)
            if current is None or current != resource_version(item):
                self._store(key, item)
                self._notify("ADDED" if current is None else "MODIFIED", item)
        self._mark_synced(namespace)
        return version

    async def _watch(self, namespace: str | None, version: str) -> str:
        """Follow one watch stream; return the version to watch from next ("" to list again)."""
        params = {
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(*self.watch_seconds)),  # spreads reconnects
        }
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        async for event in self.transport.watch(self.resource, namespace, params):
            event_type = str(event.get("type"))
            obj = event.get("object") or {}
            if event_type == "ERROR":
                if int(obj.get("code") or 0) == 410:
                    return ""  # our version is too old: list again
                raise ApiError(
                    int(obj.get("code") or 500), str(obj.get("reason") or ""), str(obj.get("message"))
                )
            version = resource_version(obj) or version
            if event_type == "BOOKMARK":
                continue
            key = self.resource.key(obj)
            if event_type == "DELETED":
                if self._remove(key) is not None:
                    self._notify("DELETED", obj)
                continue
            current = self._version(key)
            if current is not None and not newer(resource_version(obj), current):
                continue  # the echo of our own write (already cached), or an older event
            self._store(key, obj)
            self._notify(event_type, obj)
        return version


def _encode(obj: Obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _decode(stored: bytes | Obj) -> Obj:
    if isinstance(stored, dict):
        return stored
    decoded: Obj = json.loads(stored)
    return decoded
