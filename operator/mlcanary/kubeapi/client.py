"""An async REST client for the Kubernetes API (aiohttp): the verbs the project uses, and watch streams.

:class:`Transport` is the seam: :class:`ApiClient` speaks HTTP to an API server; tests can put an
in-memory store behind the same verbs. Every call can be counted (``on_request``), which is how the
operator exports its API request rate and how benchmarks check the idle cost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from mlcanary.kubeapi.connection import Connection
from mlcanary.kubeapi.errors import ApiError
from mlcanary.kubeapi.resources import Obj, Resource, resource_for

logger = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

RequestHook = Callable[[str, str, int], None]  # (verb, path, HTTP status or 0 for no answer)


class Transport:
    """The verbs, built on one ``request`` primitive that subclasses implement."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = JSON,
        seconds: float | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body, raise :class:`ApiError` on a non-2xx."""
        raise NotImplementedError

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            found: Obj = await self.request("GET", resource.path(namespace, name))
            return found
        except ApiError as error:
            if error.not_found:
                return None
            raise

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str = ""
    ) -> tuple[list[Obj], str]:
        """Items (in ``namespace``, or all namespaces when None) and the list's resourceVersion."""
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", resource.path(namespace), params=params)
        items: list[Obj] = result.get("items") or []
        return items, str((result.get("metadata") or {}).get("resourceVersion") or "")

    async def create(self, obj: Obj) -> Obj:
        resource = resource_for(obj)
        created: Obj = await self.request("POST", resource.path(obj["metadata"].get("namespace")), body=obj)
        return created

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> Obj:
        patched: Obj = await self.request(
            "PATCH", resource.path(namespace, name, subresource), body=patch, content_type=content_type
        )
        return patched

    async def replace(self, obj: Obj) -> Obj:
        """PUT the whole object; its ``metadata.resourceVersion`` makes it conditional (409 when stale)."""
        meta = obj["metadata"]
        replaced: Obj = await self.request(
            "PUT", resource_for(obj).path(meta.get("namespace"), meta["name"]), body=obj
        )
        return replaced

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete in the background (dependents are garbage-collected); False when already gone."""
        try:
            await self.request(
                "DELETE",
                resource.path(namespace, name),
                body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
            )
            return True
        except ApiError as error:
            if error.not_found:
                return False
            raise

    async def create_or_merge(self, obj: Obj) -> Obj:
        """Create ``obj``, or merge it onto the object of that name (every top-level field but status),
        as ``kubectl apply`` would for a hand-written manifest."""
        try:
            return await self.create(obj)
        except ApiError as error:
            if not error.conflict:
                raise
        meta = obj["metadata"]
        patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
        return await self.patch(resource_for(obj), meta.get("namespace"), meta["name"], patch)

    async def ensure_namespace(self, name: str) -> None:
        try:
            await self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiError as error:
            if not error.conflict:
                raise

    def watch(
        self, resource: Resource, namespace: str | None, params: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type": ..., "object": ...}``) until the server ends the stream."""
        raise NotImplementedError


class ApiClient(Transport):
    """HTTP to one API server. Create and use inside a running event loop; ``close()`` when done."""

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float = 30.0,
        max_connections: int = 32,
        on_request: RequestHook | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.connection = connection
        # Names the process to the API server (audit logs, managedFields; the emulator counts by it).
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_connections = max_connections
        self.on_request = on_request
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, ssl=self.connection.ssl_context),
                timeout=aiohttp.ClientTimeout(total=None, connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON}
        if self.user_agent:
            headers["User-Agent"] = self.user_agent
        if content_type is not None:
            headers["Content-Type"] = content_type
        authorization = self.connection.authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    def _count(self, method: str, path: str, status: int) -> None:
        if self.on_request is not None:
            self.on_request(method, path, status)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = JSON,
        seconds: float | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        status = 0
        try:
            async with self.session.request(
                method,
                self.connection.server + path,
                data=data,
                params=params,
                headers=self._headers(content_type if body is not None else None),
                # Bounds the exchange itself, not the wait for a pooled connection: a busy pool
                # delays a request, it does not fail it.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=seconds or self.timeout),
            ) as response:
                status = response.status
                raw = await response.read()
        finally:
            self._count(method, path, status)
        if status >= 400:
            raise ApiError.from_body(status, raw)
        return json.loads(raw) if raw else {}

    async def watch(
        self, resource: Resource, namespace: str | None, params: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        path = resource.path(namespace)
        query = {**params, "watch": "true"}
        server_timeout = float(query.get("timeoutSeconds") or 300)
        self._count("WATCH", path, 200)
        async with self.session.get(
            self.connection.server + path,
            params=query,
            headers=self._headers(None),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=server_timeout + 30),
        ) as response:
            if response.status >= 400:
                raise ApiError.from_body(response.status, await response.read())
            async for raw in response.content:
                line = raw.strip()
                if line:
                    event: dict[str, Any] = json.loads(line)
                    yield event

    async def wait_ready(self, within: float = 30.0) -> None:
        """Wait until the API server answers ``/version`` (a server starting up)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                await self.request("GET", "/version", seconds=2)
                return
            except (aiohttp.ClientError, ApiError, TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)
