"""Notifications with the real operator against the emulator: webhook URLs and the HMAC key in
Secrets (read under the chart's RBAC), a recording receiver on 127.0.0.1 that verifies the signature
as a real one would, and a receiver that accepts connections and never answers. Two identical
ModelDeployments roll back side by side, one of them also notifying the dead receiver (with a 30 s
attempt timeout): both finish together, so delivery never delays a rollback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration

HMAC_KEY = "integration-shared-key"
BAD = {"error-rate": 0.5}


class Recording(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    handler = type("Handler", (Recording,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook/recording-token", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent() -> Iterator[tuple[str, list[socket.socket]]]:
    """Accepts every connection and never writes a byte back."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook/silent-token", accepted
    listener.close()
    for conn in accepted:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def with_notifications(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["spec"]["notifications"] = [
        {
            "provider": "cloudevents",
            "reasons": ["CanaryStarted", "StepStarted", "AnalysisFailed", "RollingBack", "RolledBack"],
            "urlSecret": {"name": "hooks", "key": "silent"},
        },
        {
            "provider": "cloudevents",
            "reasons": ["AnalysisFailed", "RolledBack"],
            "urlSecret": {"name": "hooks", "key": "audit"},
            "hmacSecret": {"name": "hooks", "key": "hmac"},
        },
    ]
    return manifest


def test_a_dead_receiver_does_not_delay_the_rollback(
    cluster: Cluster, tmp_path: Path, recorder: tuple[str, list[Any]], silent: tuple[str, list[Any]]
) -> None:
    audit_url, received = recorder
    silent_url, accepted = silent
    port = free_port()
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path,
        env={
            "MLCANARY_METRICS_SOURCE": f"file:{cluster.metrics_file}",
            "MLCANARY_METRICS_PORT": str(port),
            "MLCANARY_METRICS_HOST": "127.0.0.1",
            "MLCANARY_NOTIFY_TIMEOUT_SECONDS": "30",  # one hanging attempt outlasts the whole rollback
        },
    )
    cluster.apply(secret("hooks", {"silent": silent_url, "audit": audit_url, "hmac": HMAC_KEY}))
    operator.start()
    try:
        for name in ("plain", "notified"):
            manifest = model_deployment(name, "1.0.0")
            cluster.apply(with_notifications(manifest) if name == "notified" else manifest)
        for name in ("plain", "notified"):
            cluster.wait_for(
                lambda n=name: cluster.status(n).get("phase") == "Healthy", f"{name} v1", 40, operator
            )
        cluster.set_metrics({"2.0.0": BAD})
        started = time.monotonic()
        cluster.apply(model_deployment("plain", "2.0.0"))
        cluster.apply(with_notifications(model_deployment("notified", "2.0.0")))
        finished: dict[str, float] = {}

        def both_rolled_back() -> bool:
            for name in ("plain", "notified"):
                if name not in finished and cluster.status(name).get("phase") == "RolledBack":
                    finished[name] = time.monotonic() - started
            return len(finished) == 2

        cluster.wait_for(both_rolled_back, "both rolled back", 40, operator)
        # The same rollout with and without a receiver that hangs every attempt for 30 s: the same
        # time, within a couple of ticks (0.3 s each) and one analysis interval (1 s).
        assert abs(finished["notified"] - finished["plain"]) < 1.5, finished
        assert finished["notified"] < 15, finished
        assert accepted, "the silent receiver was contacted"

        cluster.wait_for(lambda: len(received) >= 2, "AnalysisFailed and RolledBack delivered", 20, operator)
        events = {}
        for headers, body in received:
            expected = "sha256=" + hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Mlcanary-Signature"], expected)
            event = json.loads(body)
            events[event["type"].rsplit(".", 1)[1]] = event
        assert set(events) == {"AnalysisFailed", "RolledBack"}
        [failing] = events["RolledBack"]["data"]["failedMetrics"]
        assert failing["metric"] == "error-rate" and failing["value"] == 0.5
        assert failing["bound"] and "0.05" in failing["bound"]
        assert events["RolledBack"]["data"]["canaryVersion"] == "2.0.0"
        assert events["RolledBack"]["subject"] == "notified"

        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'mlcanary_notifications_total{provider="cloudevents",result="sent"} 2.0' in scraped
        logs = operator.logs()
        assert "silent-token" not in logs and "recording-token" not in logs and HMAC_KEY not in logs
    finally:
        operator.stop()
