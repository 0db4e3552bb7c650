"""The same rollout scenarios with every router, through the real reconcile shell (in process).

Invariants checked over every tick of every scenario:

* no route (weighted rule or pinned rule) ever sends traffic to a revision whose Deployment is not
  available at that moment;
* a revision's Deployment is never deleted while a route still references it, and never before a
  route without it has been confirmed (gateway status, or the operator's own verdict for Istio);
* with a mesh router, a revision that carries traffic is never scaled below the full replica count;
  with the replica router, some pod is ready at every moment after the first deploy.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlcanary.routers.gateway_api import parents_verdict

from .world import ROUTERS, Snapshot, World

ALL = list(ROUTERS)
MESH = ["gatewayAPI", "istio"]


# ------------------------------------------------------------------------------------- reading routes


def route_backends(snapshot: Snapshot, router: str) -> dict[str, int]:
    """Revision -> weight over every rule of the live route (a pinned rule counts as weight 100)."""
    route = snapshot.route(router)
    found: dict[str, int] = {}
    if route is None:
        return found
    if router == "gatewayAPI":
        refs = [r for rule in route["spec"]["rules"] for r in rule["backendRefs"]]
        pairs = [(r["name"], r.get("weight", 1)) for r in refs]
    else:
        dests = [d for http in route["spec"]["http"] for d in http["route"]]
        pairs = [(d["destination"]["host"], d.get("weight", 100)) for d in dests]
    for name, weight in pairs:
        found[name] = max(found.get(name, 0), weight)
    return found


def canary_weight(snapshot: Snapshot, router: str) -> int | None:
    """The canary share of the weighted rule only."""
    route = snapshot.route(router)
    if route is None:
        return None
    if router == "gatewayAPI":
        pairs = [(r["name"], r["weight"]) for r in route["spec"]["rules"][-1]["backendRefs"]]
    else:
        pairs = [(d["destination"]["host"], d["weight"]) for d in route["spec"]["http"][-1]["route"]]
    stable = (snapshot.status.get("stable") or {}).get("revision")
    return (
        sum(w for name, w in pairs if name != stable)
        if len(pairs) > 1
        else (0 if pairs[0][0] == stable else 100)
    )


def route_confirmed(snapshot: Snapshot, router: str) -> bool:
    route = snapshot.route(router)
    if route is None:
        return False
    if router == "gatewayAPI":
        return parents_verdict(route, route["spec"]["parentRefs"])[0]
    return True  # settleTime 0s: read back once is confirmed


def available(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return int(status.get("readyReplicas") or 0) >= max(1, int(deployment["spec"].get("replicas", 1)))


def check_invariants(world: World) -> None:
    router = world.router
    first_healthy = next((i for i, s in enumerate(world.history) if s.phase == "Healthy"), None)
    for index, snapshot in enumerate(world.history):
        deployments = snapshot.deployments()
        backends = route_backends(snapshot, router)
        for revision, weight in backends.items():
            if weight > 0:
                where = f"tick {snapshot.tick}: route sends traffic to {revision}"
                assert revision in deployments, f"{where}, which has no Deployment"
                assert available(deployments[revision]), f"{where}, which is not available"
                if router in MESH:
                    assert deployments[revision]["spec"]["replicas"] == 4, f"{where} scaled down"
        if router == "replicas" and first_healthy is not None and index >= first_healthy:
            ready = sum(int((d.get("status") or {}).get("readyReplicas") or 0) for d in deployments.values())
            assert ready > 0, f"tick {snapshot.tick}: no ready pod behind the entry Service"
        if index == 0:
            continue
        gone = set(world.history[index - 1].deployments()) - set(deployments)
        for revision in gone:
            where = f"tick {snapshot.tick}: {revision} deleted"
            assert revision not in backends, f"{where} while the route still references it"
            if router in MESH:
                assert any(
                    revision not in route_backends(earlier, router) and route_confirmed(earlier, router)
                    for earlier in world.history[:index]
                    if earlier.route(router) is not None
                ), f"{where} before a route without it was confirmed"
            stable = snapshot.status["stable"]["revision"]
            assert stable in deployments and available(deployments[stable]), (
                f"{where} with stable unavailable"
            )


def weights_seen(world: World) -> list[int | None]:
    seen: list[int | None] = []
    for snapshot in world.history:
        weight = canary_weight(snapshot, world.router)
        if not seen or seen[-1] != weight:
            seen.append(weight)
    return seen


async def deployed(router: str, **kwargs: Any) -> World:
    world = World(router, **kwargs)
    world.deploy("1.0.0")
    await world.run_until(lambda s: s.phase == "Healthy")
    return world


# ------------------------------------------------------------------------------------------ scenarios


@pytest.mark.parametrize("router", ALL)
async def test_promotion(router: str) -> None:
    world = await deployed(router)
    world.deploy("2.0.0")
    await world.run_until(lambda s: s.phase == "Healthy" and s.status.get("stableVersion") == "2.0.0")
    final = await world.run_until(lambda s: len(s.deployments()) == 1)
    assert final.status["history"][-1]["outcome"] == "Promoted"
    assert [s["weight"] for s in final.status["history"][-1]["steps"]] == [20, 50]
    check_invariants(world)
    if router in MESH:
        # 0 while the canary gets ready, then each step, then all of it; the new stable keeps it all.
        assert weights_seen(world)[-4:] == [20, 50, 100, 0]
        assert list(route_backends(final, router)) == [final.status["stable"]["revision"]]


@pytest.mark.parametrize("router", ALL)
async def test_rollback_on_failed_analysis(router: str) -> None:
    world = await deployed(router)
    world.provider.bad.add("2.0.0")
    world.deploy("2.0.0")
    await world.run_until(lambda s: s.phase == "RolledBack")
    final = await world.run_until(lambda s: len(s.deployments()) == 1)
    assert final.status["stableVersion"] == "1.0.0"
    assert final.status["history"][-1]["outcome"] == "RolledBack"
    check_invariants(world)
    if router in MESH:
        assert list(route_backends(final, router)) == [final.status["stable"]["revision"]]
        assert max(w or 0 for w in weights_seen(world)) == 20


@pytest.mark.parametrize("router", ALL)
async def test_a_canary_that_never_becomes_ready_is_never_weighted(router: str) -> None:
    world = await deployed(router)
    world.broken.add("2.0.0")
    world.deploy("2.0.0")
    await world.run_until(lambda s: s.phase == "RolledBack", limit=60)
    check_invariants(world)
    if router in MESH:
        canary = world.history[-1].status["history"][-1]["version"]
        assert canary == "2.0.0"
        assert all(canary_weight(s, router) in (0, None) for s in world.history)


async def test_without_a_gateway_controller_the_rollout_never_passes_the_first_step() -> None:
    world = await deployed("gatewayAPI")
    world.gateway_controller = False
    world.deploy("2.0.0")
    for _ in range(15):  # one simulated second each, within progressDeadline (20s)
        snapshot = await world.tick()
    assert snapshot.phase == "Progressing"
    assert (snapshot.status["currentStep"], snapshot.status["canaryWeight"]) == (1, 20)
    assert "waiting for the router to confirm 20%" in snapshot.status["message"]
    assert canary_weight(snapshot, "gatewayAPI") == 20  # applied, just never verified
    world.gateway_controller = True
    await world.run_until(lambda s: s.phase == "Healthy" and s.status.get("stableVersion") == "2.0.0")
    check_invariants(world)


async def test_a_route_never_accepted_is_rolled_back_after_the_progress_deadline() -> None:
    world = await deployed("gatewayAPI")
    world.gateway_controller = False
    world.deploy("2.0.0")
    snapshot = await world.run_until(lambda s: s.phase == "RollingBack")
    assert snapshot.status["ending"]["reason"].startswith(
        "router did not confirm 20% within progressDeadline"
    )
    assert max(s.status.get("currentStep") or 0 for s in world.history) == 1
    # Weight 0 cannot be confirmed either while nothing accepts the route: the canary keeps running
    # rather than being removed under traffic the operator cannot see.
    for _ in range(10):
        snapshot = await world.tick()
    assert snapshot.phase == "RollingBack"
    assert any(p == "deployments" and n.startswith("fraud-v2") for (p, _, n) in world.kube.objects)
    world.gateway_controller = True
    snapshot = await world.run_until(lambda s: s.phase == "RolledBack")
    assert snapshot.status["rejectedVersions"] == ["2.0.0"]
    check_invariants(world)


@pytest.mark.parametrize("router", MESH)
async def test_hand_edited_weights_are_reverted_mid_rollout(router: str) -> None:
    world = await deployed(router)
    world.deploy("2.0.0")
    await world.run_until(lambda s: s.status.get("currentStep") == 1 and canary_weight(s, router) == 20)
    plural = "httproutes" if router == "gatewayAPI" else "virtualservices"

    def everything_to_canary(obj: dict[str, Any]) -> None:
        if router == "gatewayAPI":
            refs = obj["spec"]["rules"][-1]["backendRefs"]
            refs[0]["weight"], refs[1]["weight"] = 0, 100
        else:
            routes = obj["spec"]["http"][-1]["route"]
            routes[0]["weight"], routes[1]["weight"] = 0, 100

    world.kube.edit(plural, "fraud", everything_to_canary)
    snapshot = await world.tick()
    assert canary_weight(snapshot, router) == 20, "reverted in the very next tick"
    assert snapshot.status.get("currentStep") == 1
    await world.run_until(lambda s: s.phase == "Healthy" and s.status.get("stableVersion") == "2.0.0")
    check_invariants(world)


async def test_a_changed_parent_ref_is_applied_and_the_rollout_carries_on() -> None:
    world = await deployed("gatewayAPI")
    world.deploy("2.0.0")
    await world.run_until(lambda s: s.status.get("currentStep") == 1)
    traffic = copy.deepcopy(ROUTERS["gatewayAPI"])
    traffic["gatewayAPI"]["parentRefs"] = [{"name": "internal", "namespace": "infra"}]
    world.set_traffic(traffic)
    snapshot = await world.tick()
    route = snapshot.route("gatewayAPI")
    assert route is not None
    assert [p["name"] for p in route["spec"]["parentRefs"]] == ["internal"]
    await world.run_until(lambda s: s.phase == "Healthy" and s.status.get("stableVersion") == "2.0.0")
    parents = world.kube.obj("httproutes", "fraud")["status"]["parents"]
    assert [p["parentRef"]["name"] for p in parents] == ["internal"]
    check_invariants(world)


async def test_istio_with_istiod_status_reporting_required() -> None:
    traffic = copy.deepcopy(ROUTERS["istio"])
    traffic["istio"].update(requireStatus=True, settleTime="10m")
    world = await deployed("istio", traffic=traffic, istio_status=True)
    world.deploy("2.0.0")
    await world.run_until(lambda s: s.phase == "Healthy" and s.status.get("stableVersion") == "2.0.0")
    check_invariants(world)
    stalled = await deployed("istio", traffic=traffic, istio_status=True)
    stalled.gateway.virtualservices = False  # istiod stops reporting
    stalled.deploy("2.0.0")
    for _ in range(20):
        snapshot = await stalled.tick()
    assert snapshot.phase == "Progressing" and snapshot.status["currentStep"] == 1


async def test_extra_rules_pin_testers_to_the_canary_only_while_it_is_available() -> None:
    world = await deployed("gatewayAPI")
    stable = world.status["stable"]["revision"]
    world.deploy("2.0.0")
    await world.run_until(lambda s: s.status.get("currentStep") == 1)
    snapshot = world.history[-1]
    pinned = snapshot.route("gatewayAPI")["spec"]["rules"][0]["backendRefs"][0]["name"]
    assert pinned == snapshot.status["canary"]["revision"] != stable
    await world.run_until(lambda s: s.phase == "Healthy" and s.status.get("stableVersion") == "2.0.0")
    final = world.history[-1]
    assert (
        final.route("gatewayAPI")["spec"]["rules"][0]["backendRefs"][0]["name"]
        == final.status["stable"]["revision"]
    )
