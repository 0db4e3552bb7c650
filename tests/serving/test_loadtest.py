"""The load generator (``python -m mlcanary_serving.loadtest``) against a real serving server.

Each test starts the real server on 127.0.0.1 and runs the generator as the Job's pod would (a
process, its result on stdout and in the termination-log file), then checks what it reports against
what the server's own /metrics counted. Rates are kept low (this machine is shared): the figure of
what the generator can reach is bench/loadtest_bench.py's job, not a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlcanary_serving.bundle.build import BuildResult
from mlcanary_serving.loadtest import Histogram, seconds

from .conftest import ServerProcess, free_port

Start = Callable[..., ServerProcess]


def loadtest(url: str, bundle: Path, tmp_path: Path, *extra: str, timeout: float = 60) -> dict[str, Any]:
    log = tmp_path / "termination-log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlcanary_serving.loadtest",
            "--url",
            url,
            "--bundle",
            bundle.as_uri(),
            "--termination-log",
            str(log),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # ONE JSON line
    reported: dict[str, Any] = json.loads(lines[0])
    assert json.loads(log.read_text()) == reported
    return reported


def predictions_counted(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mlcanary_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_reports_the_requested_rate_and_the_server_counts_the_same_requests(
    start_server: Start, bundles: dict[str, BuildResult], tmp_path: Path
) -> None:
    server = start_server(["--bundle", str(bundles["onnx"].path)])
    server.wait_state("ready")
    reported = loadtest(
        server.url, bundles["onnx"].path, tmp_path, "--rps", "40", "--duration", "3s", "--warmup", "1s"
    )
    assert reported["requested_rps"] == 40 and reported["errors"] == 0 and reported["bodies"] == 32
    assert reported["achieved_rps"] >= 0.95 * 40, reported
    assert 0 < reported["latency_p50_seconds"] <= reported["latency_p95_seconds"]
    assert (
        reported["latency_p95_seconds"] <= reported["latency_p99_seconds"] <= reported["latency_max_seconds"]
    )
    # warmup and measured requests all reached the server; nothing else did
    served = predictions_counted(server)
    assert reported["requests"] <= served <= (1 + 3) * 40 + 1, (served, reported)


def test_a_slow_server_shows_in_the_latency_and_a_short_rate_is_reported_not_hidden(
    start_server: Start, bundles: dict[str, BuildResult], tmp_path: Path
) -> None:
    server = start_server(["--bundle", str(bundles["onnx"].path)], env={"MLCANARY_FAULT_LATENCY_MS": "200"})
    server.wait_state("ready")
    # 2 connections and 200 ms per answer can carry at most 10 rps of the 30 asked for
    reported = loadtest(
        server.url,
        bundles["onnx"].path,
        tmp_path,
        "--rps",
        "30",
        "--concurrency",
        "2",
        "--duration",
        "3s",
        "--warmup",
        "0s",
    )
    assert reported["latency_p50_seconds"] >= 0.2, reported
    assert reported["achieved_rps"] <= 11, reported
    assert reported["skipped"] > 0


def test_errors_and_timeouts_count_as_errors(
    start_server: Start, bundles: dict[str, BuildResult], tmp_path: Path
) -> None:
    server = start_server(
        ["--bundle", str(bundles["onnx"].path)],
        env={"MLCANARY_FAULT_ERROR_RATE": "0.5", "MLCANARY_FAULT_SEED": "7"},
    )
    server.wait_state("ready")
    reported = loadtest(server.url, bundles["onnx"].path, tmp_path, "--rps", "40", "--duration", "2s")
    assert 0.3 <= reported["error_rate"] <= 0.7, reported

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: every request is a connection error
    reported = loadtest(
        closed, bundles["onnx"].path, tmp_path, "--rps", "20", "--duration", "1s", "--warmup", "0s"
    )
    assert reported["error_rate"] == 1.0 and reported["requests"] > 0


def test_bodies_from_a_file_mix_rows_and_whole_requests_and_all_reach_the_server(
    start_server: Start, bundles: dict[str, BuildResult], tmp_path: Path
) -> None:
    """What spec.loadTest.bodiesConfigMap mounts: rows are sent as {"features": [row]}, objects as
    they are (here a two-row batch); the server answers them all, so nothing is an error."""
    from mlcanary_serving.bundle.read import verify_bundle

    rows = verify_bundle(bundles["onnx"].path).sample_rows()[:2]
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([rows[0], {"features": rows}]))
    server = start_server(["--bundle", str(bundles["onnx"].path)])
    server.wait_state("ready")
    log = tmp_path / "termination-log"
    argv = ["--url", server.url, "--bodies", str(bodies), "--rps", "30", "--duration", "2s", "--warmup", "0s",
            "--termination-log", str(log)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "mlcanary_serving.loadtest", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    reported = json.loads(done.stdout)
    assert reported["bodies"] == 2 and reported["errors"] == 0 and reported["requests"] > 0
    bodies.write_text(json.dumps([rows[0], "not a row"]))
    refused = subprocess.run(
        [sys.executable, "-m", "mlcanary_serving.loadtest", *argv], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "item 1 is neither a row" in refused.stderr


def test_a_bundle_without_sample_rows_is_refused_with_a_message(tmp_path: Path) -> None:
    from mlcanary_serving.testing import make_demo_bundle

    bundle = make_demo_bundle(tmp_path / "b", sample_rows=0, onnx=False)
    argv = ["--url", "http://127.0.0.1:9", "--bundle", str(bundle.path), "--rps", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "mlcanary_serving.loadtest", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no sample.json" in done.stderr and done.stdout == ""


@pytest.mark.parametrize(("text", "value"), [("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0)])
def test_durations(text: str, value: float) -> None:
    assert seconds(text) == pytest.approx(value)


def test_histogram_quantiles_are_within_one_percent_above() -> None:
    histogram = Histogram()
    for i in range(1, 1001):
        histogram.add(i / 1000)  # 1 ms .. 1 s
    for q in (0.5, 0.95, 0.99):
        assert q <= histogram.quantile(q) <= q * 1.0101
    assert histogram.quantile(1.0) == 1.0
