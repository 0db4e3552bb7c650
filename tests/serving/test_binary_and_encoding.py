"""Issue 15, item 3: OIP v2 binary tensor data (what tritonclient sends by default) and gzip/deflate
request bodies, with their byte layouts, and the limits that keep them safe (no zip bombs)."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from mlcanary_serving import metric_names as mn
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_data

from .conftest import MODEL, ServerProcess

tritonclient_http = pytest.importorskip("tritonclient.http")

X, _, NAMES = demo_data()
ROWS = X[:3]
INFER = f"/v2/models/{MODEL}/infer"
HEADER = "inference-header-content-length"


def json_answer(client: TestClient, rows: np.ndarray) -> dict[str, Any]:
    body = {
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}]
    }
    r = client.post(INFER, json=body)
    assert r.status_code == 200, r.text
    return {o["name"]: o["data"] for o in r.json()["outputs"]}


def binary_request(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A body by the spec: the JSON request, then the tensors' bytes; the header says where JSON ends."""
    raw = orjson.dumps(header)
    return raw + b"".join(chunks), {HEADER: str(len(raw)), "content-type": "application/octet-stream"}


def split_answer(r: Any) -> tuple[dict[str, Any], bytes]:
    n = int(r.headers[HEADER])
    return orjson.loads(r.content[:n]), r.content[n:]


def refused(r: Any, field: str, code: str, status: int = 422) -> None:
    assert r.status_code == status, r.text
    assert (r.json()["field"], r.json()["code"]) == (field, code), r.json()


# ------------------------------------------------------------------------ tritonclient's bytes
def test_tritonclient_default_request_and_binary_answer(client: TestClient) -> None:
    """tritonclient's own request body (binary input, binary_data_output by default), answer read
    back with tritonclient's own parser: the same values as the JSON path."""
    inp = tritonclient_http.InferInput("input", list(ROWS.shape), "FP64")
    inp.set_data_from_numpy(ROWS, binary_data=True)
    body, json_size = tritonclient_http.InferenceServerClient.generate_request_body([inp], request_id="t1")
    assert json_size is not None and b'"binary_data_size":720' in body[:json_size]
    r = client.post(INFER, content=body, headers={HEADER: str(json_size)})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    result = tritonclient_http.InferResult.from_response_body(r.content, header_length=int(r.headers[HEADER]))
    expected = json_answer(client, ROWS)
    assert result.as_numpy("label").tolist() == expected["label"]
    assert result.as_numpy("probabilities").reshape(-1).tolist() == expected["probabilities"]
    assert result.as_numpy("score").tolist() == expected["score"]
    assert result.get_response()["id"] == "t1"


def test_tritonclient_per_output_choice_and_fp32_input(client: TestClient) -> None:
    """FP32 binary input; label asked as JSON, score as binary (the output's flag decides)."""
    x32 = ROWS.astype(np.float32)
    inp = tritonclient_http.InferInput("input", list(x32.shape), "FP32")
    inp.set_data_from_numpy(x32, binary_data=True)
    outs = [
        tritonclient_http.InferRequestedOutput("label", binary_data=False),
        tritonclient_http.InferRequestedOutput("score", binary_data=True),
    ]
    body, json_size = tritonclient_http.InferenceServerClient.generate_request_body([inp], outputs=outs)
    r = client.post(INFER, content=body, headers={HEADER: str(json_size)})
    assert r.status_code == 200, r.text
    header, tail = split_answer(r)
    label, score = header["outputs"]
    expected = json_answer(client, x32.astype(np.float64))
    assert label["data"] == expected["label"] and "parameters" not in label
    assert score["parameters"] == {"binary_data_size": 8 * len(ROWS)} and "data" not in score
    assert np.frombuffer(tail, "<f8").tolist() == expected["score"]


