"""The local gateway realises the shadow phase's RequestMirror filter over real HTTP: the user gets the
stable pod's answer at once, a copy of the prediction request reaches the canary pod (its answer is
thrown away), /feedback and GETs are never copied, and the percent is honoured."""

from __future__ import annotations

import asyncio
import copy
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kube_emulator import KubernetesEmulator
from mlcanary.kubeapi import HTTPROUTES, PODS, ApiClient, load_connection
from mlcanary_local.gateway import SHADOW_HEADER, Gateway
from mlcanary_local.kubelet import PORT_ANNOTATION
from mlcanary_local.stack import extra_crds

NS, NAME, STABLE, CANARY = "default", "fraud", "fraud-v1", "fraud-v2"
CANARY_DELAY = 1.0  # the canary answers slowly: the user's answer must not wait for it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """A real HTTP server standing in for a pod; records what it received."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name, self.delay, self.port = name, delay, free_port()
        self.seen: list[tuple[str, str, bool]] = []  # (method, path, shadow copy)
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append((request.method, request.path, request.headers.get(SHADOW_HEADER) == "1"))
        await asyncio.sleep(self.delay)
        return web.json_response({"served_by": self.name})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


def route(percent: int) -> dict[str, Any]:
    from mlcanary.engine import SetTraffic
    from mlcanary.routers.gateway_api import httproute

    from .kit import context, revisions

    ctx = context({"gatewayAPI": {"parentRefs": [{"name": "gw"}]}}, revisions())
    obj = httproute(ctx, SetTraffic(STABLE, CANARY, 0, percent))
    obj["metadata"] = {"name": NAME, "namespace": NS}
    return obj


async def _setup(api: ApiClient, stable: Backend, canary: Backend, percent: int) -> None:
    for crd in extra_crds():
        await api.create_or_merge(crd)
    for _ in range(100):  # served once the emulator registered it
        try:
            await api.list(HTTPROUTES, NS)
            break
        except Exception:
            await asyncio.sleep(0.05)
    for backend, revision in ((stable, STABLE), (canary, CANARY)):
        await api.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": revision, "namespace": NS},
                "spec": {"selector": {"rev": revision}, "ports": [{"port": 8080}]},
            }
        )
        await api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{revision}-pod",
                    "namespace": NS,
                    "labels": {"rev": revision},
                    "annotations": {PORT_ANNOTATION: str(backend.port)},
                },
                "spec": {"containers": [{"name": "server", "image": "x"}]},
            }
        )
        await api.patch(
            PODS,
            NS,
            f"{revision}-pod",
            {"status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
            subresource="status",
        )
    await api.create(route(percent))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[str, Backend, Backend, Gateway]]:
    stable, canary = Backend("stable"), Backend("canary", delay=CANARY_DELAY)
    await stable.start()
    await canary.start()
    async with KubernetesEmulator(authorization="AlwaysAllow", deployment_controller=False) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        async with ApiClient(load_connection(str(kubeconfig))) as api:
            await _setup(api, stable, canary, 100)
            gateway = Gateway(api)
            await gateway.start()
            await asyncio.wait_for(gateway.routes.synced.wait(), 30)
            runner = web.AppRunner(gateway.app(), access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                yield f"http://127.0.0.1:{port}/{NS}/{NAME}", stable, canary, gateway
            finally:
                await runner.cleanup()
                await gateway.stop()
    for backend in (stable, canary):
        assert backend.runner is not None
        await backend.runner.cleanup()


async def _wait(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_users_get_the_stable_answer_without_waiting_and_the_canary_gets_a_copy(world: Any) -> None:
    url, stable, canary, gateway = world
    await _wait(lambda: gateway.table.rule_for(NS, NAME, "/predict", {}, "POST") is not None)
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(url + "/predict", json={"features": [1, 2]}) as answer:
            body = await answer.json()
        elapsed = time.monotonic() - started
        assert body == {"served_by": "stable"}
        assert elapsed < CANARY_DELAY  # never waited for the slow canary's copy
        async with http.post(url + "/v2/models/fraud/infer", json={}) as answer:
            assert (await answer.json()) == {"served_by": "stable"}
        async with http.post(url + "/feedback", json={"request_id": "x", "label": 1}) as answer:
            assert (await answer.json()) == {"served_by": "stable"}
        async with http.get(url + "/predict") as answer:
            assert (await answer.json()) == {"served_by": "stable"}
    await _wait(lambda: len(canary.seen) >= 2)
    await asyncio.sleep(CANARY_DELAY + 0.3)
    assert sorted(canary.seen) == [("POST", "/predict", True), ("POST", "/v2/models/fraud/infer", True)]
    assert all(not shadow for _, _, shadow in stable.seen) and len(stable.seen) == 4
    assert gateway.mirrors_sent == 2 and gateway.mirrors_dropped == 0


async def test_the_mirror_percent_is_honoured(world: Any) -> None:
    _url, _stable, canary, gateway = world
    await _wait(lambda: gateway.table.rule_for(NS, NAME, "/predict", {}, "POST") is not None)
    # the fixture's route mirrors 100%; other shares are drawn on a copy of its rule
    rule = copy.deepcopy(gateway.table.rule_for(NS, NAME, "/predict", {}, "POST"))
    rule["filters"][0]["requestMirror"]["percent"] = 25
    drawn = sum(bool(gateway.table.mirror_pods(NS, rule)) for _ in range(4000))
    assert 800 < drawn < 1200
    rule["filters"][0]["requestMirror"] = {
        "backendRef": rule["filters"][0]["requestMirror"]["backendRef"],
        "fraction": {"numerator": 1, "denominator": 1000},
    }
    assert sum(bool(gateway.table.mirror_pods(NS, rule)) for _ in range(4000)) < 20
    assert canary.seen == []
