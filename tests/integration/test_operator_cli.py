"""`mlcanary run` starts the same operator, serves its own metrics, and keeps Kopf's bookkeeping
under our annotation prefix."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cli_operator(cluster: Cluster, tmp_path: Path):
    port = free_port()
    process = OperatorProcess(
        cluster.kubeconfig,
        tmp_path,
        env={"MLCANARY_METRICS_SOURCE": f"file:{cluster.metrics_file}", "MLCANARY_METRICS_HOST": "127.0.0.1"},
        args=("-m", "mlcanary.cli", "run", "--tick-seconds", "0.3", "--metrics-port", str(port)),
    )
    process.start()
    yield process, port
    process.stop()


def test_cli_operator_serves_metrics_and_uses_our_prefix(cluster: Cluster, cli_operator) -> None:
    process, port = cli_operator
    cluster.apply(model_deployment("fraud", "1.0.0"))
    cluster.wait_for(lambda: cluster.status("fraud").get("phase") == "Healthy", "healthy", operator=process)

    def scrape() -> str | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        return (
            text
            if 'mlcanary_operator_phase{name="fraud",namespace="default",phase="Healthy"} 1.0' in text
            else None
        )

    text = cluster.wait_for(scrape, "operator metrics", operator=process)
    assert "mlcanary_reconcile_duration_seconds_count" in text
    assert 'mlcanary_operator_canary_weight_percent{name="fraud",namespace="default"} 0.0' in text
    annotations = cluster.mdep("fraud")["metadata"].get("annotations") or {}
    assert not [key for key in annotations if "kopf" in key and not key.startswith("mlcanary.io/")]
    assert "status" in cluster.mdep("fraud")
    assert set(cluster.status("fraud")) <= {
        "observedGeneration",
        "phase",
        "message",
        "stableVersion",
        "canaryWeight",
        "phaseSince",
        "stable",
        "retiring",
        "routerKind",
        "analysis",
        "lastMeasurements",
        "steps",
        "history",
        "rejectedVersions",
        "handledRequests",
        "acceptedSpec",
        "servedWeight",
        "conditions",
    }, "Kopf must not write handler results into status"
