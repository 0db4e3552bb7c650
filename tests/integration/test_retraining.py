"""spec.retraining with the real operator on the emulator (under the chart's exact RBAC) and a real
Prometheus scraping synthetic serving metrics on 127.0.0.1: a drift storm on the stable version
requests exactly one training Job, status and Events say so, the schedule's CronJob is owned and
repaired, and a finished Job is reported."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlcanary_local.prometheus_proc import PrometheusProcess

from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration


class Exporter:
    """A /metrics endpoint with the serving image's drift gauge, whose value the test sets."""

    def __init__(self) -> None:
        self.psi = 0.0
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    "# TYPE mlcanary_input_drift_psi gauge\n"
                    f'mlcanary_input_drift_psi{{model_name="fraud",model_version="1.0.0",feature="age"}} {exporter.psi}\n'
                    f'mlcanary_input_drift_psi{{model_name="fraud",model_version="1.0.0",feature="amount"}} 0.01\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Exporter]]:
    if shutil.which("prometheus") is None:
        pytest.skip("needs the prometheus binary (make setup installs it; CI has it)")
    exporter = Exporter()
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{exporter.port}"]}]))
    prom = PrometheusProcess(tmp_path / "prom", targets)
    try:
        prom.start()
        yield prom.url, exporter
    finally:
        prom.stop()
        exporter.close()


def _psi(url: str) -> float | None:
    result = httpx.get(f"{url}/api/v1/query", params={"query": "max(mlcanary_input_drift_psi)"}).json()
    values = result["data"]["result"]
    return float(values[0]["value"][1]) if values else None


def _manifest() -> dict[str, Any]:
    manifest = model_deployment("fraud", "1.0.0", metrics=[])
    manifest["spec"]["retraining"] = {
        "schedule": "0 3 * * *",
        "timeZone": "Europe/Paris",
        "jobTemplate": {
            "image": "trainer:1",
            "args": ["--window", "$(WINDOW)"],
            # The emulator simulates Jobs: this one runs 6 s, then completes.
            "annotations": {"emulator.mlcanary.io/job-duration": "6"},
        },
        "triggers": {"inputDrift": {"threshold": 0.25, "for": "2s"}},
        "cooldown": "1h",
    }
    return manifest


def _requested_jobs(cluster: Cluster) -> list[dict[str, Any]]:
    return [
        j
        for j in cluster.emu.objects("jobs", "default")
        if (j["metadata"].get("labels") or {}).get("mlcanary.io/retrain") == "request"
    ]


def _reasons(cluster: Cluster) -> list[str]:
    return [e["reason"] for e in cluster.events() if str(e.get("reason", "")).startswith("Retrain")]


def test_a_drift_storm_requests_one_training_job(
    cluster: Cluster, prometheus: tuple[str, Exporter], tmp_path: Path
) -> None:
    prom_url, exporter = prometheus
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path,
        env={"MLCANARY_PROMETHEUS_URL": prom_url, "MLCANARY_RETRAIN_EVAL_SECONDS": "1"},
    )
    operator.start()
    try:
        cluster.apply(_manifest())
        cluster.wait_for(lambda: cluster.status("fraud").get("phase") == "Healthy", "v1", operator=operator)
        cronjob = cluster.wait_for(
            lambda: cluster.emu.get_object("cronjobs", "fraud-retrain"),
            "the schedule's CronJob",
            operator=operator,
        )
        assert (
            cronjob["spec"]["timeZone"] == "Europe/Paris" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        )
        assert cluster.status("fraud")["retraining"]["nextScheduledRun"]
        time.sleep(3)
        assert _requested_jobs(cluster) == [], "no drift yet: no training"

        exporter.psi = 0.6  # the storm starts: every evaluation from now on is above the threshold
        cluster.wait_for(lambda: (_psi(prom_url) or 0) > 0.5, "Prometheus scraped the drift")
        (job,) = cluster.wait_for(lambda: _requested_jobs(cluster), "the training Job", operator=operator)
        env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (
            env["MODEL"] == "fraud"
            and env["STABLE_VERSION"] == "1.0.0"
            and env["METRIC_INPUT_DRIFT"] == "0.6"
        )
        retraining = cluster.wait_for(
            lambda: (
                cluster.status("fraud").get("retraining", {}).get("lastRun")
                and cluster.status("fraud")["retraining"]
            ),
            "status.retraining",
            operator=operator,
        )
        assert retraining["lastResult"] == "Running" and "inputDrift 0.6 > 0.25" in retraining["lastReason"]
        assert retraining["suppressedUntil"]
        condition = next(
            c for c in cluster.status("fraud")["conditions"] if c["type"] == "RetrainingInProgress"
        )
        assert condition["status"] == "True"

        time.sleep(3)  # more evaluations of the storm, all while the Job runs
        assert len(_requested_jobs(cluster)) == 1
        cluster.wait_for(
            lambda: "RetrainSuppressed" in _reasons(cluster), "RetrainSuppressed", operator=operator
        )

        cluster.wait_for(
            lambda: cluster.status("fraud")["retraining"].get("lastResult") == "Succeeded",
            "Succeeded",
            operator=operator,
        )
        cluster.wait_for(
            lambda: "RetrainSucceeded" in _reasons(cluster), "RetrainSucceeded", operator=operator
        )
        time.sleep(3)  # the storm goes on, inside the cooldown
        assert len(_requested_jobs(cluster)) == 1
        reasons = _reasons(cluster)
        assert reasons.count("RetrainRequested") == 1 and reasons.count("RetrainSuppressed") <= 2

        # The CronJob is owned: a hand edit of its schedule is undone.
        cluster.emu.apply(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "fraud-retrain", "namespace": "default"},
                "spec": {"schedule": "*/1 * * * *"},
            }
        )
        cluster.wait_for(
            lambda: cluster.emu.get_object("cronjobs", "fraud-retrain")["spec"]["schedule"] == "0 3 * * *",
            "the schedule restored",
            operator=operator,
        )
        # Without a schedule the CronJob goes.
        manifest = _manifest()
        manifest["spec"]["retraining"]["schedule"] = None  # the emulator's apply merges: null removes
        cluster.apply(manifest)
        cluster.wait_for(
            lambda: cluster.emu.get_object("cronjobs", "fraud-retrain") is None,
            "CronJob removed",
            operator=operator,
        )
    finally:
        operator.stop()


