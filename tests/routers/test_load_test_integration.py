"""spec.loadTest with the real operator (`kopf run`, under the chart's RBAC) against the API emulator.

The emulator's Job simulation is off: this test is the kubelet. When the operator's Job appears it
checks what the Job would run, creates the Job's pod with the result line in its termination
message (as a kubelet copies /dev/termination-log there) and marks the Job Complete. Istio router
(the replicas router cannot keep users off a ready canary, so loadTest refuses it).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kube_emulator import EmulatorThread

from .conftest import merge_patch
from .test_routers_integration import NAME, TRAFFIC, healthy_at, weighted

harness = pytest.importorskip("integration.harness")
chart_rbac = pytest.importorskip("integration.chart_rbac")

pytestmark = pytest.mark.integration

GOOD = {"error-rate": 0.001}
LOAD_TEST = {
    "rps": 50,
    "concurrency": 4,
    "duration": "5s",
    "warmup": "1s",
    "slo": {"maxLatencyP95": "100ms", "maxLatencyP99": "250ms", "maxErrorRate": 0.01},
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """The shared harness's cluster, with the emulator's Job simulation off (this test runs them)."""
    with EmulatorThread(bookmark_interval=1.0, tls=True, job_controller=False) as emu:
        emu.apply(harness.load_crd())
        c = chart_rbac.RbacCluster(emu, tmp_path, tmp_path / "metrics.json")
        c.set_metrics({})
        yield c


def manifest(version: str) -> dict[str, Any]:
    obj: dict[str, Any] = harness.model_deployment(
        NAME, version, traffic=copy.deepcopy(TRAFFIC["istio"]), step_duration="1s", steps=[50]
    )
    obj["spec"]["loadTest"] = LOAD_TEST
    return obj


def result(p95: float) -> dict[str, float]:
    return {
        "requested_rps": 50,
        "achieved_rps": 49.9,
        "requests": 250,
        "errors": 0,
        "error_rate": 0.0,
        "latency_p50_seconds": p95 / 2,
        "latency_p95_seconds": p95,
        "latency_p99_seconds": p95 * 1.2,
        "latency_max_seconds": p95 * 2,
        "duration_seconds": 5,
    }


def load_test_jobs(cluster: Any) -> list[dict[str, Any]]:
    return list(cluster.emu.objects("jobs", "default"))


def run_job_as_kubelet(cluster: Any, job: dict[str, Any], reported: dict[str, float]) -> None:
    meta = job["metadata"]
    cluster.emu.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-x1y2z",
                "namespace": "default",
                "labels": {"job-name": meta["name"], "controller-uid": meta["uid"]},
            },
            "spec": {"restartPolicy": "Never", "containers": job["spec"]["template"]["spec"]["containers"]},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "loadtest",
                        "ready": False,
                        "state": {"terminated": {"exitCode": 0, "message": json.dumps(reported)}},
                    }
                ],
            },
        }
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # ttlSecondsAfterFinished counts from it
    cluster.emu.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": meta["name"], "namespace": "default"},
            "status": {
                "startTime": now,
                "completionTime": now,
                "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            },
        }
    )


def set_version(cluster: Any, version: str) -> None:
    merge_patch(
        cluster.emu.url,
        f"/apis/mlcanary.io/v1alpha1/namespaces/default/modeldeployments/{NAME}",
        {"spec": {"model": {"version": version, "uri": f"file:///models/{NAME}/{version}/"}}},
    )


def test_the_operator_runs_the_load_test_job_reads_its_result_and_passes_or_rolls_back(
    mesh_cluster: Any, operator: Any
) -> None:
    cluster = mesh_cluster
    cluster.set_metrics({"1.0.0": GOOD, "2.0.0": GOOD, "3.0.0": GOOD})
    cluster.apply(manifest("1.0.0"))
    cluster.wait_for(lambda: healthy_at(cluster, "1.0.0"), "v1 healthy", operator=operator)
    assert load_test_jobs(cluster) == []  # the first version serves at once: nothing to compare

    # v2: load-tested at weight 0, passes, goes on to its step
    set_version(cluster, "2.0.0")
    [job] = cluster.wait_for(lambda: load_test_jobs(cluster), "the load test Job", operator=operator)
    status = cluster.status(NAME)
    assert status["phase"] == "LoadTesting" and status["loadTest"]["jobName"] == job["metadata"]["name"]
    canary = status["canary"]["revision"]
    assert weighted(cluster, "istio").get(canary, 0) == 0
    [container] = job["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert container["command"] == ["python", "-m", "mlcanary_serving.loadtest"]
    assert args[args.index("--url") + 1] == f"http://{canary}.default.svc:8080"  # its own Service
    assert args[args.index("--rps") + 1] == "50" and "--termination-log" in args
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 6 + 120
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert "mlcanary.io/model-deployment" not in job["spec"]["template"]["metadata"]["labels"]
    run_job_as_kubelet(cluster, job, result(p95=0.02))
    cluster.wait_for(
        lambda: cluster.status(NAME).get("phase") in ("Progressing", "Promoting", "Healthy"),
        "v2 past its load test",
        operator=operator,
    )
    cluster.wait_for(lambda: healthy_at(cluster, "2.0.0"), "v2 promoted", operator=operator)
    record = cluster.status(NAME)["history"][-1]
    assert record["loadTest"]["phase"] == "Passed" and record["loadTest"]["achievedRps"] == 49.9
    reasons = [e["reason"] for e in cluster.events()]
    assert "LoadTestStarted" in reasons and "LoadTestPassed" in reasons

    # v3: too slow under load -> rolled back, never weighted
    set_version(cluster, "3.0.0")

    def v3_job() -> dict[str, Any] | None:
        test = cluster.status(NAME).get("loadTest") or {}
        return cluster.emu.get_object("jobs", test["jobName"], "default") if "jobName" in test else None

    job = cluster.wait_for(v3_job, "v3's load test Job", operator=operator)
    canary = cluster.status(NAME)["canary"]["revision"]
    run_job_as_kubelet(cluster, job, result(p95=0.4))
    cluster.wait_for(
        lambda: cluster.status(NAME).get("phase") == "RolledBack", "v3 rolled back", operator=operator
    )
    status = cluster.status(NAME)
    assert status["stableVersion"] == "2.0.0" and "3.0.0" in status["rejectedVersions"]
    reason = status["history"][-1]["reason"]
    assert "p95 latency 400.0ms above maxLatencyP95 100ms" in reason, reason
    failed = [e for e in cluster.events() if e["reason"] == "LoadTestFailed"]
    assert failed and failed[0]["type"] == "Warning" and "400.0ms" in failed[0]["message"]
    assert canary not in weighted(cluster, "istio") or weighted(cluster, "istio")[canary] == 0


def test_rps_from_stable_runs_the_job_at_the_stables_rate_times_the_headroom(
    mesh_cluster: Any, operator: Any
) -> None:
    cluster = mesh_cluster
    # The metrics source answers the operator's stable-rate round: 36000 requests of 1.0.0 in 1h.
    cluster.set_metrics({"1.0.0": {"stableRequestRate": {"value": 0.0, "sampleSize": 36000}}, "2.0.0": GOOD})
    first = manifest("1.0.0")
    first["spec"]["loadTest"] = {"rpsFromStable": {"headroom": 2, "window": "1h"}, "duration": "5s"}
    cluster.apply(first)
    cluster.wait_for(lambda: healthy_at(cluster, "1.0.0"), "v1 healthy", operator=operator)
    set_version(cluster, "2.0.0")
    [job] = cluster.wait_for(lambda: load_test_jobs(cluster), "the load test Job", operator=operator)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--rps") + 1] == "20", args  # 10 rps x 2
    status = cluster.status(NAME)
    assert status["loadTest"]["requestedRps"] == 20
    assert "the stable served 10.00 rps over 1h; testing 20 rps" in status["message"]
