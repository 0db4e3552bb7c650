"""Issue 15, item 2: several worker processes on one port, one scrape with the pod's totals.

Each request below opens its own connection, so the kernel (SO_REUSEPORT) spreads them over the
workers; the chance that 40 land on one worker of two is 2**-39.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from mlcanary_serving import metric_names as mn
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_row

from .conftest import MODEL, ServerProcess

N = 40


def value(text: str, pattern: str) -> float:
    m = re.search(pattern + r" (\S+)$", text, re.M)
    assert m, pattern
    return float(m.group(1))


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one series of ``name`` with these labels, in any label order."""
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_two_workers_count_as_one_pod(
    start_server: Callable[..., ServerProcess], bundles: dict[str, BuildResult], tmp_path: object
) -> None:
    srv = start_server(
        ["--bundle", str(bundles["onnx"].path)],
        env={
            "MLCANARY_WORKERS": "2",
            "MLCANARY_DRIFT_MIN_ROWS": "10",
            "PROMETHEUS_MULTIPROC_DIR": f"{tmp_path}/mp",
        },
    )
    for _ in range(20):  # every new connection may reach another worker: both must be ready
        srv.wait_state("ready")
    ids = []
    for i in range(N):
        r = httpx.post(srv.url + "/predict", json={"features": demo_row(i)})
        assert r.status_code == 200, r.text
        ids.append((r.headers["x-request-id"], r.json()["prediction"]))
    text = httpx.get(srv.url + "/metrics").text
    labels = f'model_name="{MODEL}",model_version="1.0.0"'
    assert value(text, rf"{mn.REQUESTS_TOTAL}\{{{labels},outcome=\"success\"\}}") == N
    assert value(text, rf"{mn.REQUEST_DURATION_SECONDS}_count\{{{labels}\}}") == N
    assert value(text, rf"{mn.INPUT_DRIFT_WINDOW_ROWS}\{{{labels}\}}") == N  # both workers' windows
    assert len(re.findall(rf"^{mn.MODEL_INFO}\{{", text, re.M)) == 1
    assert mn.INPUT_DRIFT_PSI_MAX in text and mn.PREDICTION_DRIFT_PSI in text
    # feedback by request id reaches the worker that served it, whichever worker receives it
    for rid, label in ids:
        r = httpx.post(srv.url + "/feedback", json={"request_id": rid, "label": label})
        assert r.status_code == 200 and r.json()["correct"] is True, r.text
        assert r.headers["x-request-id"] == r.json()["request_id"]
    r = httpx.post(srv.url + "/feedback", json={"request_id": ids[0][0], "label": ids[0][1]})
    assert r.status_code == 404 and r.json()["code"] == "unknown_request_id"  # once only, pod-wide
    text = httpx.get(srv.url + "/metrics").text
    assert sample(text, mn.FEEDBACK_TOTAL, model_name=MODEL, correct="true") == N
    log = srv.log_text()
    assert log.count("READY: serving model") == 2 and "Traceback" not in log
