"""The only module that talks to the Kubernetes API (through the official client).

A small generic layer: objects are plain dicts addressed by ``apiVersion``/``kind``; blocking client
calls run in threads so the operator's event loop never stalls. Writes of children are "ensure":
create when missing, merge-patch when the desired content's hash differs from the one recorded on
the object, nothing otherwise (so a tick that changes nothing writes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

HASH_ANNOTATION = "mlcanary.io/desired-hash"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


DEPLOYMENTS = Resource("apps/v1", "deployments")
SERVICES = Resource("v1", "services")
SECRETS = Resource("v1", "secrets")
EVENTS = Resource("v1", "events")
MODEL_DEPLOYMENTS = Resource("mlcanary.io/v1alpha1", "modeldeployments")
HTTPROUTES = Resource("gateway.networking.k8s.io/v1", "httproutes")
VIRTUALSERVICES = Resource("networking.istio.io/v1", "virtualservices")

_BY_KIND = {
    ("apps/v1", "Deployment"): DEPLOYMENTS,
    ("v1", "Service"): SERVICES,
    ("v1", "Secret"): SECRETS,
    ("v1", "Event"): EVENTS,
    ("mlcanary.io/v1alpha1", "ModelDeployment"): MODEL_DEPLOYMENTS,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTPROUTES,
    ("networking.istio.io/v1", "VirtualService"): VIRTUALSERVICES,
}


def resource_for(obj: dict[str, Any]) -> Resource:
    try:
        return _BY_KIND[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ValueError(f"unknown kind {obj.get('apiVersion')}/{obj.get('kind')}") from None


class ConflictError(Exception):
    """The object changed since it was read (HTTP 409): re-read and retry."""


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def content_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def replacing_patch(live: Any, desired: Any) -> Any:
    """A JSON merge patch (RFC 7386) that turns ``live`` into exactly ``desired``.

    Unlike sending ``desired`` as the patch, keys that only ``live`` has are set to null (removed).

    >>> replacing_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}})
    {'a': None, 'b': {'d': None, 'c': 2}}
    """
    if not isinstance(live, dict) or not isinstance(desired, dict):
        return desired
    patch: dict[str, Any] = {key: None for key in live if key not in desired}
    for key, value in desired.items():
        patch[key] = replacing_patch(live[key], value) if key in live else value
    return patch


class Kube:
    """Async facade over ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api = api_client
        self.writes = 0  # counted for tests and the operator's metrics: a quiet tick writes nothing

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        def call() -> tuple[int, bytes]:
            method_, url, headers, body_, _ = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(method_, url, header_params=headers, body=body_, _request_timeout=30)
            data = response.read()  # type: ignore[no-untyped-call]
            return response.status, data or b""

        try:
            status, data = await asyncio.to_thread(call)
        except ApiException as error:  # raised by some client versions instead of returning the status
            status, data = error.status or 0, (error.body or "").encode()
        if status >= 400:
            reason, message = "", data.decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                parsed = json.loads(message)
                reason, message = str(parsed.get("reason", "")), str(parsed.get("message", message))
            if status == 409:
                raise ConflictError(message[:500])
            raise KubeError(status, reason, message[:500])
        result = json.loads(data) if data else {}
        if method != "GET":
            self.writes += 1
        return result

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call("GET", resource.path(namespace, name))
            return result
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list_objects(
        self, resource: Resource, namespace: str | None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Objects in ``namespace`` (every namespace when None) matching ``label_selector``."""
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await self._call("GET", resource.path(namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def ensure(self, desired: dict[str, Any], force: bool = False) -> dict[str, Any]:
        """Create ``desired`` or bring the live object in line with it; write only on a change.

        A change is seen through the hash of the desired content recorded on the object, so an edit
        made by someone else to the live object goes unnoticed. A caller that compares the live
        object itself (the routers re-assert their weights every tick) passes ``force=True`` when it
        found a difference: the object is then written even though the hash matches, and its
        ``spec`` is made exactly the desired one (fields the desired spec lacks are removed, which a
        plain merge patch would keep)."""
        resource = resource_for(desired)
        meta = desired["metadata"]
        digest = content_hash(desired)
        stamped = json.loads(json.dumps(desired))
        stamped["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest
        current = await self.get(resource, meta["namespace"], meta["name"])
        if current is None:
            try:
                created: dict[str, Any] = await self._call("POST", resource.path(meta["namespace"]), stamped)
                return created
            except ConflictError:  # created concurrently: fall through to compare and patch
                current = await self.get(resource, meta["namespace"], meta["name"])
                if current is None:
                    raise
        if not force and (current["metadata"].get("annotations") or {}).get(HASH_ANNOTATION) == digest:
            return current
        body = stamped
        if force and "spec" in stamped:
            body = {**stamped, "spec": replacing_patch(current.get("spec"), stamped["spec"])}
        patched: dict[str, Any] = await self._call(
            "PATCH", resource.path(meta["namespace"], meta["name"]), body, content_type=MERGE_PATCH
        )
        return patched

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        try:
            await self._call("DELETE", resource.path(namespace, name), {"propagationPolicy": "Background"})
            return True
        except KubeError as error:
            if error.status == 404:
                return False
            raise

    async def patch_status(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        status_patch: dict[str, Any],
        resource_version: str,
    ) -> dict[str, Any]:
        """Merge-patch the status subresource, conditional on ``resource_version`` (409 if stale)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status_patch}
        result: dict[str, Any] = await self._call(
            "PATCH", resource.path(namespace, name, "status"), body, content_type=MERGE_PATCH
        )
        return result

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        import base64

        secret = await self.get(SECRETS, namespace, name)
        if secret is None:
            raise KubeError(404, "NotFound", f"secret {namespace}/{name} not found")
        return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}

    async def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str, component: str = "mlcanary"
    ) -> None:
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
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
        try:
            await self._call("POST", EVENTS.path(meta["namespace"]), event)
        except KubeError as error:  # events are best effort: never fail a tick for one
            logger.warning("could not post event %s: %s", reason, error)
