"""What an SRE broke when trying the operator as a user would, reproduced against the real operator on
the API emulator: hand edits that hid from the operator's hash, a spec that turned invalid mid-rollout,
a Prometheus that never answers, ticks that keep failing, and metric series left behind."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration
GOOD = {"error-rate": 0.001}


def status(cluster: Cluster, name: str = "fraud") -> dict[str, Any]:
    return cluster.status(name)


def deployment_of(cluster: Cluster, version: str) -> dict[str, Any] | None:
    for deployment in cluster.deployments():
        if deployment["metadata"]["labels"].get("app.kubernetes.io/version") == version:
            return deployment
    return None


def at_step_1(cluster: Cluster, operator: OperatorProcess, **spec: Any) -> None:
    """v1 healthy, then v2 held at step 1 (20%: 1 canary pod beside 4) by a long stepDuration."""
    cluster.apply(model_deployment("fraud", "1.0.0", **spec))
    cluster.wait_for(lambda: status(cluster).get("phase") == "Healthy", "v1 healthy", operator=operator)
    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "2.0.0", step_duration="10m", **spec))
    cluster.wait_for(
        lambda: status(cluster).get("phase") == "Progressing" and status(cluster).get("currentStep") == 1,
        "v2 at step 1",
        operator=operator,
    )


def annotate(cluster: Cluster, key: str, value: str, name: str = "fraud") -> float:
    cluster.apply(
        {
            "apiVersion": "mlcanary.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "default", "annotations": {f"mlcanary.io/{key}": value}},
        }
    )
    return time.monotonic()


def test_stable_scaled_to_zero_by_hand_is_restored_and_the_canary_never_grows(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """`kubectl scale deploy <stable> --replicas=0` at 20%: it used to go unnoticed (the hash still
    matched) while the replica rule scaled the canary to every replica — 99.7% of requests on an
    unjudged canary. Now stable is restored within a tick, the canary is never scaled above its
    step, the share actually served is reported, and the rollout holds meanwhile."""
    at_step_1(cluster, operator)
    stable = deployment_of(cluster, "1.0.0")
    assert stable is not None and stable["spec"]["replicas"] == 4
    name = stable["metadata"]["name"]
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 0},
        }
    )
    edited = time.monotonic()
    canary_sizes: list[int] = []

    def restored() -> bool:
        canary = deployment_of(cluster, "2.0.0")
        if canary is not None:
            canary_sizes.append(int(canary["spec"]["replicas"]))
        current = deployment_of(cluster, "1.0.0")
        return current is not None and current["spec"]["replicas"] == 4

    cluster.wait_for(restored, "stable restored", timeout=10, operator=operator, interval=0.01)
    assert time.monotonic() - edited < 3, "not restored within a tick or so"
    assert max(canary_sizes) <= 1, f"the canary was scaled up while stable was gone: {canary_sizes}"
    cluster.wait_for(
        lambda: any(e["reason"] == "ChildRestored" and name in e["message"] for e in cluster.events()),
        "a ChildRestored event naming the Deployment",
        operator=operator,
    )
    # However it went meanwhile, the rollout is still at step 1 and the canary at most at 20%.
    time.sleep(1.5)
    final = status(cluster)
    assert final.get("currentStep") == 1 and final.get("canaryWeight", 0) <= 20
    assert final.get("servedWeight") is None or final["servedWeight"] <= 20


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (
            lambda name: {"spec": {"selector": {"mlcanary.io/model-deployment": "fraud", "extra": "x"}}},
            "selector",
        ),
        (lambda name: {"spec": {"sessionAffinity": "ClientIP"}}, "sessionAffinity"),
        (lambda name: {"spec": {"publishNotReadyAddresses": True}}, "publishNotReadyAddresses"),
    ],
)
def test_a_hand_edit_of_the_entry_service_is_restored(
    cluster: Cluster, operator: OperatorProcess, edit: Any, what: str
) -> None:
    cluster.apply(model_deployment("fraud", "1.0.0"))
    cluster.wait_for(lambda: status(cluster).get("phase") == "Healthy", "v1 healthy", operator=operator)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "fraud", "namespace": "default"},
            **edit("fraud"),
        }
    )

    def back() -> bool:
        service = next(s for s in cluster.services() if s["metadata"]["name"] == "fraud")
        spec = service["spec"]
        return (
            spec["selector"] == {"mlcanary.io/model-deployment": "fraud"}
            and spec.get("sessionAffinity", "None") == "None"
            and not spec.get("publishNotReadyAddresses", False)
        )

    cluster.wait_for(back, f"{what} restored", timeout=10, operator=operator)


def test_abort_works_while_the_spec_is_invalid(cluster: Cluster, operator: OperatorProcess) -> None:
    """A spec that turns invalid mid-rollout (steps not increasing: only the operator can tell) used
    to make the operator wait for a fix before it would act on an abort."""
    at_step_1(cluster, operator)
    bad = model_deployment("fraud", "2.0.0", steps=[50, 20], step_duration="10m")
    cluster.apply(bad)
    cluster.wait_for(
        lambda: any(
            c["type"] == "SpecValid" and c["status"] == "False" and "spec.rollout.steps" in c["message"]
            for c in status(cluster).get("conditions", [])
        ),
        "SpecValid=False naming spec.rollout.steps",
        operator=operator,
    )
    assert status(cluster)["phase"] == "Progressing" and status(cluster)["currentStep"] == 1  # held
    asked = annotate(cluster, "abort", "now")
    cluster.wait_for(
        lambda: status(cluster).get("phase") in ("RollingBack", "RolledBack"),
        "abort acted on",
        operator=operator,
    )
    assert time.monotonic() - asked < 3
    cluster.wait_for(lambda: status(cluster).get("phase") == "RolledBack", "rolled back", operator=operator)
    final = status(cluster)
    assert final["stableVersion"] == "1.0.0" and final["canaryWeight"] == 0
    assert "2.0.0" in final["rejectedVersions"]


class SilentServer:
    """A 'Prometheus' that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent_prometheus() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_abort_is_acted_on_at_once_while_a_prometheus_query_hangs(
    cluster: Cluster, tmp_path: Path, silent_prometheus: SilentServer
) -> None:
    """A due analysis round used to block the tick: an abort waited ~2x the query timeout."""
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path,
        env={
            "MLCANARY_METRICS_SOURCE": "prometheus",
            "MLCANARY_PROMETHEUS_URL": f"http://127.0.0.1:{silent_prometheus.port}",
            "MLCANARY_QUERY_TIMEOUT_SECONDS": "30",
        },
    )
    operator.start()
    try:
        at_step_1(cluster, operator)
        cluster.wait_for(lambda: silent_prometheus.connections, "a query in flight", operator=operator)
        asked = annotate(cluster, "abort", "hang")
        cluster.wait_for(
            lambda: status(cluster).get("phase") in ("RollingBack", "RolledBack"),
            "abort acted on",
            timeout=10,
            operator=operator,
        )
        assert time.monotonic() - asked < 2, "the abort waited for the hanging query"
    finally:
        operator.stop()