def test_tritonclient_gzip_request_to_a_real_server(
    start_server: Callable[..., ServerProcess], bundles: dict[str, BuildResult]
) -> None:
    """tritonclient's HTTP client end to end through uvicorn: binary tensors, gzip-compressed body."""
    srv = start_server(["--bundle", str(bundles["onnx"].path)])
    srv.wait_state("ready")
    cli = tritonclient_http.InferenceServerClient(f"127.0.0.1:{srv.port}")
    inp = tritonclient_http.InferInput("input", list(ROWS.shape), "FP64")
    inp.set_data_from_numpy(ROWS, binary_data=True)
    res = cli.infer(MODEL, [inp], request_compression_algorithm="gzip")
    body = {
        "inputs": [{"name": "input", "shape": [3, 30], "datatype": "FP64", "data": ROWS.ravel().tolist()}]
    }
    want = {o["name"]: o["data"] for o in httpx.post(srv.url + INFER, json=body).json()["outputs"]}
    assert res.as_numpy("label").tolist() == want["label"]
    assert res.as_numpy("score").tolist() == want["score"]
    text = httpx.get(srv.url + "/metrics").text
    assert f'{mn.REQUESTS_TOTAL}{{model_name="{MODEL}",model_version="1.0.0",outcome="success"}} 2.0' in text
    cli.close()


# -------------------------------------------------------------------------- the spec's layout
def test_per_feature_binary_tensors_int_and_float(client: TestClient) -> None:
    """One tensor per feature, mixed datatypes (INT32 for a whole-valued copy, FP64 else), each
    [rows] of little-endian bytes in input order; mixing JSON data and binary inputs is allowed."""
    rows = np.round(ROWS)
    inputs, chunks = [], []
    for c, name in enumerate(NAMES):
        col = rows[:, c]
        if c % 3 == 0:  # JSON data
            inputs.append({"name": name, "shape": [3], "datatype": "FP64", "data": col.tolist()})
            continue
        dt, raw = ("INT32", col.astype("<i4").tobytes()) if c % 2 else ("FP64", col.astype("<f8").tobytes())
        inputs.append(
            {"name": name, "shape": [3, 1], "datatype": dt, "parameters": {"binary_data_size": len(raw)}}
        )
        chunks.append(raw)
    body, headers = binary_request({"inputs": inputs}, *chunks)
    r = client.post(INFER, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"  # no binary output asked for
    got = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert got == json_answer(client, rows)


def test_binary_labels_of_string_classes_are_length_prefixed() -> None:
    from mlcanary_serving.protocol.v2 import binary_answer

    payload = {
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["benign", "ü"]},
            {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "score", "datatype": "FP64", "shape": [2], "data": [0.5, 1.0]},
        ]
    }
    header, tail = binary_answer(payload, ("label", "flag"))
    label, flag, score = orjson.loads(header)["outputs"]
    want = struct.pack("<I", 6) + b"benign" + struct.pack("<I", 2) + "ü".encode() + b"\x01\x00"
    assert tail == want
    assert label["parameters"] == {"binary_data_size": 16} and flag["parameters"] == {"binary_data_size": 2}
    assert score["data"] == [0.5, 1.0]


@pytest.mark.parametrize(
    ("tensor", "tail", "header_length", "field", "code", "status"),
    [
        ({"binary_data_size": 239}, bytes(239), None, "inputs[0].parameters.binary_data_size", "wrong_shape", 422),
        ({"binary_data_size": 240}, bytes(200), None, "inputs[0].parameters.binary_data_size", "wrong_shape", 422),
        ({"binary_data_size": 240}, bytes(248), None, "body", "wrong_shape", 422),
        ({"binary_data_size": "240"}, bytes(240), None, "inputs[0].parameters.binary_data_size", "wrong_type", 422),
        ({"binary_data_size": 240, "data": [1.0] * 30}, bytes(240), None, "inputs[0].parameters.binary_data_size", "ambiguous", 422),
        ({"binary_data_size": 240}, bytes(240), "", HEADER, "bad_header", 400),
        ({"binary_data_size": 240}, bytes(240), "99999", HEADER, "bad_header", 400),
        ({"binary_data_size": 240}, bytes(240), "-5", HEADER, "bad_header", 400),
    ],
)  # fmt: skip
def test_binary_sizes_that_do_not_add_up_are_refused(
    client: TestClient, tensor: dict[str, Any], tail: bytes, header_length: str | None, field: str, code: str,
    status: int,
) -> None:  # fmt: skip
    data = tensor.pop("data", None)
    t: dict[str, Any] = {"name": "input", "shape": [1, 30], "datatype": "FP64", "parameters": tensor}
    if data is not None:
        t["data"] = data
    body, headers = binary_request({"inputs": [t]}, tail)
    if header_length is not None:
        headers[HEADER] = header_length
    refused(client.post(INFER, content=body, headers=headers), field, code, status)


