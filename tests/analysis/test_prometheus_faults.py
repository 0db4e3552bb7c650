"""Prometheus misbehaving, and credentials: down, hung, 5xx, TLS, bearer token and basic auth.

A small local HTTP proxy in front of the real Prometheus records the headers the provider sends, or
answers with an error that echoes them (to show messages are scrubbed of secrets).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mlcanary.analysis.prometheus import PrometheusAuth, PrometheusProvider, measure_all, provider_for_spec
from mlcanary.analysis.promql import QueryLimits
from mlcanary.analysis.provider import AnalysisContext
from mlcanary.models import BuiltinMetric, Metric, ModelDeploymentSpec, Verdict
from mlcanary.settings import Settings

from .promkit import RunningPrometheus, free_port
from .scenarios import T_FULL, WINDOW

pytestmark = pytest.mark.integration

WHEN = datetime.fromtimestamp(T_FULL, UTC)
CONTEXT = AnalysisContext(
    name="good",
    namespace="default",
    model_name="good",
    version="v2",
    stable_version="v1",
    interval=WINDOW,
    canary_weight=5,
)
ERROR_RATE = Metric(name="errors", builtin=BuiltinMetric.ERROR_RATE, max=0.05, compare_to="stable")
TOKEN = "s3cr3t-t0ken-value"
PASSWORD = "hunter2-password"


def measure(provider: PrometheusProvider, metric: Metric = ERROR_RATE) -> tuple[Verdict, str, float]:
    started = time.monotonic()
    out = asyncio.run(provider.measure(metric, CONTEXT, WHEN))
    return out.verdict, out.message or "", time.monotonic() - started


# ------------------------------------------------------------------------------- local servers


class Proxy:
    """Forwards GETs to ``upstream`` and records request headers; or answers ``status`` itself."""

    def __init__(
        self, upstream: str | None, status: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.upstream = upstream
        self.status = status
        self.headers: list[dict[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.headers.append(dict(self.headers.items()))
                if proxy.status is not None or proxy.upstream is None:
                    body = f'{{"status":"error","error":"denied for {self.headers.get("Authorization")}"}}'.encode()
                    self.send_response(proxy.status or 500)
                else:
                    upstream = httpx.get(proxy.upstream + self.path, timeout=10)
                    body = upstream.content
                    self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def hung_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


# ---------------------------------------------------------------------------------- failures


def test_prometheus_down_is_an_error() -> None:
    verdict, message, elapsed = measure(
        PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
    )
    assert verdict == Verdict.ERROR
    assert "cannot connect" in message and "Connection refused" in message
    assert elapsed < 5


def test_hung_prometheus_errors_within_the_timeout_without_stalling_others(
    scenario_prometheus: RunningPrometheus,
) -> None:
    many = [
        Metric(name=f"m{i}", builtin=BuiltinMetric.PREDICTION_DRIFT, max=0.2) for i in range(6)
    ]  # 24 queries

    async def both(hung_url: str) -> tuple[list[tuple[Verdict, float]], tuple[Verdict, float]]:
        hung = PrometheusProvider(hung_url, timeout_seconds=4)
        healthy = PrometheusProvider(scenario_prometheus.url, at=WHEN, timeout_seconds=4)

        async def timed(provider: PrometheusProvider, metric: Metric) -> tuple[Verdict, float]:
            started = time.monotonic()
            out = await provider.measure(metric, CONTEXT, WHEN)
            return out.verdict, time.monotonic() - started

        hung_task = asyncio.gather(*(timed(hung, x) for x in many))
        await asyncio.sleep(0.1)  # the hung Prometheus's pool is saturated now
        healthy_result = await timed(healthy, ERROR_RATE)
        assert not hung_task.done()  # the healthy answer did not wait for the hung Prometheus
        return await hung_task, healthy_result

    with hung_server() as url:
        hung_results, (healthy_verdict, healthy_elapsed) = asyncio.run(both(url))
    # the healthy Prometheus answered while every thread for the hung one was blocked
    assert healthy_verdict == Verdict.SUCCESSFUL and healthy_elapsed < 2.5
    assert all(v == Verdict.ERROR for v, _ in hung_results)
    assert all(elapsed < 4 + 2 for _, elapsed in hung_results)
    with hung_server() as url:
        verdict, message, elapsed = measure(PrometheusProvider(url, timeout_seconds=1))
    assert verdict == Verdict.ERROR and "timed out after 1s" in message and elapsed < 3.5


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (
            502,
            "kept answering with a proxy error",
        ),  # retried once: a proxy in front of a restarting Prometheus
        (503, "HTTP Status Code 503"),  # never retried: Prometheus answers 503 when it cancelled a query
        (500, "HTTP Status Code 500"),
    ],
)
def test_server_errors_are_errors(status: int, text: str) -> None:
    with Proxy(None, status=status) as proxy:
        verdict, message, _ = measure(PrometheusProvider(proxy.url, timeout_seconds=2))
    assert verdict == Verdict.ERROR and text in message


# ------------------------------------------------------------------------------- credentials


def test_bearer_token_is_sent_and_never_logged(
    scenario_prometheus: RunningPrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Proxy(scenario_prometheus.url) as proxy:
        provider = PrometheusProvider(proxy.url, auth=PrometheusAuth(bearer_token=TOKEN), at=WHEN)
        out = asyncio.run(provider.measure(ERROR_RATE, CONTEXT, WHEN))
    assert out.verdict == Verdict.SUCCESSFUL
    assert proxy.headers and all(h.get("Authorization") == f"Bearer {TOKEN}" for h in proxy.headers)
    assert TOKEN not in caplog.text and TOKEN not in repr(provider) and TOKEN not in out.model_dump_json()


def test_basic_auth_is_sent(scenario_prometheus: RunningPrometheus) -> None:
    with Proxy(scenario_prometheus.url) as proxy:
        provider = PrometheusProvider(
            proxy.url, auth=PrometheusAuth(username="ops", password=PASSWORD), at=WHEN
        )
        verdict, _, _ = measure(provider)
    assert verdict == Verdict.SUCCESSFUL
    expected = "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    assert all(h.get("Authorization") == expected for h in proxy.headers)


def test_secrets_echoed_by_an_error_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Proxy(None, status=401) as proxy:
        out = asyncio.run(
            PrometheusProvider(proxy.url, auth=PrometheusAuth(bearer_token=TOKEN)).measure(
                ERROR_RATE, CONTEXT, WHEN
            )
        )
    assert out.verdict == Verdict.ERROR
    assert "401" in (out.message or "") and "***" in (out.message or "")
    assert TOKEN not in out.model_dump_json() and TOKEN not in caplog.text


class FakeKube:
    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets
        self.reads: list[tuple[str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        self.reads.append((namespace, name))
        if name not in self.secrets:
            raise LookupError(f"secret {namespace}/{name} not found")
        return self.secrets[name]


def spec_with(prometheus: dict[str, object]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "good", "version": "2.0.0", "uri": "file:///m"},
            "analysis": {"prometheus": prometheus, "metrics": [ERROR_RATE.to_wire()]},
        }
    )


def test_provider_for_spec_reads_the_secret_in_the_namespace(scenario_prometheus: RunningPrometheus) -> None:
    with Proxy(scenario_prometheus.url) as proxy:
        spec = spec_with(
            {"address": proxy.url, "bearerTokenSecret": {"name": "prom", "key": "token"}, "timeout": "3s"}
        )
        kube = FakeKube({"prom": {"token": TOKEN + "\n"}})
        provider = provider_for_spec(spec, "team-a", Settings(), kube)
        provider.at = WHEN
        assert provider.timeout_seconds == 3 and provider.verify_tls
        metrics = [
            ERROR_RATE,
            *(Metric(name=f"p{i}", builtin=BuiltinMetric.PREDICTION_DRIFT, max=0.2) for i in range(3)),
        ]
        results = asyncio.run(measure_all(provider, metrics, CONTEXT, WHEN))
    assert all(r.measurement.verdict == Verdict.SUCCESSFUL for r in results), results
    assert kube.reads == [("team-a", "prom")]  # once per provider, although the metrics ran concurrently
    assert proxy.headers[0]["Authorization"] == f"Bearer {TOKEN}"


def test_provider_for_spec_missing_secret_or_key_is_an_error() -> None:
    spec = spec_with({"address": "http://127.0.0.1:1", "basicAuthSecret": "basic"})
    verdict, message, _ = measure(provider_for_spec(spec, "team-a", Settings(), FakeKube({})))
    assert verdict == Verdict.ERROR and "secret team-a/basic not found" in message
    kube = FakeKube({"basic": {"username": "ops", "pass": PASSWORD}})
    verdict, message, _ = measure(provider_for_spec(spec, "team-a", Settings(), kube))
    assert verdict == Verdict.ERROR and "no key password" in message and PASSWORD not in message


def test_provider_for_spec_defaults_to_the_operator_settings() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "m", "version": "1.0.0", "uri": "file:///m"}}
    )
    settings = Settings(
        prometheus_url="http://prom.example:9090",
        query_timeout_seconds=4,
        custom_queries="disabled",
        query_max_range_seconds=600,
        query_min_subquery_step_seconds=30,
    )
    provider = provider_for_spec(spec, "ns", settings, FakeKube({}), namespace_label="namespace")
    assert (provider.address, provider.timeout_seconds, provider.namespace_label) == (
        "http://prom.example:9090",
        4,
        "namespace",
    )
    assert provider.custom_queries == "disabled"
    assert provider.limits == QueryLimits(timedelta(minutes=10), timedelta(seconds=30))


# ------------------------------------------------------------------------------------------ TLS


@pytest.fixture
def tls_proxy(scenario_prometheus: RunningPrometheus, tmp_path: Path) -> Iterator[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with Proxy(scenario_prometheus.url, tls=context) as proxy:
        yield f"https://127.0.0.1:{proxy.port}"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default(tls_proxy: str) -> None:
    verdict, message, _ = measure(PrometheusProvider(tls_proxy, at=WHEN, timeout_seconds=3))
    assert verdict == Verdict.ERROR and "TLS error" in message
    verdict, message, _ = measure(PrometheusProvider(tls_proxy, at=WHEN, timeout_seconds=3, verify_tls=False))
    assert verdict == Verdict.SUCCESSFUL, message
