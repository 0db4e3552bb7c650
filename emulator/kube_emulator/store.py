"""The emulator's in-memory object store: the API semantics without the HTTP.

Objects are kept in ``{(group, plural): {namespace: {name: object}}}`` with a label index, so gets are
O(1) and selector lists touch only the candidates. Stored objects are never mutated in place (every
write stores a new dict), so watch events and list results can share them without copying.

All methods are synchronous and must be called from one thread (the emulator's event loop): each
call is atomic with respect to the others, like a transaction.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kube_emulator import errors, names, workloads
from kube_emulator.errors import ApiError, Cause
from kube_emulator.jsonio import dumps, loads
from kube_emulator.patch import (
    PatchError,
    apply_patch,
    clone,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from kube_emulator.resources import ResourceInfo, ResourceRegistry, RKey, crd_resources
from kube_emulator.selectors import FieldSelector, LabelSelector

Obj = dict[str, Any]
ObjRef = tuple[RKey, str, str]  # (resource key, namespace, name)

NAMESPACES: RKey = ("", "namespaces")
CRDS: RKey = ("apiextensions.k8s.io", "customresourcedefinitions")
DEPLOYMENTS: RKey = ("apps", "deployments")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_OWNED_META = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def now_rfc3339(clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True, eq=False)
class Event:
    """One change, as kept in the watch history (``old`` is the previous state for MODIFIED)."""

    rv: int
    type: str
    key: RKey
    namespace: str
    obj: Obj
    old: Obj | None
    encoded: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def line(self, etype: str, info: ResourceInfo) -> bytes:
        """The watch-stream line for this event as seen by one watcher (cached across watchers)."""
        cache_key = (etype, info.api_version)
        line = self.encoded.get(cache_key)
        if line is None:
            line = dumps({"type": etype, "object": present(info, self.obj)}) + b"\n"
            self.encoded[cache_key] = line
        return line


@dataclass(slots=True)
class WriteResult:
    obj: Obj
    warnings: list[str] = field(default_factory=list)
    created: bool = False


def present(info: ResourceInfo, obj: Obj) -> Obj:
    """The object as served at ``info``'s version (stored objects keep their writer's apiVersion)."""
    if obj.get("apiVersion") == info.api_version:
        return obj
    return {**obj, "apiVersion": info.api_version}


class Watcher:
    """One watch stream's filter and queue. The store offers every change of its resource."""

    def __init__(
        self,
        info: ResourceInfo,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> None:
        self.info = info
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, Event] | None] = asyncio.Queue()

    def matches(self, obj: Obj) -> bool:
        if self.labels and not self.labels.matches(obj.get("metadata", {}).get("labels")):
            return False
        return not self.fields or self.fields.matches(obj)

    def offer(self, event: Event) -> None:
        if self.namespace is not None and event.namespace != self.namespace:
            return
        new_ok = self.matches(event.obj)
        if event.type == "MODIFIED" and event.old is not None:
            old_ok = self.matches(event.old)
            if new_ok and not old_ok:
                self.queue.put_nowait(("ADDED", event))
            elif old_ok and not new_ok:
                self.queue.put_nowait(("DELETED", event))
            elif new_ok:
                self.queue.put_nowait(("MODIFIED", event))
        elif new_ok:
            self.queue.put_nowait((event.type, event))

    def close(self) -> None:
        self.queue.put_nowait(None)


def _spec_part(obj: Obj) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _owner_uids(obj: Obj) -> set[str]:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return {str(r["uid"]) for r in refs if isinstance(r, dict) and r.get("uid")}


def _labels(obj: Obj) -> dict[str, str]:
    labels = obj.get("metadata", {}).get("labels")
    return labels if isinstance(labels, dict) else {}


