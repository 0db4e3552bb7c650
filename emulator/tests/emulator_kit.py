"""Helpers shared by the emulator tests: an HTTP wrapper, watch reader, builders and polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

CM = "/api/v1/namespaces/default/configmaps"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


class Http:
    """Thin JSON wrapper over an aiohttp session bound to the emulator."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        **params: str,
    ) -> tuple[int, Any]:
        data = None
        if body is not None:
            data = body if isinstance(body, str) else json.dumps(body)
        headers = {"Content-Type": content_type}
        async with self.session.request(
            method, path, data=data, headers=headers, params=params or None
        ) as rsp:
            text = await rsp.text()
            try:
                return rsp.status, json.loads(text)
            except json.JSONDecodeError:
                return rsp.status, text

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        return await self.request("GET", path, **params)

    async def post(self, path: str, body: Any, **params: str) -> tuple[int, Any]:
        return await self.request("POST", path, body, **params)

    async def put(self, path: str, body: Any, **params: str) -> tuple[int, Any]:
        return await self.request("PUT", path, body, **params)

    async def patch(self, path: str, body: Any, content_type: str = MERGE, **params: str) -> tuple[int, Any]:
        return await self.request("PATCH", path, body, content_type=content_type, **params)

    async def delete(self, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        return await self.request("DELETE", path, body, **params)

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        if method == "PATCH":
            kwargs.setdefault("content_type", MERGE)
        status, payload = await self.request(method, path, body, **kwargs)
        assert status in (200, 201), (status, payload)
        return payload

    async def watch(
        self, path: str, *, max_events: int = 1000, within: float = 5.0, **params: str
    ) -> list[dict[str, Any]]:
        """Read watch events until the server ends the stream, ``max_events`` arrive, or ``within`` seconds."""
        events: list[dict[str, Any]] = []
        query = {"watch": "true", **params}
        async with self.session.get(path, params=query) as rsp:
            assert rsp.status == 200, await rsp.text()
            assert rsp.headers["Content-Type"].startswith("application/json")
            try:
                async with asyncio.timeout(within):
                    async for line in rsp.content:
                        if line.strip():
                            events.append(json.loads(line))
                        if len(events) >= max_events:
                            break
            except TimeoutError:
                pass
        return events


def meta_of(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["object"].get("metadata") or {})


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment(
    name: str,
    replicas: int = 1,
    *,
    image: str = "model:1",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": name, **(labels or {})}}
    if annotations:
        meta["annotations"] = annotations
    template_meta: dict[str, Any] = {"labels": {"app": name}}
    if template_annotations:
        template_meta["annotations"] = template_annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "containers": [{"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]}]
                },
            },
        },
    }


def widget_crd(
    *,
    status_subresource: bool = True,
    group: str = "example.com",
    plural: str = "widgets",
    kind: str = "Widget",
    short: str = "wdg",
) -> dict[str, Any]:
    """A namespaced test CRD with a schema that has every kind of constraint the tests exercise."""
    version: dict[str, Any] = {
        "name": "v1",
        "served": True,
        "storage": True,
        "additionalPrinterColumns": [
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
        ],
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10},
                            "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                            "nick": {"type": "string", "pattern": "^[a-z]+$", "nullable": True},
                            "port": {"x-kubernetes-int-or-string": True},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "rollout": {
                                "type": "object",
                                "properties": {
                                    "steps": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["weight"],
                                            "properties": {
                                                "weight": {"type": "integer", "minimum": 1, "maximum": 100}
                                            },
                                        },
                                    }
                                },
                            },
                        },
                    },
                    "status": {
                        "type": "object",
                        "properties": {
                            "phase": {"type": "string", "enum": ["Pending", "Ready", "Failed"]},
                            "observedGeneration": {"type": "integer"},
                            "conditions": {
                                "type": "array",
                                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        },
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                },
            }
        },
    }
    if status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "shortNames": [short],
                "categories": ["all"],
            },
            "versions": [version],
        },
    }


def widget(name: str, size: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, **spec},
    }


async def wait_for(predicate: Callable[[], Any], within: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``predicate()`` until truthy (async); fail with the last value after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate()`` until truthy (sync); fail with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(interval)


def admin_headers(emu: Any) -> dict[str, str]:
    """The Authorization header of the emulator's admin (group system:masters)."""
    return {"Authorization": f"Bearer {emu.admin_token}"}
