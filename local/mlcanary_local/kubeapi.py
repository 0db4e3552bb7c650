"""A small async Kubernetes REST client for the local stack's own components (kubelet, gateway, demo).

The operator talks to the API through :mod:`mlcanary.kube` (the official client); the local
components need watches and a cache instead, so they use this: plain aiohttp against the standard
REST paths, which the emulator serves like any API server. Only what the stack needs: get, list,
create, merge-patch, delete, and :class:`Informer` (list + watch into a dict, re-listing when the
watch expires).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def server_from_kubeconfig(path: str | Path) -> tuple[str, str | None]:
    """(server URL, bearer token or None) of the current context of a kubeconfig file."""
    server, token, _ = connection_from_kubeconfig(path)
    return server, token


def connection_from_kubeconfig(path: str | Path) -> tuple[str, str | None, str | None]:
    """(server URL, bearer token or None, base64 CA data or None) of the current context."""
    config = yaml.safe_load(Path(path).read_text())
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    context: dict[str, Any] = contexts.get(current) or next(iter(contexts.values()), {})
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    cluster = clusters.get(context.get("cluster")) or next(iter(clusters.values()))
    user = users.get(context.get("user"), {})
    return str(cluster["server"]).rstrip("/"), user.get("token"), cluster.get("certificate-authority-data")


def collection_path(api_version: str, plural: str, namespace: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace is not None:
        base += f"/namespaces/{namespace}"
    return f"{base}/{plural}"


PODS = ("v1", "pods")
SERVICES = ("v1", "services")
NAMESPACES = ("v1", "namespaces")
EVENTS = ("v1", "events")
DEPLOYMENTS = ("apps/v1", "deployments")
MODEL_DEPLOYMENTS = ("mlcanary.io/v1alpha1", "modeldeployments")
HTTPROUTES = ("gateway.networking.k8s.io/v1", "httproutes")


class KubeApi:
    """Async REST calls against one API server. Use as an async context manager (owns a session)."""

    def __init__(self, server: str, token: str | None = None, ca_data: str | None = None) -> None:
        self.server = server.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        # An https server is verified against the kubeconfig's CA (the emulator makes its own).
        self.ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cadata=base64.b64decode(ca_data).decode()) if ca_data else True
        )
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> KubeApi:
        return cls(*connection_from_kubeconfig(path))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=32, ssl=self.ssl),
                timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=None),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        seconds: float = 15.0,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                message = text
                with contextlib.suppress(ValueError, AttributeError):
                    message = str(json.loads(text).get("message", text))
                raise ApiError(response.status, message[:500])
            return json.loads(text) if text else {}

    async def get(self, path: str) -> Obj | None:
        try:
            result: Obj = await self.request("GET", path)
            return result
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", path, params=params)
        items: list[Obj] = result.get("items") or []
        return items

    async def create(self, path: str, obj: Obj) -> Obj:
        result: Obj = await self.request("POST", path, obj)
        return result

    async def merge_patch(self, path: str, patch: Obj) -> Obj:
        result: Obj = await self.request("PATCH", path, patch, content_type=MERGE_PATCH)
        return result

    async def delete(self, path: str) -> bool:
        try:
            await self.request("DELETE", path)
            return True
        except ApiError as error:
            if error.status == 404:
                return False
            raise

    async def apply(self, obj: Obj) -> Obj:
        """Create ``obj``, or merge-patch it (spec, metadata labels/annotations) when it exists."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        plural = PLURALS.get(kind) or kind.lower() + "s"
        namespace = obj["metadata"].get("namespace")
        collection = collection_path(api_version, plural, namespace)
        try:
            return await self.create(collection, obj)
        except ApiError as error:
            if error.status != 409:
                raise
        patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
        return await self.merge_patch(f"{collection}/{obj['metadata']['name']}", patch)

    async def ensure_namespace(self, namespace: str) -> None:
        try:
            await self.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
        except ApiError as error:
            if error.status != 409:
                raise

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                await self.request("GET", "/version", seconds=2)
                return
            except (aiohttp.ClientError, ApiError, TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)


PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "Namespace": "namespaces",
    "Deployment": "deployments",
    "ModelDeployment": "modeldeployments",
    "HTTPRoute": "httproutes",
    "CustomResourceDefinition": "customresourcedefinitions",
    "Endpoints": "endpoints",
}


def key_of(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


class Informer:
    """A live cache of one resource across namespaces: list, then watch; re-list on expiry or error.

    ``objects`` maps (namespace, name) to the latest object. ``changed`` is set on every change (the
    owner clears it); ``on_change`` callbacks run on every event with (type, object)."""

    def __init__(
        self,
        api: KubeApi,
        resource: tuple[str, str],
        label_selector: str | None = None,
        on_change: Callable[[str, Obj], Awaitable[None] | None] | None = None,
    ) -> None:
        self.api = api
        self.path = collection_path(*resource)
        self.label_selector = label_selector
        self.objects: dict[tuple[str, str], Obj] = {}
        self.changed = asyncio.Event()
        self.synced = asyncio.Event()
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer {self.path}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _notify(self, kind: str, obj: Obj) -> None:
        self.changed.set()
        if self.on_change is not None:
            result = self.on_change(kind, obj)
            if result is not None:
                await result

    async def _run(self) -> None:
        while True:
            try:
                version = await self._list()
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the API restarting, a network blip: re-list shortly
                logger.debug("informer %s: %s; re-listing", self.path, error)
                await asyncio.sleep(0.5)

    async def _list(self) -> str:
        params = {"labelSelector": self.label_selector} if self.label_selector else None
        result = await self.api.request("GET", self.path, params=params)
        fresh = {key_of(item): item for item in result.get("items") or []}
        for key in set(self.objects) - set(fresh):
            old = self.objects.pop(key)
            await self._notify("DELETED", old)
        for key, item in fresh.items():
            if self.objects.get(key) != item:
                self.objects[key] = item
                await self._notify("MODIFIED", item)
        self.synced.set()
        self.changed.set()
        return str((result.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> None:
        params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
        params["timeoutSeconds"] = "300"
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        async with self.api.session.get(
            self.api.server + self.path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=330),
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, await response.text())
            async for raw in response.content:
                line = raw.strip()
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
                if kind == "BOOKMARK":
                    continue
                key = key_of(obj)
                if kind == "DELETED":
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = obj
                await self._notify(str(kind), obj)
