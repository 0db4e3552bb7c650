"""``mlcanary analyze``: one round of a manifest's metrics against a real Prometheus."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcanary.analysis.dryrun import run_analyze

from .promkit import RunningPrometheus, free_port
from .scenarios import T_FULL

pytestmark = pytest.mark.integration

CUSTOM = (
    'sum(increase(mlcanary_requests_total{model_name="{{name}}",model_version="{{version}}",outcome="server_error"}'
    "[{{interval}}])) / sum(increase(mlcanary_requests_total{model_name={{name}},model_version={{version}}}"
    "[{{interval}}]))"
)


def manifest(tmp_path: Path, model: str, *, stable: str | None = "v1", **spec: Any) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "mlcanary.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": model, "namespace": "default"},
        "spec": {
            "model": {"name": model, "version": "2.0.0", "uri": "file:///models/x"},
            "analysis": {
                "interval": "5m",
                "metrics": [
                    {"name": "errors", "builtin": "errorRate", "max": 0.05, "compareTo": "stable"},
                    {"name": "predictions", "builtin": "predictionDrift", "max": 0.2},
                    {"name": "custom-errors", "query": CUSTOM, "max": 0.05},
                ],
            },
            **spec,
        },
    }
    if stable:
        doc["status"] = {"stableVersion": stable}
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Namespace"}, doc]))
    return path


def analyze(*argv: str) -> tuple[int, str]:
    """``mlcanary analyze`` on the scenario history, whose canary version label is ``v2`` (a spec's
    version must be semver) and whose series carry no namespace label (custom queries unscoped)."""
    args = list(argv)
    if "--canary-version" not in args:
        args += ["--canary-version", "v2"]
    args += ["--custom-queries", "unscoped"]
    out = io.StringIO()
    return run_analyze(args, out=out), out.getvalue()


def test_degenerate_canary_fails_and_every_query_is_shown(
    scenario_prometheus: RunningPrometheus, tmp_path: Path
) -> None:
    code, text = analyze(
        "-f",
        str(manifest(tmp_path, "degenerate")),
        "--prometheus",
        scenario_prometheus.url,
        "--at",
        str(T_FULL),
    )
    assert code == 3, text
    assert "model degenerate: canary v2, stable v1" in text
    assert (
        "sum by (le) (increase(mlcanary_prediction_score_bucket"
        '{model_name="degenerate",model_version="v1"}[300s]))' in text
    )
    assert "== predictions (builtin predictionDrift)" in text
    assert "verdict Failed: score histogram PSI" in text
    assert "verdict Successful: error rate 0.01 within bounds" in text
    assert 'model_version="v2",outcome="server_error"}[300s])) / sum(' in text  # the custom query, rendered
    assert "Round verdict: Failed" in text


def test_good_canary_passes_and_json_output(scenario_prometheus: RunningPrometheus, tmp_path: Path) -> None:
    path = str(manifest(tmp_path, "good"))
    code, text = analyze("-f", path, "--prometheus", scenario_prometheus.url, "--at", "2025-01-01T01:30:00Z")
    assert code == 0, text
    code, text = analyze(
        "-f",
        path,
        "--prometheus",
        scenario_prometheus.url,
        "--at",
        str(T_FULL),
        "-o",
        "json",
        "--metric",
        "errors",
    )
    data = json.loads(text)
    assert code == 0 and data["verdict"] == "Successful"
    [only] = data["metrics"]
    assert only["measurement"]["sampleSize"] == 600
    assert [q["role"] for q in only["queries"]] == ["canary", "stable"]


def test_canary_version_option_and_inconclusive_exit_code(
    scenario_prometheus: RunningPrometheus, tmp_path: Path
) -> None:
    path = str(manifest(tmp_path, "good"))
    code, text = analyze(
        "-f", path, "--prometheus", scenario_prometheus.url, "--at", str(T_FULL), "--canary-version", "v9"
    )
    assert code == 4, text
    assert "canary v9" in text and "no canary requests" in text


def test_prometheus_down_exit_code(tmp_path: Path) -> None:
    code, text = analyze(
        "-f", str(manifest(tmp_path, "good")), "--prometheus", f"http://127.0.0.1:{free_port()}"
    )
    assert code == 5 and "cannot connect" in text


def test_invalid_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:9"
    assert analyze("-f", str(manifest(tmp_path, "good", stable=None)), "--prometheus", url)[0] == 1
    assert "give --stable-version" in capsys.readouterr().err
    bad = manifest(tmp_path, "bad", rollout={"steps": [50, 20]})
    assert analyze("-f", str(bad), "--prometheus", url)[0] == 1
    assert "strictly increasing" in capsys.readouterr().err
    assert analyze("-f", str(tmp_path / "nope.yaml"), "--prometheus", url)[0] == 1
    assert analyze("-f", str(manifest(tmp_path, "good")), "--prometheus", url, "--metric", "zzz")[0] == 1
    assert "no metric named zzz" in capsys.readouterr().err