class Store:
    """Objects, resource versions, watch history and garbage collection. See the module docstring."""

    def __init__(self, *, history_size: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.registry = ResourceRegistry()
        self.clock = clock
        self.history_size = history_size
        self.listeners: list[Callable[[Event], None]] = []
        self._objects: dict[RKey, dict[str, dict[str, Obj]]] = {}
        self._label_index: dict[RKey, dict[str, dict[str, set[tuple[str, str]]]]] = {}
        self._uids: dict[str, ObjRef] = {}
        self._dependents: dict[str, set[ObjRef]] = {}
        self._watchers: dict[RKey, set[Watcher]] = {}
        self._history: deque[Event] = deque()
        self._evicted_rv = 0
        self._rv = 0
        self._ips = itertools.count(10)
        for name in DEFAULT_NAMESPACES:
            self._ensure_namespace(name)

    # ------------------------------------------------------------------------------ reading

    @property
    def resource_version(self) -> int:
        return self._rv

    def resource(self, group: str, version: str, plural: str) -> ResourceInfo:
        info = self.registry.get(group, version, plural)
        if info is None:
            raise errors.unknown_path(f"{group}/{version}/{plural}")
        return info

    def peek(self, key: RKey, namespace: str, name: str) -> Obj | None:
        return self._objects.get(key, {}).get(namespace, {}).get(name)

    def get(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj:
        obj = self.peek(info.key, self._ns(info, namespace), name)
        if obj is None:
            raise errors.not_found(info.group, info.plural, name)
        return obj

    def has_objects(self, key: RKey) -> bool:
        return any(self._objects.get(key, {}).values())

    def iter_objects(self, key: RKey) -> Iterator[Obj]:
        for bucket in self._objects.get(key, {}).values():
            yield from bucket.values()

    def namespace_names(self) -> list[str]:
        return sorted(self._objects.get(NAMESPACES, {}).get("", {}))

    def select(
        self,
        key: RKey,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> list[Obj]:
        """Matching objects sorted by (namespace, name); uses the label index when it can."""
        labels = labels or LabelSelector()
        fields = fields or FieldSelector()
        buckets = self._objects.get(key, {})
        refs: Iterable[tuple[str, str]]
        indexable = [r for r in labels.requirements if r.indexable]
        name = fields.exact_name()
        if indexable:
            index = self._label_index.get(key, {})
            best: set[tuple[str, str]] | None = None
            for req in indexable:
                by_value = index.get(req.key, {})
                if req.op == "=":
                    found = by_value.get(req.values[0], set())
                elif req.op == "in":
                    found = set().union(*(by_value.get(v, set()) for v in req.values))
                else:
                    found = set().union(*by_value.values()) if by_value else set()
                if best is None or len(found) < len(best):
                    best = found
            candidates = best or set()
            if namespace is not None:
                refs = sorted(r for r in candidates if r[0] == namespace)
            else:
                refs = sorted(candidates)
        elif name is not None:
            spaces = [namespace] if namespace is not None else sorted(buckets)
            refs = [(ns, name) for ns in spaces if name in buckets.get(ns, {})]
        else:
            spaces = [namespace] if namespace is not None else sorted(buckets)
            refs = [(ns, n) for ns in spaces for n in sorted(buckets.get(ns, {}))]
        out: list[Obj] = []
        for ns, n in refs:
            obj = buckets[ns][n]
            if labels and not labels.matches(_labels(obj)):
                continue
            if fields and not fields.matches(obj):
                continue
            out.append(obj)
        return out

    def list_objects(
        self,
        info: ResourceInfo,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[list[Obj], str, str | None, int | None]:
        """(items, list resourceVersion, continue token, remaining count)."""
        items = self.select(info.key, namespace if info.namespaced else None, labels, fields)
        list_rv = str(self._rv)
        if continue_token:
            try:
                token = loads(base64.urlsafe_b64decode(continue_token.encode()))
                after = (str(token["ns"]), str(token["name"]))
                list_rv = str(token["rv"])
            except Exception:
                raise errors.bad_request("invalid continue token") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
        if limit and limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            payload = {"ns": last.get("namespace", ""), "name": last["name"], "rv": list_rv}
            token_text = base64.urlsafe_b64encode(dumps(payload)).decode()
            return items[:limit], list_rv, token_text, len(items) - limit
        return items, list_rv, None, None

    # ------------------------------------------------------------------------------ writing

    def create(
        self,
        info: ResourceInfo,
        namespace: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> WriteResult:
        obj = self._body(info, body)
        meta = obj["metadata"]
        ns = self._ns(info, namespace, meta.get("namespace"))
        name = meta.get("name")
        if not name and meta.get("generateName"):
            base = names.generated_base(str(meta["generateName"]))
            for _ in range(20):
                name = base + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(names.GENERATED_SUFFIX))
                if self.peek(info.key, ns, name) is None:
                    break
        if not name:
            raise errors.invalid(
                info.kind,
                info.group,
                "",
                [
                    Cause(
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        name = str(name)
        if self.peek(info.key, ns, name) is not None:
            raise errors.already_exists(info.group, info.plural, name)
        if ns:
            namespace_obj = self.peek(NAMESPACES, "", ns)
            if namespace_obj is not None and namespace_obj["metadata"].get("deletionTimestamp"):
                raise errors.forbidden(
                    info.group,
                    info.plural,
                    name,
                    f"unable to create new content in namespace {ns} because it is being terminated",
                )
        for key in ("resourceVersion", "managedFields", "selfLink", *_SERVER_OWNED_META):
            meta.pop(key, None)
        meta["name"] = name
        if info.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339(self.clock)
        meta["generation"] = 1
        if info.status_subresource and info.key != NAMESPACES:
            obj.pop("status", None)
        warnings = self._admit(info, obj, None, None, strict)
        if dry_run:
            return WriteResult(obj, warnings, created=True)
        if ns:
            self._ensure_namespace(ns)
        self._store(info.key, ns, name, obj, None)
        owners = _owner_uids(obj)
        if owners and not any(owner in self._uids for owner in owners):
            # Like the real garbage collector: a dependent created after all its owners are gone
            # (a controller racing the owner's deletion) is collected, not left behind.
            self._delete(info.key, ns, name, None)
        return WriteResult(obj, warnings, created=True)

    def update(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
    ) -> WriteResult:
        old = self.get(info, namespace, name)
        new = self._body(info, body)
        meta = new["metadata"]
        if meta.get("name") not in (None, "", name):
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        self._ns(info, namespace, meta.get("namespace"))
        return self._update(info, old, new, subresource=subresource, dry_run=dry_run, strict=strict)

    def patch(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
    ) -> WriteResult:
        ns = self._ns(info, namespace)
        old = self.peek(info.key, ns, name)
        if old is None:
            if patch_type == "apply" and subresource is None:
                if not isinstance(patch, dict):
                    raise errors.bad_request("an applied configuration must be an object")
                body = clone(patch)
                body.setdefault("metadata", {})
                if body["metadata"].get("name") not in (None, name):
                    raise errors.bad_request(
                        "the name of the applied object does not match the name on the URL"
                    )
                body["metadata"]["name"] = name
                return self.create(info, namespace, body, dry_run=dry_run, strict=strict)
            raise errors.not_found(info.group, info.plural, name)
        new = self._patched(info, old, patch_type, patch)
        return self._update(info, old, new, subresource=subresource, dry_run=dry_run, strict=strict)

    def _patched(self, info: ResourceInfo, old: Obj, patch_type: str, patch: Any) -> Obj:
        result: Any
        if patch_type == "merge":
            if not isinstance(patch, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            result = merge_patch(old, patch)
        elif patch_type == "strategic":
            if info.crd is not None:
                raise errors.unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                )
            if not isinstance(patch, dict):
                raise errors.bad_request("a strategic merge patch must be a JSON object")
            result = strategic_merge_patch(old, patch)
        elif patch_type == "json":
            try:
                result = json_patch(old, patch)
            except PatchError as exc:
                raise ApiError(422, "Invalid", str(exc), details={}) from None
        elif patch_type == "apply":
            if not isinstance(patch, dict):
                raise errors.bad_request("an applied configuration must be an object")
            result = apply_patch(old, patch)
        else:
            raise errors.unsupported_media_type(f"unsupported patch type {patch_type!r}")
        if not isinstance(result, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object", details={})
        if not isinstance(result.get("metadata"), dict):
            result["metadata"] = {}
        return result

    def _update(
        self,
        info: ResourceInfo,
        old: Obj,
        new: Obj,
        *,
        subresource: str | None,
        dry_run: bool,
        strict: bool,
    ) -> WriteResult:
        old_meta = old["metadata"]
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        name = str(old_meta["name"])
        sent_rv = meta.get("resourceVersion")
        if sent_rv not in (None, "") and str(sent_rv) != old_meta["resourceVersion"]:
            raise errors.conflict(info.group, info.plural, name)
        if subresource == "status":
            status = new.get("status")
            new = {k: v for k, v in old.items() if k != "status"}
            new["metadata"] = dict(old_meta)
            if status is not None:
                new["status"] = status
            meta = new["metadata"]
        else:
            for key in ("name", "namespace", *_SERVER_OWNED_META):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta.pop("managedFields", None)
            meta.pop("selfLink", None)
            if info.status_subresource:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        new.setdefault("apiVersion", old.get("apiVersion"))
        new.setdefault("kind", old.get("kind"))
        meta["resourceVersion"] = old_meta["resourceVersion"]
        warnings = self._admit(info, new, old, subresource, strict)
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if new == old:
            return WriteResult(old, warnings)  # a no-op: no new resourceVersion, no event
        if dry_run:
            return WriteResult(new, warnings)
        ns = str(old_meta.get("namespace") or "")
        self._store(info.key, ns, name, new, old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(info.key, ns, name)
        return WriteResult(new, warnings)

    def delete(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        obj = self.get(info, namespace, name)
        meta = obj["metadata"]
        for field_name, key in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
            expected = (preconditions or {}).get(field_name)
            if expected and str(expected) != str(meta.get(key)):
                raise errors.conflict(
                    info.group,
                    info.plural,
                    name,
                    f"Precondition failed: {field_name} in precondition: {expected}, {field_name} in object meta: {meta.get(key)}",
                )
        if propagation not in (None, "", "Orphan", "Background", "Foreground"):
            raise errors.bad_request(f"unsupported propagationPolicy {propagation!r}")
        if dry_run:
            return obj
        return self._delete(info.key, self._ns(info, namespace), name, propagation)

    def delete_collection(
        self,
        info: ResourceInfo,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        *,
        propagation: str | None = None,
        dry_run: bool = False,
    ) -> list[Obj]:
        victims = self.select(info.key, namespace if info.namespaced else None, labels, fields)
        if dry_run:
            return victims
        out = []
        for obj in victims:
            meta = obj["metadata"]
            ns = str(meta.get("namespace") or "")
            if self.peek(info.key, ns, meta["name"]) is not None:
                out.append(self._delete(info.key, ns, str(meta["name"]), propagation))
        return out

    def _delete(self, key: RKey, namespace: str, name: str, propagation: str | None) -> Obj:
        obj = self.peek(key, namespace, name)
        if obj is None:
            raise errors.not_found(key[0], key[1], name)
        meta = obj["metadata"]
        if key == NAMESPACES:
            return self._delete_namespace(name)
        if propagation == "Foreground":
            self._collect_dependents(str(meta["uid"]), propagation)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            new = dict(obj)
            new["metadata"] = {
                **meta,
                "deletionTimestamp": now_rfc3339(self.clock),
                "deletionGracePeriodSeconds": 0,
                "generation": int(meta.get("generation") or 0) + 1,
            }
            self._store(key, namespace, name, new, obj)
            return new
        return self._remove(key, namespace, name, orphan=propagation == "Orphan")

    def _delete_namespace(self, name: str) -> Obj:
        obj = self.peek(NAMESPACES, "", name)
        assert obj is not None
        if not obj["metadata"].get("deletionTimestamp"):
            new = dict(obj)
            new["metadata"] = {
                **obj["metadata"],
                "deletionTimestamp": now_rfc3339(self.clock),
                "deletionGracePeriodSeconds": 0,
            }
            new["status"] = {**(obj.get("status") or {}), "phase": "Terminating"}
            self._store(NAMESPACES, "", name, new, obj)
            obj = new
        for key, buckets in list(self._objects.items()):
            for child in list(buckets.get(name, {})):
                if self.peek(key, name, child) is not None:
                    self._delete(key, name, child, None)
        self._finish_namespace(name)
        return self.peek(NAMESPACES, "", name) or obj

    def _finish_namespace(self, name: str) -> None:
        obj = self.peek(NAMESPACES, "", name)
        if obj is None or not obj["metadata"].get("deletionTimestamp"):
            return
        if any(buckets.get(name) for key, buckets in self._objects.items() if key != NAMESPACES):
            return
        self._remove(NAMESPACES, "", name)

    # ----------------------------------------------------------------------------- scaling

    def get_scale(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj:
        obj = self.get(info, namespace, name)
        meta = obj["metadata"]
        spec_path, status_path, selector_path = info.scale_paths
        selector = ""
        if selector_path:
            selector = str(_get_path(obj, selector_path) or "")
        elif info.key == DEPLOYMENTS or info.crd is None:
            selector = str(LabelSelector.from_spec((obj.get("spec") or {}).get("selector")))
        scale_meta = {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        }
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": scale_meta,
            "spec": {"replicas": int(_get_path(obj, spec_path) or 0)},
            "status": {"replicas": int(_get_path(obj, status_path) or 0), "selector": selector},
        }

    def set_scale(
        self, info: ResourceInfo, namespace: str | None, name: str, scale: Any, *, dry_run: bool = False
    ) -> Obj:
        if not isinstance(scale, dict):
            raise errors.bad_request("a Scale must be an object")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(
                "Scale",
                "autoscaling",
                name,
                [
                    Cause(
                        "spec.replicas",
                        "FieldValueInvalid",
                        f"Invalid value: {replicas!r}: must be a non-negative integer",
                    )
                ],
            )
        old = self.get(info, namespace, name)
        expected = (scale.get("metadata") or {}).get("resourceVersion")
        if expected and str(expected) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(info.group, info.plural, name)
        new = clone(old)
        _set_path(new, info.scale_paths[0], replicas)
        self._update(info, old, new, subresource=None, dry_run=dry_run, strict=False)
        return (
            self.get_scale(info, namespace, name)
            if not dry_run
            else {**scale, "spec": {"replicas": replicas}}
        )

    # ------------------------------------------------------------------------------ watching

    def watch(
        self,
        info: ResourceInfo,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        resource_version: str | None,
        *,
        send_initial: bool = False,
    ) -> tuple[Watcher, list[Obj]]:
        """Register a watcher; returns it with the objects to send first as synthetic ADDED events.

        Raises a 410 ``Expired`` error if events after ``resource_version`` were evicted.
        """
        ns = namespace if info.namespaced else None
        watcher = Watcher(info, ns, labels, fields)
        initial: list[Obj] = []
        if resource_version in (None, "", "0") or send_initial:
            initial = self.select(info.key, ns, labels, fields)
        else:
            try:
                since = int(str(resource_version))
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {resource_version!r}") from None
            if since < self._evicted_rv:
                raise errors.gone(f"too old resource version: {since} ({self._evicted_rv + 1})")
            replay: list[Event] = []
            for event in reversed(self._history):
                if event.rv <= since:
                    break
                if event.key == info.key:
                    replay.append(event)
            for event in reversed(replay):
                watcher.offer(event)
        self._watchers.setdefault(info.key, set()).add(watcher)
        return watcher, initial

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.info.key, set()).discard(watcher)

    def close_watchers(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.close()
        self._watchers.clear()

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    # ------------------------------------------------------------------------------ internals

    def _ns(self, info: ResourceInfo, namespace: str | None, body_namespace: Any = None) -> str:
        if not info.namespaced:
            return ""
        if namespace is None:
            if body_namespace:
                return str(body_namespace)
            raise errors.bad_request(
                "the namespace of the object must be specified for a namespaced resource"
            )
        if body_namespace not in (None, "", namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        return namespace

    def _body(self, info: ResourceInfo, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of a {info.kind} must be a JSON object")
        obj = clone(body)
        kind = obj.get("kind")
        if kind not in (None, "", info.kind):
            raise errors.bad_request(
                f"the kind of the object ({kind}) does not match the resource's kind ({info.kind})"
            )
        api_version = obj.get("apiVersion")
        if api_version not in (None, "", info.api_version):
            group = str(api_version).rpartition("/")[0]
            if group != info.group:
                raise errors.bad_request(
                    f"the API version of the object ({api_version}) does not match the resource ({info.api_version})"
                )
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        metadata = obj.pop("metadata", None)
        return {
            "apiVersion": info.api_version,
            "kind": info.kind,
            "metadata": metadata if isinstance(metadata, dict) else {},
            **obj,
        }

    def _admit(
        self, info: ResourceInfo, obj: Obj, old: Obj | None, subresource: str | None, strict: bool
    ) -> list[str]:
        """Defaulting, pruning and validation. Returns warnings; raises ``Invalid`` errors."""
        meta = obj["metadata"]
        name = str(meta.get("name") or "")
        causes: list[Cause] = []
        if old is None:
            generate_name = meta.get("generateName") if isinstance(meta.get("generateName"), str) else None
            causes.extend(names.name_causes(info.key, name, generate_name=generate_name))
        old_meta = old["metadata"] if old is not None else {}
        # What is unchanged since it was stored was valid then: check only what a write brings.
        if old is None or meta.get("labels") != old_meta.get("labels"):
            causes.extend(names.label_causes(meta.get("labels"), "metadata.labels"))
        if old is None or meta.get("annotations") != old_meta.get("annotations"):
            causes.extend(names.annotation_causes(meta.get("annotations"), "metadata.annotations"))
        if not isinstance(meta.get("finalizers", []), list):
            causes.append(
                Cause("metadata.finalizers", "FieldValueTypeInvalid", "Invalid value: must be a list")
            )
        warnings: list[str] = []
        if info.crd is None:
            causes.extend(self._builtin_admission(info, obj, old))
        elif info.schema is not None:
            pruned = info.schema.prune(obj)
            if pruned and strict:
                raise errors.bad_request(
                    "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in pruned)
                )
            warnings.extend(f'unknown field "{p}"' for p in pruned)
            unchanged = (
                old is not None
                and obj.get("status") == old.get("status")
                and _spec_part(obj) == _spec_part(old)
            )
            if not unchanged:  # like validation ratcheting: content already accepted is not re-checked
                only = "status" if subresource == "status" else None
                causes.extend(info.schema.validate(obj, only=only))
                if not causes and info.schema.cel:
                    causes.extend(info.schema.cel.validate(obj, old, only=only))
        if causes:
            raise errors.invalid(info.kind, info.group, name, causes)
        return warnings

    def _builtin_admission(self, info: ResourceInfo, obj: Obj, old: Obj | None) -> list[Cause]:
        key = info.key
        causes: list[Cause] = []
        admit = _WORKLOAD_ADMISSION.get(key)
        if admit is not None:  # defaults first: a Job's generated labels are checked like any label
            causes.extend(admit(obj, old))
        spec = obj.get("spec")
        if isinstance(spec, dict) and (old is None or spec != old.get("spec")):
            causes.extend(_embedded_label_causes(key, spec))
        if key == NAMESPACES:
            status = obj.setdefault("status", {})
            if isinstance(status, dict):
                status.setdefault("phase", "Active")
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("finalizers", ["kubernetes"])
        elif key == ("", "secrets"):
            string_data = obj.pop("stringData", None)
            if isinstance(string_data, dict):
                data = obj.setdefault("data", {})
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
            obj.setdefault("type", "Opaque")
        elif key == ("", "services"):
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("type", "ClusterIP")
                previous = ((old or {}).get("spec") or {}).get("clusterIP")
                if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
                    if previous:
                        spec["clusterIP"] = previous
                    else:
                        n = next(self._ips)
                        spec["clusterIP"] = f"10.96.{n // 250 % 250}.{n % 250 + 1}"
                if spec.get("clusterIP"):
                    spec["clusterIPs"] = [spec["clusterIP"]]
        elif key == DEPLOYMENTS:
            causes.extend(_deployment_admission(obj))
        elif key == CRDS:
            _, crd_causes = crd_resources(obj)
            causes.extend(crd_causes)
            if not crd_causes:
                obj["status"] = _crd_status(obj, old, self.clock)
        return causes

    def _ensure_namespace(self, name: str) -> None:
        if self.peek(NAMESPACES, "", name) is not None:
            return
        obj: Obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(self.clock),
                "generation": 1,
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        self._store(NAMESPACES, "", name, obj, None)

    def _store(self, key: RKey, namespace: str, name: str, obj: Obj, old: Obj | None) -> None:
        """Persist ``obj`` (a fresh dict, owned by the store from now on) and emit the event."""
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        self._objects.setdefault(key, {}).setdefault(namespace, {})[name] = obj
        ref = (namespace, name)
        old_labels = _labels(old) if old is not None else {}
        new_labels = _labels(obj)
        if old_labels != new_labels:
            index = self._label_index.setdefault(key, {})
            for k, v in old_labels.items():
                if new_labels.get(k) != v:
                    index.get(k, {}).get(v, set()).discard(ref)
            for k, v in new_labels.items():
                if old_labels.get(k) != v:
                    index.setdefault(k, {}).setdefault(str(v), set()).add(ref)
        uid = str(meta["uid"])
        self._uids[uid] = (key, namespace, name)
        old_owners = _owner_uids(old) if old is not None else set()
        new_owners = _owner_uids(obj)
        for owner in old_owners - new_owners:
            self._dependents.get(owner, set()).discard((key, namespace, name))
        for owner in new_owners - old_owners:
            self._dependents.setdefault(owner, set()).add((key, namespace, name))
        if key == CRDS:
            self._register_crd(obj)
        self._emit(Event(self._rv, "ADDED" if old is None else "MODIFIED", key, namespace, obj, old))

    def _remove(self, key: RKey, namespace: str, name: str, *, orphan: bool = False) -> Obj:
        bucket = self._objects[key][namespace]
        obj = bucket.pop(name)
        if not bucket:
            del self._objects[key][namespace]
        self._rv += 1
        final = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
        ref = (namespace, name)
        index = self._label_index.get(key, {})
        for k, v in _labels(obj).items():
            index.get(k, {}).get(v, set()).discard(ref)
        uid = str(obj["metadata"]["uid"])
        self._uids.pop(uid, None)
        for owner in _owner_uids(obj):
            self._dependents.get(owner, set()).discard((key, namespace, name))
        self._emit(Event(self._rv, "DELETED", key, namespace, final, obj))
        if key == CRDS:
            self._unregister_crd(obj)
        if orphan:
            self._orphan_dependents(uid)
        else:
            self._collect_dependents(uid, None)
        if namespace:
            self._finish_namespace(namespace)
        return final

    def _emit(self, event: Event) -> None:
        self._history.append(event)
        while len(self._history) > self.history_size:
            self._evicted_rv = self._history.popleft().rv
        for watcher in self._watchers.get(event.key, ()):
            watcher.offer(event)
        for listener in self.listeners:
            listener(event)

    # ---------------------------------------------------------------------- garbage collection

    def _collect_dependents(self, uid: str, propagation: str | None) -> None:
        for key, namespace, name in sorted(self._dependents.get(uid, set())):
            obj = self.peek(key, namespace, name)
            if obj is None:
                continue
            others = _owner_uids(obj) - {uid}
            if any(other in self._uids for other in others):
                continue  # another owner still exists
            self._delete(key, namespace, name, propagation)
        if uid not in self._uids:
            self._dependents.pop(uid, None)

    def _orphan_dependents(self, uid: str) -> None:
        for key, namespace, name in sorted(self._dependents.pop(uid, set())):
            obj = self.peek(key, namespace, name)
            if obj is None:
                continue
            new = clone(obj)
            refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self._store(key, namespace, name, new, obj)

    # ------------------------------------------------------------------------------ CRDs

    def _register_crd(self, crd: Obj) -> None:
        infos, causes = crd_resources(crd)
        if causes:
            return
        self.registry.remove_crd(str(crd["metadata"]["name"]))
        for info in infos:
            self.registry.add(info)

    def _unregister_crd(self, crd: Obj) -> None:
        gone = self.registry.remove_crd(str(crd["metadata"]["name"]))
        keys = {info.key for info in gone}
        for key in keys:
            if self.registry.for_key(key):
                continue  # another CRD serves the same group/plural (should not happen)
            for namespace, bucket in list(self._objects.get(key, {}).items()):
                for name in list(bucket):
                    self._remove(key, namespace, name)
            self._objects.pop(key, None)
            self._label_index.pop(key, None)
            for watcher in self._watchers.pop(key, set()):
                watcher.close()


def _get_path(obj: Obj, path: str) -> Any:
    value: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    node = obj
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _deployment_admission(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    spec.setdefault("replicas", 1)
    replicas = spec["replicas"]
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        causes.append(
            Cause(
                "spec.replicas",
                "FieldValueInvalid",
                f"Invalid value: {replicas!r}: must be greater than or equal to 0",
            )
        )
    spec.setdefault(
        "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    )
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.get("template")
    template_labels = ((template or {}).get("metadata") or {}).get("labels") or {}
    selector_spec = spec.get("selector")
    if not selector_spec:
        causes.append(Cause("spec.selector", "FieldValueRequired", "Required value"))
    else:
        try:
            selector = LabelSelector.from_spec(selector_spec)
        except ApiError as exc:
            causes.append(Cause("spec.selector", "FieldValueInvalid", f"Invalid value: {exc.message}"))
        else:
            if not selector:
                causes.append(
                    Cause(
                        "spec.selector",
                        "FieldValueInvalid",
                        "Invalid value: empty selector is invalid for deployment",
                    )
                )
            elif not selector.matches(template_labels):
                causes.append(
                    Cause(
                        "spec.template.metadata.labels",
                        "FieldValueInvalid",
                        f"Invalid value: {template_labels!r}: `selector` does not match template `labels`",
                    )
                )
    containers = (
        (((template or {}).get("spec") or {}).get("containers")) if isinstance(template, dict) else None
    )
    if not containers:
        causes.append(Cause("spec.template.spec.containers", "FieldValueRequired", "Required value"))
    return causes


_WORKLOAD_ADMISSION: dict[RKey, Callable[[Obj, Obj | None], list[Cause]]] = {
    workloads.JOBS: workloads.job_admission,
    workloads.CRONJOBS: workloads.cronjob_admission,
    workloads.HPAS: workloads.hpa_admission,
}

_POD_TEMPLATE_OWNERS = {
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"),
    ("", "replicationcontrollers"),
}


def _embedded_label_causes(key: RKey, spec: Obj) -> list[Cause]:
    """Labels the real server checks inside a spec: pod templates, selectors, a Service's selector."""
    causes: list[Cause] = []
    if key in _POD_TEMPLATE_OWNERS:
        causes.extend(names.selector_causes(spec.get("selector"), "spec.selector"))
        causes.extend(names.template_meta_causes(spec.get("template"), "spec.template"))
    elif key == ("batch", "cronjobs"):
        job = spec.get("jobTemplate")
        causes.extend(names.template_meta_causes(job, "spec.jobTemplate"))
        if isinstance(job, dict) and isinstance(job.get("spec"), dict):
            job_spec = job["spec"]
            causes.extend(names.selector_causes(job_spec.get("selector"), "spec.jobTemplate.spec.selector"))
            causes.extend(
                names.template_meta_causes(job_spec.get("template"), "spec.jobTemplate.spec.template")
            )
    elif key == ("", "services"):
        causes.extend(names.label_causes(spec.get("selector"), "spec.selector"))
    elif key == ("policy", "poddisruptionbudgets"):
        causes.extend(names.selector_causes(spec.get("selector"), "spec.selector"))
    return causes


def _crd_status(crd: Obj, old: Obj | None, clock: Callable[[], float]) -> Obj:
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    stamp = now_rfc3339(clock)
    previous = {c.get("type"): c for c in ((old or {}).get("status") or {}).get("conditions") or []}

    def condition(kind: str, reason: str, message: str) -> dict[str, str]:
        since = previous.get(kind, {}).get("lastTransitionTime", stamp)
        return {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
        }

    storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    stored = list(((old or {}).get("status") or {}).get("storedVersions") or [])
    for version in storage:
        if version not in stored:
            stored.append(version)
    return {
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    }
