"""The shadow phase with the real operator on the emulator (upstream Gateway API / Istio CRDs, the
stand-in gateway controller): the route mirrors to a canary that gets no user weight, the canary's
pods load the stable's model, a good version passes to step 1 and is promoted, a degenerate one is
rolled back from the shadow phase having never been weighted."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from .conftest import merge_patch
from .test_routers_integration import NAME, PLURAL, TRAFFIC, revision, route, weighted

model_deployment = pytest.importorskip("integration.harness").model_deployment

pytestmark = pytest.mark.integration

SHADOW = {"duration": "2s", "mirrorPercent": 50, "minSamples": 10, "agreement": {"min": 0.9}}
METRICS = {
    "1.0.0": {"error-rate": 0.001},
    "2.0.0": {"error-rate": 0.001, "shadow-agreement": {"value": 0.99, "sampleSize": 500}},
    "3.0.0": {"error-rate": 0.001, "shadow-agreement": {"value": 0.4, "sampleSize": 500}},
}


def manifest(router: str, version: str) -> dict[str, Any]:
    obj = model_deployment(NAME, version, traffic=copy.deepcopy(TRAFFIC[router]), step_duration="1s")
    obj["spec"]["shadow"] = dict(SHADOW)
    return obj


def set_version(cluster: Any, version: str) -> None:
    merge_patch(
        cluster.emu.url,
        f"/apis/mlcanary.io/v1alpha1/namespaces/default/modeldeployments/{NAME}",
        {"spec": {"model": {"version": version, "uri": f"file:///models/{NAME}/{version}/"}}},
    )


def mirrors_to(cluster: Any, router: str) -> str | None:
    obj = route(cluster, router)
    if obj is None:
        return None
    if router == "gatewayAPI":
        for rule in obj["spec"]["rules"]:
            for flt in rule.get("filters") or []:
                if flt.get("type") == "RequestMirror":
                    return str(flt["requestMirror"]["backendRef"]["name"])
        return None
    for http in obj["spec"]["http"]:
        if "mirror" in http:
            return str(http["mirror"]["host"])
    return None


def reference_env(cluster: Any, deployment_name: str) -> dict[str, str]:
    for deployment in cluster.deployments():
        if deployment["metadata"]["name"] == deployment_name:
            env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            return {e["name"]: e["value"] for e in env if e["name"].startswith("MLCANARY_REFERENCE")}
    return {}


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
def test_shadow_phase_passes_a_good_version_and_stops_a_degenerate_one(
    mesh_cluster: Any, route_status: Any, operator: Any, router: str
) -> None:
    cluster = mesh_cluster
    cluster.set_metrics(METRICS)
    cluster.apply(manifest(router, "1.0.0"))
    cluster.wait_for(
        lambda: cluster.status(NAME).get("phase") == "Healthy", "v1 healthy", operator=operator, timeout=60
    )
    v1 = revision(cluster, "stable")
    assert mirrors_to(cluster, router) is None

    set_version(cluster, "2.0.0")
    seen: dict[str, Any] = {"mirrored": set(), "weights": set(), "reference": {}}

    def shadowing() -> bool:
        status = cluster.status(NAME)
        canary = (status.get("canary") or {}).get("revision")
        if canary:
            seen["reference"] = reference_env(cluster, canary) or seen["reference"]
        return status.get("phase") == "Shadowing" and mirrors_to(cluster, router) == canary is not None

    cluster.wait_for(shadowing, "2.0.0 shadowing with the mirror in the route", timeout=60, operator=operator)
    v2 = revision(cluster, "canary")
    assert weighted(cluster, router) == {v1: 100}  # no user weight while shadowing
    assert seen["reference"]["MLCANARY_REFERENCE_VERSION"] == "1.0.0"
    assert seen["reference"]["MLCANARY_REFERENCE_BUNDLE_URI"] == f"file:///models/{NAME}/1.0.0/"

    cluster.wait_for(
        lambda: (
            cluster.status(NAME).get("stableVersion") == "2.0.0"
            and cluster.status(NAME).get("phase") == "Healthy"
        ),
        "2.0.0 promoted after its shadow phase",
        timeout=90,
        operator=operator,
    )
    record = cluster.status(NAME)["history"][-1]
    assert record["outcome"] == "Promoted" and record["steps"][0]["kind"] == "shadow"
    assert record["steps"][0]["verdict"] == "Successful"
    assert reference_env(cluster, v2) == {}  # the new stable runs without the reference model
    assert mirrors_to(cluster, router) is None

    set_version(cluster, "3.0.0")

    def rolled_back() -> bool:
        canary = (cluster.status(NAME).get("canary") or {}).get("revision")
        if canary:
            seen["mirrored"].add(mirrors_to(cluster, router))
            seen["weights"].add(weighted(cluster, router).get(canary, 0))
        return cluster.status(NAME).get("phase") == "RolledBack"

    cluster.wait_for(rolled_back, "3.0.0 rolled back from the shadow phase", timeout=60, operator=operator)
    status = cluster.status(NAME)
    assert status["stableVersion"] == "2.0.0" and "3.0.0" in status["rejectedVersions"]
    assert "shadow phase failed" in status["history"][-1]["reason"]
    assert "shadow-agreement=0.4" in status["history"][-1]["reason"]
    assert seen["weights"] <= {0}  # the degenerate version never had user weight
    assert weighted(cluster, router) == {v2: 100} and mirrors_to(cluster, router) is None
    reasons = {e.get("reason") for e in cluster.events()}
    assert {"ShadowStarted", "ShadowPassed", "ShadowFailed"} <= reasons
    assert PLURAL[router]


def test_operator_killed_mid_shadow_resumes_without_running_it_again(
    mesh_cluster: Any, route_status: Any, operator: Any
) -> None:
    from datetime import datetime

    cluster = mesh_cluster
    cluster.set_metrics(METRICS)
    obj = manifest("gatewayAPI", "1.0.0")
    obj["spec"]["shadow"]["duration"] = "6s"
    cluster.apply(obj)
    cluster.wait_for(
        lambda: cluster.status(NAME).get("phase") == "Healthy", "v1 healthy", operator=operator, timeout=60
    )
    set_version(cluster, "2.0.0")
    cluster.wait_for(
        lambda: cluster.status(NAME).get("phase") == "Shadowing", "shadowing", operator=operator, timeout=60
    )
    started = cluster.status(NAME)["shadow"]["startedAt"]
    # Events are posted after the status write: kill mid-phase once ShadowStarted is out, so the
    # restart is what could post it a second time (a kill in between would lose it, at most once).
    cluster.wait_for(
        lambda: any(e.get("reason") == "ShadowStarted" for e in cluster.events()),
        "ShadowStarted posted",
        operator=operator,
        timeout=30,
    )
    operator.kill()
    time.sleep(1.5)
    assert cluster.status(NAME)["phase"] == "Shadowing"
    operator.start()
    cluster.wait_for(
        lambda: (cluster.status(NAME).get("shadow") or {}).get("phase") == "Passed",
        "shadow passed after the restart",
        operator=operator,
        timeout=60,
    )
    shadow = cluster.status(NAME)["shadow"]
    assert shadow["startedAt"] == started  # resumed, not started over
    lasted = datetime.fromisoformat(shadow["finishedAt"]) - datetime.fromisoformat(started)
    assert 6.0 <= lasted.total_seconds() < 6.0 + 4.0
    cluster.wait_for(
        lambda: cluster.status(NAME).get("stableVersion") == "2.0.0",
        "promoted",
        operator=operator,
        timeout=60,
    )
    started_events = [e for e in cluster.events() if e.get("reason") == "ShadowStarted"]
    assert sum(int(e.get("count") or 1) for e in started_events) == 1, started_events