async def test_one_query_per_kind_however_many_objects(prometheus: tuple[str, Exporter]) -> None:
    """The shared loop against the real Prometheus: 1,000 subscribed objects (one of them the drifting
    model; the others' names make a ~40 kB selector, sent by POST) cost one input-drift query per
    evaluation, and each object gets its own reading."""
    from mlcanary.retraining.monitor import RetrainingMonitor
    from mlcanary.retraining.queries import Subscription

    prom_url, exporter = prometheus
    exporter.psi = 0.7
    await asyncio.to_thread(
        lambda: _wait(lambda: (_psi(prom_url) or 0) > 0.5, "Prometheus scraped the drift")
    )
    woken: list[str] = []
    monitor = RetrainingMonitor(
        prom_url, interval_seconds=1, timeout_seconds=5, namespace_label=None, wake=woken.append
    )
    kinds = frozenset({"inputDrift"})
    monitor.subscribe("drifting", Subscription("default", "fraud", "1.0.0", kinds, "1h"))
    for index in range(999):
        name = f"a-model-with-a-rather-long-name-{index}"
        monitor.subscribe(f"other-{index}", Subscription("default", name, "1.0.0", kinds, "1h"))
    try:
        await monitor.evaluate()
    finally:
        await monitor.stop()
    assert monitor.queries_sent == 1 and len(woken) == 1000
    now = monitor.clock()
    assert monitor.samples("drifting", now)["inputDrift"].value == pytest.approx(0.7)
    assert monitor.samples("other-3", now)["inputDrift"].value is None  # no series: no data


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Receiver:
    """A training pipeline's webhook on 127.0.0.1 that checks the HMAC signature of each request."""

    def __init__(self, key: bytes) -> None:
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
                if hmac.compare_digest(self.headers.get("X-Mlcanary-Signature", ""), expected):
                    receiver.received.append(json.loads(body))
                    self.send_response(202)
                else:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_webhook_action_sends_one_signed_cloudevent(cluster: Cluster, operator: OperatorProcess) -> None:
    """action: Webhook through the real operator: the URL and key come from a Secret read under the
    chart's RBAC; the receiver verifies the signature; the run is recorded as Requested."""
    receiver = Receiver(b"hmac-key-for-training")
    try:
        url = f"http://127.0.0.1:{receiver.port}/train?token=url-secret-token"
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "pipeline", "namespace": "default"},
                "data": {
                    "url": base64.b64encode(url.encode()).decode(),
                    "key": base64.b64encode(b"hmac-key-for-training").decode(),
                },
            }
        )
        manifest = model_deployment("fraud", "1.0.0", metrics=[])
        manifest["metadata"]["annotations"] = {"mlcanary.io/retrain": "first"}
        manifest["spec"]["retraining"] = {
            "action": "Webhook",
            "webhook": {
                "urlSecret": {"name": "pipeline", "key": "url"},
                "hmacSecret": {"name": "pipeline", "key": "key"},
            },
        }
        cluster.apply(manifest)
        retraining = cluster.wait_for(
            lambda: (
                (cluster.status("fraud").get("retraining") or {}).get("lastResult") == "Requested"
                and cluster.status("fraud")["retraining"]
            ),
            "the webhook delivered",
            operator=operator,
        )
        (event,) = receiver.received
        assert receiver.bad_signatures == 0
        assert event["type"] == "io.mlcanary.modeldeployment.RetrainRequested"
        assert event["id"] == retraining["lastRun"] and event["data"]["stableVersion"] == "1.0.0"
        assert "mlcanary.io/retrain annotation" in event["data"]["reason"]
        assert cluster.emu.objects("jobs", "default") == []
        assert "url-secret-token" not in operator.logs() and "hmac-key" not in operator.logs()
        assert "url-secret-token" not in json.dumps(cluster.status("fraud"))
    finally:
        receiver.close()
