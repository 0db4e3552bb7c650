"""``mlcanary report``: the per-step table from status, offline (-f) and through a kubeconfig."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcanary.analysis import report
from mlcanary.models import (
    Measurement,
    ModelDeploymentStatus,
    ModelRef,
    Phase,
    RevisionState,
    RevisionTemplate,
    RolloutOutcome,
    RolloutRecord,
    Serving,
    StepReport,
    Verdict,
)

T = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def measurement(
    metric: str, verdict: Verdict, value: float | None, stable: float | None, **kw: Any
) -> Measurement:
    return Measurement(metric=metric, verdict=verdict, value=value, stable_value=stable, time=T, **kw)


def revision(version: str) -> RevisionState:
    template = RevisionTemplate(
        model=ModelRef(name="fraud", version=version, uri="file:///m"), serving=Serving()
    )
    return RevisionState(revision=f"fraud-{version}", template=template)


ROLLED_BACK = RolloutRecord(
    version="2.0.0",
    from_version="1.0.0",
    outcome=RolloutOutcome.ROLLED_BACK,
    reason="analysis failed: predictionDrift=3.2 (want <= 0.2)",
    started_at=T,
    finished_at=T + timedelta(minutes=7),
    steps=[
        StepReport(
            step=1,
            weight=5,
            verdict=Verdict.INCONCLUSIVE,
            rounds=2,
            measurements=[
                measurement(
                    "errorRate",
                    Verdict.INCONCLUSIVE,
                    0.2,
                    0.01,
                    sample_size=6,
                    threshold="<= stable (95% z-test)",
                    message="canary has 6 requests in the window, fewer than the default minimum 100",
                ),
            ],
        ),
        StepReport(
            step=2,
            weight=20,
            verdict=Verdict.FAILED,
            rounds=1,
            measurements=[
                measurement(
                    "errorRate", Verdict.SUCCESSFUL, 0.0101, 0.01, sample_size=2400, threshold="<= 0.05"
                ),
                measurement(
                    "predictionDrift",
                    Verdict.FAILED,
                    3.2,
                    None,
                    sample_size=2400,
                    threshold="<= 0.2",
                    message="score histogram PSI canary vs stable 3.2 is above max 0.2",
                ),
                measurement("latency", Verdict.FAILED, 0.9, 0.2, dry_run=True, threshold="<= 0.5"),
            ],
        ),
    ],
)
OLDER = RolloutRecord(
    version="1.0.0",
    from_version="0.9.0",
    outcome=RolloutOutcome.PROMOTED,
    reason="every step passed",
    finished_at=T - timedelta(days=1),
    steps=[],
)


def status_obj(**kw: Any) -> dict[str, Any]:
    status = ModelDeploymentStatus(
        phase=Phase.HEALTHY, stable_version="1.0.0", history=[OLDER, ROLLED_BACK], **kw
    )
    return {
        "apiVersion": "mlcanary.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "risk"},
        "status": status.to_wire(),
    }


def test_table_of_the_last_rollout() -> None:
    text = report.render_text(status_obj(), title="ModelDeployment risk/fraud")
    lines = text.splitlines()
    assert lines[0] == "ModelDeployment risk/fraud: phase Healthy, stable 1.0.0"
    assert "Rollout 2.0.0 (from 1.0.0): RolledBack at 2025-01-01T12:07:00Z" in text
    assert "  why: analysis failed: predictionDrift=3.2 (want <= 0.2)" in text
    header = next(line for line in lines if line.strip().startswith("STEP"))
    assert header.split() == [
        "STEP", "WEIGHT", "ROUNDS", "METRIC", "STABLE", "1.0.0", "CANARY", "2.0.0",
        "THRESHOLD", "SAMPLE", "VERDICT", "MESSAGE",
    ]  # fmt: skip
    drift = next(line for line in lines if line.lstrip().startswith("predictionDrift"))
    assert drift.split()[:4] == ["predictionDrift", "-", "3.2", "<="]
    assert "Failed" in drift and "2400" in drift
    step2 = next(line for line in lines if line.strip().startswith("2 "))
    assert step2.split()[:6] == ["2", "20%", "1", "errorRate", "0.01", "0.0101"]
    assert "Failed (dry run)" in next(line for line in lines if "latency" in line)
    # long messages are cut in the narrow table
    assert "fewer than the defau..." in text and "default minimum 100" not in text
    assert "1.0.0 (from 0.9.0)" not in text  # only the newest finished rollout without --all


def test_all_rollouts_wide_and_json() -> None:
    text = report.render_text(status_obj(), all_rollouts=True, wide=True)
    assert "Rollout 1.0.0 (from 0.9.0): Promoted" in text and "(no analysis steps recorded)" in text
    assert "fewer than the default minimum 100" in text
    data = json.loads(report.render_json(status_obj(), all_rollouts=True))
    assert [r["outcome"] for r in data] == ["RolledBack", "Promoted"]
    assert data[0]["rows"][1]["canary_value"] == 0.0101


def test_rollout_in_flight_comes_first() -> None:
    obj = status_obj(
        canary=revision("3.0.0"),
        stable=revision("1.0.0"),
        canary_version="3.0.0",
        canary_weight=20,
        steps=[StepReport(step=1, weight=5, verdict=Verdict.SUCCESSFUL, rounds=1)],
    )
    obj["status"]["phase"] = "Progressing"
    reports = report.build_report(obj)
    assert [(r.version, r.outcome) for r in reports] == [
        ("3.0.0", "InProgress (Progressing)"),
        ("2.0.0", "RolledBack"),
    ]
    text = report.render_text(obj)
    assert "canary 3.0.0 at 20%" in text and "(no analysis)" in text


def test_no_rollout_yet() -> None:
    assert "No rollout recorded yet." in report.render_text({"status": {"phase": "Healthy"}})


def test_main_reads_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fraud.yaml"
    path.write_text(yaml.safe_dump(status_obj()))
    assert report.main(["-f", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ModelDeployment risk/fraud: phase Healthy") and "predictionDrift" in out
    assert report.main([]) == 2
    assert report.main(["-f", str(tmp_path / "missing.yaml")]) == 1


@pytest.fixture
def fake_apiserver(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A tiny HTTP server answering GET for one ModelDeployment, and a kubeconfig pointing at it."""
    paths: list[str] = []
    body = json.dumps(status_obj()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            found = self.path == "/apis/mlcanary.io/v1alpha1/namespaces/risk/modeldeployments/fraud"
            payload = (
                body if found else b'{"kind":"Status","status":"Failure","reason":"NotFound","code":404}'
            )
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "risk"}}],
                "current-context": "x",
            }
        )
    )
    try:
        yield kubeconfig, paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_main_reads_the_cluster(
    fake_apiserver: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig, paths = fake_apiserver
    assert report.main(["fraud", "--kubeconfig", str(kubeconfig)]) == 0  # namespace from the context
    assert "Rollout 2.0.0 (from 1.0.0): RolledBack" in capsys.readouterr().out
    assert report.main(["nope", "-n", "risk", "--kubeconfig", str(kubeconfig)]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert paths[0] == "/apis/mlcanary.io/v1alpha1/namespaces/risk/modeldeployments/fraud"


def test_a_rollout_stopped_by_its_load_test_shows_the_gate_and_its_measured_values() -> None:
    from mlcanary.models import LoadTestPhase, LoadTestStatus

    test = LoadTestStatus(
        revision="fraud-v3-0-0-abcdef12",
        phase=LoadTestPhase.FAILED,
        job_name="fraud-v3-0-0-abcdef12-lt-123abc",
        started_at=T,
        finished_at=T + timedelta(seconds=70),
        requested_rps=50,
        achieved_rps=21.3,
        requests=1278,
        error_rate=0.0,
        latency_p95_seconds=0.412,
        latency_p99_seconds=0.5,
        message="p95 latency 412.0ms above maxLatencyP95 100ms at 21.3 rps",
    )
    record = RolloutRecord(
        version="3.0.0",
        from_version="2.0.0",
        outcome=RolloutOutcome.ROLLED_BACK,
        reason=f"load test failed: {test.message}",
        finished_at=T + timedelta(seconds=71),
        load_test=test,
    )
    status = ModelDeploymentStatus(phase=Phase.ROLLED_BACK, stable_version="2.0.0", history=[record])
    text = report.render_text(status.to_wire())
    assert (
        "  load test (weight 0, Job fraud-v3-0-0-abcdef12-lt-123abc): Failed (21.3 of 50 rps, p95 412.0ms, "
        "p99 500.0ms, error rate 0): p95 latency 412.0ms above maxLatencyP95 100ms at 21.3 rps"
    ) in text
    assert "(no analysis steps recorded)" in text
    assert json.loads(report.render_json(status.to_wire()))[0]["load_test"]["phase"] == "Failed"