def test_binary_data_without_the_header_is_refused(client: TestClient) -> None:
    t = {"name": "input", "shape": [1, 30], "datatype": "FP64", "parameters": {"binary_data_size": 240}}
    refused(client.post(INFER, json={"inputs": [t]}), HEADER, "bad_header", 400)


def test_binary_values_are_validated_like_json_values(client: TestClient) -> None:
    """A NaN in FP32 bytes is refused naming its position, as it would be in data."""
    x = ROWS[:1].astype(np.float32)
    x[0, 3] = np.nan
    t = {"name": "input", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}
    body, headers = binary_request({"inputs": [t]}, x.astype("<f4").tobytes())
    refused(client.post(INFER, content=body, headers=headers), "inputs[0].binary_data[3]", "not_finite")


# ------------------------------------------------------------------------------ gzip, deflate
@pytest.mark.parametrize(
    "compress",
    [gzip.compress, zlib.compress],
    ids=["gzip", "deflate"],
)
def test_compressed_bodies_on_every_body_endpoint(
    client: TestClient, compress: Callable[[bytes], bytes]
) -> None:
    coding = "gzip" if compress is gzip.compress else "deflate"
    row = ROWS[0].tolist()
    plain = client.post("/predict", json={"features": row}).json()
    r = client.post("/predict", content=compress(orjson.dumps({"features": row})),
                    headers={"content-encoding": coding, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == plain["prediction"] and r.json()["score"] == plain["score"]
    v2 = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": row}]})
    assert client.post(INFER, content=compress(v2), headers={"content-encoding": coding}).status_code == 200
    fb = orjson.dumps({"request_id": r.headers["x-request-id"], "label": plain["prediction"]})
    r = client.post("/feedback", content=compress(fb), headers={"content-encoding": coding})
    assert r.status_code == 200 and r.json()["correct"] is True, r.text


def test_a_zip_bomb_is_refused_at_the_body_limit(make_client: Any, bundles: dict[str, BuildResult]) -> None:
    """2 MiB of zeros gzip to about 2 KB: refused once the decompressed size passes the limit."""
    c = make_client(bundles["onnx"].path, max_body_bytes=64 * 1024)
    bomb = gzip.compress(b'{"features": [' + b" " * (2 * 1024 * 1024) + b"]}")
    assert len(bomb) < 64 * 1024
    for path in ("/predict", INFER, "/feedback"):
        refused(c.post(path, content=bomb, headers={"content-encoding": "gzip"}), "body", "too_large", 413)


@pytest.mark.parametrize(
    ("body", "coding", "field", "code"),
    [
        (b"not gzip at all", "gzip", "body", "malformed_body"),
        (gzip.compress(b'{"features": [1]}')[:-6], "gzip", "body", "malformed_body"),
        (gzip.compress(b'{"features": [1]}') + b"junk", "gzip", "body", "malformed_body"),
        (b'{"features": [1]}', "br", "content-encoding", "bad_header"),
    ],
    ids=["garbage", "truncated", "trailing", "unsupported"],
)
def test_bad_compressed_bodies_are_client_errors(
    client: TestClient, body: bytes, coding: str, field: str, code: str
) -> None:
    for path in ("/predict", INFER):
        refused(client.post(path, content=body, headers={"content-encoding": coding}), field, code, 400)
