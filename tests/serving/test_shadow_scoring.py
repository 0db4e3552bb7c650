"""The shadow phase's dual scoring, on a real server process: with MLCANARY_REFERENCE_BUNDLE_URI the
pod scores every prediction with the reference (stable) model too, serves only its own answer, and
exports how often the two agree (mlcanary_shadow_*)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mlcanary_serving import metric_names as mn
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_row

from .conftest import ServerProcess

Start = Callable[..., ServerProcess]
ROWS = 60


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def _serve(start_server: Start, served: BuildResult, reference: BuildResult, version: str) -> ServerProcess:
    srv = start_server(
        env={
            "MLCANARY_BUNDLE_URI": str(served.path),
            "MLCANARY_REFERENCE_BUNDLE_URI": str(reference.path),
            "MLCANARY_REFERENCE_VERSION": version,
        }
    )
    srv.wait_state("ready")
    return srv


def _predict_rows(srv: ServerProcess) -> list[object]:
    labels = []
    for i in range(ROWS // 2):
        r = httpx.post(srv.url + "/predict", json={"features": demo_row(i)})
        assert r.status_code == 200, r.text
        labels.append(r.json()["prediction"])
    body = {"instances": [demo_row(i) for i in range(ROWS // 2, ROWS)]}
    r = httpx.post(srv.url + "/predict", json=body)
    assert r.status_code == 200, r.text
    return labels


def test_a_degenerate_canary_disagrees_with_the_stable_and_users_get_only_its_own_answer(
    start_server: Start, bundles: dict[str, BuildResult]
) -> None:
    srv = _serve(start_server, bundles["degenerate"], bundles["onnx"], "1.0.0")
    labels = _predict_rows(srv)
    assert len(set(map(str, labels))) == 1  # the degenerate model's constant answer is what is served
    samples = _samples(srv.url)
    where = {mn.LABEL_MODEL_VERSION: "3.0.0", mn.LABEL_REFERENCE_VERSION: "1.0.0"}
    compared = _value(samples, mn.SHADOW_COMPARED_TOTAL, **where)
    agreed = _value(samples, mn.SHADOW_AGREED_TOTAL, **where)
    assert compared == ROWS
    assert agreed / compared < 0.8  # the stable model predicts both classes on these rows
    assert _value(samples, mn.SHADOW_SCORE_DIFFERENCE + "_count", **where) == ROWS
    assert "REFERENCE: scoring every request with" in srv.log_text()


def test_the_same_model_as_reference_agrees_fully_with_zero_score_difference(
    start_server: Start, bundles: dict[str, BuildResult]
) -> None:
    srv = _serve(start_server, bundles["onnx"], bundles["onnx"], "1.0.0")
    _predict_rows(srv)
    samples = _samples(srv.url)
    where = {mn.LABEL_REFERENCE_VERSION: "1.0.0"}
    assert _value(samples, mn.SHADOW_AGREED_TOTAL, **where) == ROWS
    assert _value(samples, mn.SHADOW_COMPARED_TOTAL, **where) == ROWS
    # every difference is in the le="0" bucket
    assert _value(samples, mn.SHADOW_SCORE_DIFFERENCE + "_bucket", le="0.0", **where) == ROWS


def test_feedback_and_probes_are_not_compared(start_server: Start, bundles: dict[str, BuildResult]) -> None:
    srv = _serve(start_server, bundles["hgb"], bundles["onnx"], "1.0.0")
    httpx.get(srv.url + "/readyz")
    httpx.post(srv.url + "/feedback", json={"request_id": "nope", "label": 1})
    assert _value(_samples(srv.url), mn.SHADOW_COMPARED_TOTAL) == 0


def test_a_reference_of_the_wrong_version_keeps_the_pod_unready(
    start_server: Start, bundles: dict[str, BuildResult]
) -> None:
    srv = start_server(
        env={
            "MLCANARY_BUNDLE_URI": str(bundles["hgb"].path),
            "MLCANARY_REFERENCE_BUNDLE_URI": str(bundles["onnx"].path),
            "MLCANARY_REFERENCE_VERSION": "9.9.9",
        }
    )
    srv.wait_state("failed")
    assert httpx.get(srv.url + "/readyz").status_code == 503
    assert "does not match MLCANARY_REFERENCE_VERSION=9.9.9" in srv.log_text()
