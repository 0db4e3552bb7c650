"""The real operator (`kopf run`, a subprocess) against the Kubernetes API emulator, with each router.

The emulator has the upstream Gateway API and Istio CRDs registered, so what the routers write is
defaulted, pruned and validated by those schemas as it is stored. The stand-in gateway controller
(``mlcanary_local.route_status``) marks HTTPRoutes Accepted; without it nothing is ever verified.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from .conftest import merge_patch

# The shared harness (tests/integration) runs the emulator and the operator.
model_deployment = pytest.importorskip("integration.harness").model_deployment

pytestmark = pytest.mark.integration

NAME = "fraud"
GOOD, BAD = {"error-rate": 0.001}, {"error-rate": 0.5}
TRAFFIC: dict[str, dict[str, Any]] = {
    "replicas": {"replicas": {}},
    "gatewayAPI": {
        "gatewayAPI": {
            "parentRefs": [{"name": "public", "namespace": "infra", "sectionName": "http"}],
            "hostnames": ["fraud.example.com"],
            "extraRules": [
                {"name": "testers", "matches": [{"headers": [{"name": "X-Canary", "value": "always"}]}]}
            ],
        }
    },
    "istio": {
        "istio": {
            "hosts": [NAME],
            "settleTime": "500ms",
            "extraRules": [
                {"name": "testers", "matches": [{"headers": [{"name": "X-Canary", "value": "always"}]}]}
            ],
        }
    },
}
PLURAL = {"gatewayAPI": "httproutes", "istio": "virtualservices"}
PATH = {
    "gatewayAPI": f"/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/{NAME}",
    "istio": f"/apis/networking.istio.io/v1/namespaces/default/virtualservices/{NAME}",
}


def manifest(router: str, version: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("step_duration", "1s")
    return model_deployment(NAME, version, traffic=copy.deepcopy(TRAFFIC[router]), **kwargs)


def route(cluster: Any, router: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = cluster.emu.get_object(PLURAL[router], NAME, "default")
    return found


def weighted(cluster: Any, router: str) -> dict[str, int]:
    """Revision -> weight of the live weighted rule (the last one)."""
    obj = route(cluster, router)
    if obj is None:
        return {}
    if router == "gatewayAPI":
        return {r["name"]: r["weight"] for r in obj["spec"]["rules"][-1]["backendRefs"]}
    return {d["destination"]["host"]: d["weight"] for d in obj["spec"]["http"][-1]["route"]}


def revision(cluster: Any, role: str) -> str | None:
    found = cluster.status(NAME).get(role) or {}
    return found.get("revision")


def healthy_at(cluster: Any, version: str) -> bool:
    status = cluster.status(NAME)
    return status.get("phase") == "Healthy" and status.get("stableVersion") == version


def deploy_v1(cluster: Any, operator: Any, router: str, **kwargs: Any) -> None:
    cluster.set_metrics({"1.0.0": GOOD, "2.0.0": GOOD, "3.0.0": BAD})
    cluster.apply(manifest(router, "1.0.0", **kwargs))
    cluster.wait_for(lambda: healthy_at(cluster, "1.0.0"), "v1 healthy", operator=operator)


def set_version(cluster: Any, version: str) -> None:
    merge_patch(
        cluster.emu.url,
        f"/apis/mlcanary.io/v1alpha1/namespaces/default/modeldeployments/{NAME}",
        {"spec": {"model": {"version": version, "uri": f"file:///models/{NAME}/{version}/"}}},
    )


@pytest.mark.parametrize("router", ["replicas", "gatewayAPI", "istio"])
def test_promotion_then_rollback(mesh_cluster: Any, route_status: Any, operator: Any, router: str) -> None:
    cluster = mesh_cluster
    deploy_v1(cluster, operator, router)
    v1 = revision(cluster, "stable")
    if router in PLURAL:
        obj = route(cluster, router)
        assert obj is not None
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["controller"] and owner["uid"] == cluster.mdep(NAME)["metadata"]["uid"]
        assert weighted(cluster, router) == {v1: 100}

    set_version(cluster, "2.0.0")
    seen: set[int] = set()

    def promoted() -> bool:
        if router in PLURAL:
            seen.update(w for name, w in weighted(cluster, router).items() if name != v1)
        return healthy_at(cluster, "2.0.0")

    cluster.wait_for(promoted, "2.0.0 promoted", timeout=60, operator=operator)
    v2 = revision(cluster, "stable")
    assert cluster.status(NAME)["history"][-1]["outcome"] == "Promoted"
    if router in PLURAL:
        assert {20, 50} <= seen, seen  # each step was written to the route
        assert weighted(cluster, router) == {v2: 100}
    cluster.wait_for(
        lambda: {d["metadata"]["name"] for d in cluster.deployments()} == {v2},
        "v1 removed",
        operator=operator,
    )

    set_version(cluster, "3.0.0")  # fails its analysis
    cluster.wait_for(
        lambda: cluster.status(NAME).get("phase") == "RolledBack",
        "3.0.0 rolled back",
        timeout=60,
        operator=operator,
    )
    assert cluster.status(NAME)["stableVersion"] == "2.0.0"
    if router in PLURAL:
        assert weighted(cluster, router) == {v2: 100}
    cluster.wait_for(
        lambda: {d["metadata"]["name"] for d in cluster.deployments()} == {v2},
        "canary removed",
        operator=operator,
    )


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
def test_a_hand_edit_of_the_weights_is_reverted(
    mesh_cluster: Any, route_status: Any, operator: Any, router: str
) -> None:
    cluster = mesh_cluster
    deploy_v1(cluster, operator, router, step_duration="1h")  # the rollout holds at step 1
    v1 = revision(cluster, "stable")
    set_version(cluster, "2.0.0")
    cluster.wait_for(lambda: cluster.status(NAME).get("currentStep") == 1, "step 1", operator=operator)
    v2 = revision(cluster, "canary")
    cluster.wait_for(lambda: weighted(cluster, router) == {v1: 80, v2: 20}, "20% written", operator=operator)

    live = route(cluster, router)
    assert live is not None
    if router == "gatewayAPI":
        rules = live["spec"]["rules"]
        rules[-1]["backendRefs"] = [dict(rules[-1]["backendRefs"][1], weight=100)]
        edited = merge_patch(cluster.emu.url, PATH[router], {"spec": {"rules": rules}})
        assert [r["name"] for r in edited["spec"]["rules"][-1]["backendRefs"]] == [v2]
    else:
        http = live["spec"]["http"]
        http[-1]["route"] = [dict(http[-1]["route"][1], weight=100)]
        edited = merge_patch(cluster.emu.url, PATH[router], {"spec": {"http": http}})
        assert [d["destination"]["host"] for d in edited["spec"]["http"][-1]["route"]] == [v2]
    cluster.wait_for(
        lambda: weighted(cluster, router) == {v1: 80, v2: 20},
        "hand edit reverted",
        timeout=10,
        operator=operator,
    )
    assert cluster.status(NAME)["currentStep"] == 1


def test_a_changed_parent_ref_is_applied(mesh_cluster: Any, route_status: Any, operator: Any) -> None:
    cluster = mesh_cluster
    deploy_v1(cluster, operator, "gatewayAPI")
    merge_patch(
        cluster.emu.url,
        f"/apis/mlcanary.io/v1alpha1/namespaces/default/modeldeployments/{NAME}",
        {
            "spec": {
                "traffic": {
                    "gatewayAPI": {"parentRefs": [{"name": "fraud", "kind": "Service", "port": 8080}]}
                }
            }
        },
    )

    def moved() -> bool:
        obj = route(cluster, "gatewayAPI") or {}
        parents = ((obj.get("status") or {}).get("parents")) or []
        return (obj.get("spec") or {}).get("parentRefs") == [
            {"group": "", "kind": "Service", "name": "fraud", "port": 8080}
        ] and [p["parentRef"]["name"] for p in parents] == ["fraud"]

    cluster.wait_for(moved, "route moved to the mesh (GAMMA) parent and accepted there", operator=operator)
    set_version(cluster, "2.0.0")
    cluster.wait_for(
        lambda: healthy_at(cluster, "2.0.0"), "promoted through the new parent", timeout=60, operator=operator
    )


def test_without_a_gateway_controller_the_rollout_never_passes_step_one(
    mesh_cluster: Any, route_status: Any, operator: Any
) -> None:
    cluster = mesh_cluster
    deploy_v1(cluster, operator, "gatewayAPI")
    route_status.stop()  # the gateway goes away: nothing will accept the next generation
    set_version(cluster, "2.0.0")
    cluster.wait_for(lambda: cluster.status(NAME).get("currentStep") == 1, "step 1", operator=operator)
    time.sleep(6)  # six steps' worth of stepDuration
    status = cluster.status(NAME)
    assert (status["phase"], status["currentStep"], status["canaryWeight"]) == ("Progressing", 1, 20)
    assert "waiting for the router to confirm" in status["message"]
    route_status.start()
    cluster.wait_for(
        lambda: healthy_at(cluster, "2.0.0"),
        "promoted once the gateway accepts",
        timeout=60,
        operator=operator,
    )
