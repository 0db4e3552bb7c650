"""Live: real serving processes scraped by a real Prometheus under load, judged by the analysis.

Three ``python -m mlcanary_serving`` processes serve the demo model: stable 1.0.0, a good canary
2.0.0 (the same training) and a degenerate canary 3.0.0 (always the majority class, HTTP 200 every
time). Prometheus scrapes them every second while every revision gets the same batches of real rows;
then one analysis round per canary must pass the good one and fail the degenerate one on
predictionDrift alone, with errorRate, latency and input drift all healthy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mlcanary.analysis.prometheus import PrometheusProvider
from mlcanary.analysis.provider import AnalysisContext, run_round
from mlcanary.models import Analysis, Metric, Verdict

from .promkit import free_port, require_prometheus, run_prometheus

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"
LOAD_SECONDS = 15.0
WINDOW = "25s"


def _serving_available() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("mlcanary_serving.__main__", "mlcanary_serving.testing", "fastapi", "uvicorn", "sklearn")
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not _serving_available():
        pytest.skip(
            "mlcanary_serving (server and testing helpers) is not importable: install the serving extra"
        )
    require_prometheus()
    from mlcanary_serving.testing import demo_data, make_demo_bundle

    work = tmp_path_factory.mktemp("live-analysis")
    versions = {"1.0.0": "good", "2.0.0": "good", "3.0.0": "degenerate"}
    for version, kind in versions.items():
        make_demo_bundle(work / version, version=version, kind=kind, name=MODEL)

    processes: list[subprocess.Popen[bytes]] = []
    ports = {version: free_port() for version in versions}
    env = {**os.environ, "MLCANARY_LOG_LEVEL": "warning"}
    try:
        for version, port in ports.items():
            argv = [sys.executable, "-m", "mlcanary_serving", "--bundle", str(work / version)]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            with (work / f"serving-{version}.log").open("wb") as log:
                processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
        deadline = time.monotonic() + 120
        for version, port in ports.items():
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    logs = "\n".join(p.read_text()[-2000:] for p in work.glob("serving-*.log"))
                    raise RuntimeError(f"serving {version} did not become ready:\n{logs}")
                time.sleep(0.2)

        targets = ", ".join(f"'127.0.0.1:{port}'" for port in ports.values())
        config = (
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: serving\n    static_configs:\n      - targets: [{targets}]\n"
        )
        with run_prometheus(work, work / "data", config=config) as prom:
            _wait_until_scraped(prom.url, len(ports))
            X, _, _ = demo_data()
            asyncio.run(_load(ports, X.tolist()))
            time.sleep(2.5)  # the last scrape after the load
            yield {"url": prom.url, "work": work}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_until_scraped(url: str, targets: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            result = httpx.get(f"{url}/api/v1/query", params={"query": "sum(up)"}, timeout=2).json()
            if result["data"]["result"] and float(result["data"]["result"][0]["value"][1]) >= targets:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError("Prometheus did not scrape every serving process within 60 s")


async def _load(ports: dict[str, int], rows: list[list[float]]) -> None:
    """The same sequence of 10-row batches to every revision for LOAD_SECONDS."""

    async def drive(port: int) -> None:
        rng = random.Random(42)
        deadline = time.monotonic() + LOAD_SECONDS
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while time.monotonic() < deadline:
                batch = [rows[rng.randrange(len(rows))] for _ in range(10)]
                response = await client.post("/predict", json={"instances": batch})
                assert response.status_code == 200, response.text

    await asyncio.gather(*(drive(port) for port in ports.values() for _ in range(2)))


ANALYSIS = Analysis(
    interval=WINDOW,
    metrics=[
        Metric(name="errors", builtin="errorRate", compare_to="stable", max=0.01, min_requests=20),
        Metric(name="latency", builtin="latencyP99", max=2.0, min_requests=20),
        Metric(name="inputs", builtin="inputDrift", max=0.25),
        Metric(name="predictions", builtin="predictionDrift", max=0.2),
    ],
)


def _round(url: str, canary: str) -> dict[str, Any]:
    context = AnalysisContext(
        name="demo",
        namespace="default",
        model_name=MODEL,
        version=canary,
        stable_version="1.0.0",
        interval=WINDOW,
        canary_weight=50,
    )
    now = datetime.now(UTC)
    result = asyncio.run(run_round(PrometheusProvider(url, timeout_seconds=10), ANALYSIS, context, now))
    return {"verdict": result.verdict, **{m.metric: m for m in result.measurements}}


def test_good_canary_passes_every_check(live: dict[str, Any]) -> None:
    result = _round(live["url"], "2.0.0")
    details = {k: (v.verdict, v.value, v.sample_size, v.message) for k, v in result.items() if k != "verdict"}
    assert result["verdict"] == Verdict.SUCCESSFUL, details
    assert result["predictions"].value is not None and result["predictions"].value < 0.05
    assert (result["predictions"].sample_size or 0) >= 200


def test_degenerate_canary_fails_on_prediction_drift_alone(live: dict[str, Any]) -> None:
    result = _round(live["url"], "3.0.0")
    details = {k: (v.verdict, v.value, v.sample_size, v.message) for k, v in result.items() if k != "verdict"}
    assert result["verdict"] == Verdict.FAILED, details
    assert result["predictions"].verdict == Verdict.FAILED and (result["predictions"].value or 0) > 1
    for healthy in ("errors", "latency", "inputs"):
        assert result[healthy].verdict == Verdict.SUCCESSFUL, details


def test_the_live_series_carry_the_labels_the_queries_select(live: dict[str, Any]) -> None:
    response = httpx.get(
        f"{live['url']}/api/v1/series", params={"match[]": f'{{model_name="{MODEL}"}}'}, timeout=10
    ).json()
    names = {s["__name__"] for s in response["data"]}
    for needed in (
        "mlcanary_requests_total",
        "mlcanary_request_duration_seconds_bucket",
        "mlcanary_prediction_score_bucket",
        "mlcanary_predictions_total",
        "mlcanary_input_drift_psi",
        "mlcanary_input_drift_window_rows",
    ):
        assert needed in names, sorted(names)
