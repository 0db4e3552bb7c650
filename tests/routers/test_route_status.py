"""The local stand-in gateway controller: the status it writes is what a real one writes, valid by the
upstream schema, and it leaves other controllers' entries alone."""

from __future__ import annotations

from mlcanary.routers.gateway_api import GatewayAPIRouter, parents_verdict
from mlcanary.routers.istio import IstioRouter, istiod_verdict
from mlcanary_local.route_status import CONTROLLER_NAME, RouteStatusController

from .kit import (
    CANARY,
    GATEWAY,
    ISTIO,
    NAME,
    NAMESPACE,
    STABLE,
    MemoryKube,
    context,
    needs_upstream,
    schema_errors,
    target,
)


def service(name: str, port: int = 8080) -> dict:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }


async def route_in(kube: MemoryKube) -> dict:
    await GatewayAPIRouter().apply(kube, context(GATEWAY), target(20))
    route = kube.obj("httproutes", NAME)
    assert route is not None
    return route


def conditions(route: dict) -> dict[str, str]:
    (entry,) = [p for p in route["status"]["parents"] if p["controllerName"] == CONTROLLER_NAME]
    return {c["type"]: c["status"] for c in entry["conditions"]}


async def test_accepts_every_parent_for_the_current_generation_and_then_stays_quiet() -> None:
    kube = MemoryKube()
    kube.put("services", service(STABLE))
    kube.put("services", service(CANARY))
    await route_in(kube)
    controller = RouteStatusController(kube.api)
    await controller.sync_once()
    route = kube.obj("httproutes", NAME)
    assert conditions(route) == {"Accepted": "True", "ResolvedRefs": "True"}
    assert parents_verdict(route, route["spec"]["parentRefs"])[0]
    writes = kube.writes
    await controller.sync_once()
    assert kube.writes == writes


async def test_missing_backend_service_is_reported_and_keeps_the_route_unverified() -> None:
    kube = MemoryKube()
    kube.put("services", service(STABLE))
    await route_in(kube)
    await RouteStatusController(kube.api).sync_once()
    route = kube.obj("httproutes", NAME)
    assert conditions(route) == {"Accepted": "True", "ResolvedRefs": "False"}
    ok, why = parents_verdict(route, route["spec"]["parentRefs"])
    assert not ok and CANARY in why


async def test_refused_parents_and_other_controllers_entries() -> None:
    kube = MemoryKube()
    await route_in(kube)
    route = kube.objects[("httproutes", NAMESPACE, NAME)]
    foreign = {"parentRef": {"name": "x"}, "controllerName": "example.com/other", "conditions": []}
    route["status"] = {"parents": [foreign]}
    await RouteStatusController(kube.api, accept=lambda route, parent: False).sync_once()
    route = kube.obj("httproutes", NAME)
    assert route["status"]["parents"][0] == foreign
    assert conditions(route)["Accepted"] == "False"
    assert not parents_verdict(route, route["spec"]["parentRefs"])[0]


async def test_virtualservices_get_istiod_style_status_only_when_asked() -> None:
    kube = MemoryKube()
    await IstioRouter().apply(kube, context(ISTIO), target(20))
    await RouteStatusController(kube.api).sync_once()
    assert "status" not in kube.obj("virtualservices", NAME)
    await RouteStatusController(kube.api, virtualservices=True).sync_once()
    vs = kube.obj("virtualservices", NAME)
    assert istiod_verdict(vs, require_status=True)[0] is True


@needs_upstream
async def test_written_status_is_valid_for_the_upstream_schemas() -> None:
    kube = MemoryKube()
    kube.put("services", service(STABLE))
    await route_in(kube)
    await IstioRouter().apply(kube, context(ISTIO), target(20))
    await RouteStatusController(kube.api, virtualservices=True).sync_once()
    for plural in ("httproutes", "virtualservices"):
        obj = kube.obj(plural, NAME)
        assert obj is not None and obj["status"]
        assert schema_errors(obj) == []
