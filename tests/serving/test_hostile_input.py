"""Issue 11, item 9: client input can only ever be answered 4xx, and never counts as a server error.

``mlcanary_requests_total{outcome="server_error"}`` is the series the error-rate gate reads: one
client sending malformed bodies must not be able to roll back a healthy canary. The reproducing
cases of the issue come first; then the class: every position of every body replaced by every JSON
type (and removed, and joined by an unknown field), over the in-process app and a real server.
"""

from __future__ import annotations

import copy
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mlcanary_serving import metric_names as mn
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_data

from .conftest import MODEL, ServerProcess

Start = Callable[..., ServerProcess]

X, Y, NAMES = demo_data()
ROW = X[0].tolist()
INFER = f"/v2/models/{MODEL}/infer"


def deep(levels: int, leaf: Any = 1.0) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def tensor(**overrides: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": ROW, **overrides}


def server_errors(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(mn.REQUESTS_TOTAL) and f'{mn.LABEL_OUTCOME}="{mn.OUTCOME_SERVER_ERROR}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no server_error series")


def body_with_data_nested(levels: int) -> bytes:
    """A ~2 KB body whose tensor data is nested ``levels`` deep (written by hand: json.dumps would
    itself hit the recursion limit)."""
    head = json.dumps({"inputs": [tensor(data="DATA")]}).encode()
    return head.replace(b'"DATA"', b"[" * levels + b"1.0" + b"]" * levels)


# the reproducing cases of the issue: each answered 500 and counted as server_error before
HOSTILE: list[tuple[str, bytes, str]] = [
    ("name-is-a-list", json.dumps({"inputs": [tensor(name=["input"])]}).encode(), "inputs[0].name"),
    ("name-is-an-object", json.dumps({"inputs": [tensor(name={"a": 1})]}).encode(), "inputs[0].name"),
    (
        "datatype-is-a-list",
        json.dumps({"inputs": [tensor(datatype=["FP64"])]}).encode(),
        "inputs[0].datatype",
    ),
    (
        "datatype-is-an-object",
        json.dumps({"inputs": [tensor(datatype={"t": 1})]}).encode(),
        "inputs[0].datatype",
    ),
    ("data-nested-1000-deep", body_with_data_nested(1000), "inputs[0].data[0]"),
]


@pytest.mark.parametrize(("raw", "field"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_issue_bodies_are_422_naming_the_field(client: TestClient, raw: bytes, field: str) -> None:
    r = client.post(INFER, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert server_errors(client.get("/metrics").text) == 0


def test_issue_bodies_on_a_real_server_count_no_server_error(
    start_server: Start, bundles: dict[str, BuildResult]
) -> None:
    """The same bodies through uvicorn (the issue's setup: a real stack, 2 KB bodies)."""
    srv = start_server(["--bundle", str(bundles["onnx"].path)])
    srv.wait_state("ready")
    for _, raw, field in HOSTILE:
        r = httpx.post(srv.url + INFER, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == field, (field, r.text[:300])
    text = httpx.get(srv.url + "/metrics").text
    assert server_errors(text) == 0
    assert f'outcome="{mn.OUTCOME_CLIENT_ERROR}"}} {float(len(HOSTILE))}' in text
    assert "Traceback" not in srv.log_text()


# ------------------------------------------------------------------------- the whole class
REPLACEMENTS: list[Any] = [
    None, True, 0, -1, 1.5, 10**400, "", "x" * 300, [], [1.0], [[]], {}, {"a": 1}, deep(300), deep(300, {}),
]  # fmt: skip

VALID_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "predict-row": ("/predict", {"features": ROW}),
    "predict-batch": ("/predict", {"features": [ROW, ROW]}),
    "predict-named": ("/predict", {"instances": [dict(zip(NAMES[:30], ROW, strict=True))]}),
    "infer-one-tensor": (INFER, {"id": "a", "parameters": {}, "inputs": [tensor(parameters={})],
                                  "outputs": [{"name": "label", "parameters": {}}]}),
    "infer-nested": (INFER, {"inputs": [tensor(shape=[2, 30], data=[ROW, ROW])]}),
    "infer-per-feature": (INFER, {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
                                             for n, v in zip(NAMES[:3], ROW, strict=False)] + [
        {"name": n, "shape": [1, 1], "datatype": "FP32", "data": [[v]]}
        for n, v in zip(NAMES[3:], ROW[3:], strict=True)]}),
    "feedback-rows": ("/feedback", {"features": ROW, "label": 0}),
    "feedback-batch": ("/feedback", {"instances": [ROW, ROW], "labels": [0, 1]}),
}  # fmt: skip


def positions(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a JSON value (keys and indices from the root), the root included."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from positions(v, (*path, k))
    elif isinstance(value, list):
        # every index of a short list; the first and last of a long one (rows of 30 numbers)
        idx = range(len(value)) if len(value) <= 3 else (0, len(value) - 1)
        for i in idx:
            yield from positions(value[i], (*path, i))


def mutated(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(body)
    parent = out
    for p in path[:-1]:
        parent = parent[p]
    if new is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return out


_DELETE = object()


def value_at(body: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        body = body[p]
    return body


def cases() -> Iterator[tuple[str, str, bytes]]:
    for name, (url, body) in VALID_BODIES.items():
        for path in positions(body):
            for new in [*REPLACEMENTS, _DELETE] if path else REPLACEMENTS:
                yield name, url, json.dumps(mutated(body, path, new)).encode()
            here = value_at(body, path)
            if isinstance(here, dict):  # a field the protocol does not define, at every object
                yield name, url, json.dumps(mutated(body, path, {**here, "unexpected": 1})).encode()


def test_valid_bodies_are_valid(client: TestClient) -> None:
    """The mutation test below starts from bodies the server accepts."""
    for name, (url, body) in VALID_BODIES.items():
        r = client.post(url, json=body)
        assert r.status_code == 200, (name, r.text)


def test_every_position_of_every_body_with_every_json_type(client: TestClient) -> None:
    seen: dict[int, int] = {}
    n = 0
    for name, url, raw in cases():
        r = client.post(url, content=raw, headers={"content-type": "application/json"})
        n += 1
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (name, raw[:300], r.text[:300])
        if r.status_code >= 400:
            err = r.json()
            assert err["field"] and err["error"] and err["code"], (name, raw[:300], err)
    assert n > 1500 and seen.get(422, 0) > 1000  # the corpus really is mostly refusals
    assert server_errors(client.get("/metrics").text) == 0


# --------------------------------------------------------------- only server faults are 5xx
def test_a_validation_gap_is_a_400_not_a_server_error(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a parser raises while reading client data is answered 400 and logged as a bug."""
    from mlcanary_serving.api import simple

    def broken(obj: Any, v: Any) -> Any:
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(simple, "parse_simple", broken)
    r = client.post("/predict", json={"features": ROW})
    assert r.status_code == 400 and r.json()["code"] == "invalid_input" and r.json()["field"] == "body"
    assert "a bug" in caplog.text and "TypeError" in caplog.text
    text = client.get("/metrics").text
    assert server_errors(text) == 0
    assert f'outcome="{mn.OUTCOME_CLIENT_ERROR}"}} 1.0' in text


def test_a_model_failure_is_still_a_server_error(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the line: the server's own faults keep counting (the gate needs them)."""
    model = client.app.state.service.model  # type: ignore[attr-defined]

    def fail(_: Any) -> Any:
        raise RuntimeError("ONNX Runtime failed")

    monkeypatch.setattr(model.runtime, "predict", fail)
    r = client.post("/predict", json={"features": ROW})
    assert r.status_code == 500 and r.json()["code"] == "internal"
    assert server_errors(client.get("/metrics").text) == 1


def test_a_client_leaving_mid_body_is_not_a_server_error(
    start_server: Start, bundles: dict[str, BuildResult]
) -> None:
    srv: ServerProcess = start_server(["--bundle", str(bundles["onnx"].path)])
    srv.wait_state("ready")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(
                f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 5000\r\n\r\n".encode()
                + b'{"inputs": ['
                + b" " * 100
            )
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(srv.url + "/metrics").text
        if f'outcome="{mn.OUTCOME_CLIENT_ERROR}"}} 3.0' in text:
            break
        time.sleep(0.1)
    assert server_errors(text) == 0, text
    assert f'outcome="{mn.OUTCOME_CLIENT_ERROR}"}} 3.0' in text
    assert "Traceback" not in srv.log_text()