def test_ticks_that_keep_failing_are_reported_and_abort_still_works(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """Take away the operator's right to patch Services, then edit the entry Service by hand: every
    tick fails to restore it. The failure is reported (Reconciled=False, an Event), the tick is
    retried at the tick interval, and an abort still moves traffic back to stable."""
    at_step_1(cluster, operator)
    role = next(
        r for r in cluster.emu.objects("clusterroles", None) if r["metadata"]["name"].startswith("it-")
    )
    rules = [dict(rule) for rule in role["rules"]]
    for rule in rules:
        if rule.get("resources") == ["services"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    cluster.emu.apply({**role, "metadata": {"name": role["metadata"]["name"]}, "rules": rules})
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "fraud", "namespace": "default"},
            "spec": {"sessionAffinity": "ClientIP"},
        }
    )
    cluster.wait_for(
        lambda: any(
            c["type"] == "Reconciled" and c["status"] == "False" and "403" in c["message"]
            for c in status(cluster).get("conditions", [])
        ),
        "Reconciled=False",
        operator=operator,
    )
    assert "ReconcileFailed" in {e["reason"] for e in cluster.events()}
    annotate(cluster, "abort", "while-failing")
    cluster.wait_for(
        lambda: (deployment_of(cluster, "2.0.0") or {"spec": {"replicas": 0}})["spec"]["replicas"] == 0,
        "canary pods withdrawn",
        operator=operator,
    )
    assert status(cluster)["phase"] in ("RollingBack", "RolledBack")
    # The right comes back: the rollback completes and Reconciled turns True again.
    cluster.emu.apply({**role, "metadata": {"name": role["metadata"]["name"]}})
    cluster.wait_for(lambda: status(cluster).get("phase") == "RolledBack", "rolled back", operator=operator)
    cluster.wait_for(
        lambda: any(
            c["type"] == "Reconciled" and c["status"] == "True" for c in status(cluster)["conditions"]
        ),
        "Reconciled again",
        operator=operator,
    )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_deleting_a_model_deployment_removes_its_metric_series(cluster: Cluster, tmp_path: Path) -> None:
    """Series of deleted objects (phase=Progressing, weight=20) kept the chart's alerts firing."""
    port = free_port()
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path,
        env={
            "MLCANARY_METRICS_SOURCE": f"file:{cluster.metrics_file}",
            "MLCANARY_METRICS_PORT": str(port),
            "MLCANARY_METRICS_HOST": "127.0.0.1",
        },
    )
    operator.start()
    try:
        at_step_1(cluster, operator)
        assert 'name="fraud"' in scrape(port)
        cluster.emu.delete("modeldeployments", "fraud", "default")
        cluster.wait_for(lambda: 'name="fraud"' not in scrape(port), "series removed", operator=operator)
        assert "mlcanary_operator_api_requests_total" in scrape(port)
    finally:
        operator.stop()
