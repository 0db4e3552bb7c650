"""``python -m mlcanary_serving`` as a real process: env fallbacks, unready on any bad bundle."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_row

from .conftest import MODEL, ServerProcess

Start = Callable[..., ServerProcess]


def test_starts_from_cli_flags(start_server: Start, bundles: dict[str, BuildResult]) -> None:
    srv = start_server(
        ["--bundle", str(bundles["hgb"].path), "--expected-sha256", bundles["hgb"].manifest_sha256]
    )
    srv.wait_state("ready")
    r = httpx.post(srv.url + "/predict", json={"features": demo_row(0)})
    assert r.status_code == 200 and r.headers["x-model-version"] == "2.0.0"
    assert httpx.get(srv.url + "/readyz").status_code == 200
    assert "READY: serving model breast-cancer version 2.0.0 (format onnx" in srv.log_text()
    assert "server: uvicorn" not in str(r.headers).lower()


def test_operator_environment(start_server: Start, bundles: dict[str, BuildResult]) -> None:
    assert bundles["hgb"].archive is not None
    srv = start_server(env={
        "MLCANARY_BUNDLE_URI": bundles["hgb"].archive.as_uri(),
        "MLCANARY_BUNDLE_SHA256": bundles["hgb"].manifest_sha256,
        "MLCANARY_MODEL_NAME": "bc-canary",
        "MLCANARY_MODEL_VERSION": "2.0.0",
    })  # fmt: skip
    srv.wait_state("ready")
    r = httpx.post(srv.url + "/v2/models/bc-canary/infer",
                   json={"inputs": [{"name": "input", "shape": [30], "datatype": "FP64", "data": demo_row(0)}]})  # fmt: skip
    assert r.status_code == 200 and r.json()["model_name"] == "bc-canary"
    assert 'model_name="bc-canary",model_version="2.0.0"' in httpx.get(srv.url + "/metrics").text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "bundle not found"),
        ("sha", "does not match the expected"),
        ("version", "does not match MLCANARY_MODEL_VERSION=9.0.0"),
        ("tampered", "model.onnx: sha256"),
        ("http-down", "Connection refused"),
        ("none", "no bundle given"),
    ],
)
def test_bad_bundle_keeps_pod_live_but_unready(
    start_server: Start, bundles: dict[str, BuildResult], tmp_path: Path, case: str, reason: str
) -> None:
    env = {"MLCANARY_BUNDLE_URI": str(bundles["onnx"].path)}
    if case == "missing":
        env["MLCANARY_BUNDLE_URI"] = str(tmp_path / "nope")
    elif case == "sha":
        env["MLCANARY_BUNDLE_SHA256"] = "0" * 64
    elif case == "version":
        env["MLCANARY_MODEL_VERSION"] = "9.0.0"
    elif case == "tampered":
        d = Path(shutil.copytree(bundles["onnx"].path, tmp_path / "b"))
        data = bytearray((d / "model.onnx").read_bytes())
        data[100] ^= 1
        (d / "model.onnx").write_bytes(bytes(data))
        env["MLCANARY_BUNDLE_URI"] = str(d)
    elif case == "http-down":
        env["MLCANARY_BUNDLE_URI"] = "http://127.0.0.1:9/bundle.tar.gz"
    elif case == "none":
        env = {}
    srv = start_server(env=env)
    body = srv.wait_state("failed")
    assert reason in body.get("reason", "") or reason in httpx.get(srv.url + "/readyz").json()["reason"]
    assert httpx.get(srv.url + "/healthz").status_code == 200
    assert httpx.get(srv.url + "/readyz").status_code == 503
    assert httpx.get(srv.url + "/v2/health/ready").status_code == 503
    r = httpx.post(srv.url + "/predict", json={"features": demo_row(0)})
    assert r.status_code == 503 and r.json()["code"] == "not_ready"
    assert httpx.post(srv.url + f"/v2/models/{MODEL}/infer", json={}).status_code == 503
    log = srv.log_text()
    assert "NOT READY: bundle" in log and reason in log
    assert srv.proc.poll() is None  # still running


def test_bad_configuration_exits_with_message(start_server: Start, bundles: dict[str, BuildResult]) -> None:
    srv = start_server(["--bundle", str(bundles["onnx"].path)], env={"MLCANARY_FAULT_ERROR_RATE": "2"})
    assert srv.proc.wait(30) == 2
    assert "configuration error: MLCANARY_FAULT_ERROR_RATE='2'" in srv.log_text()
