"""Issue 11, item 11: the OpenAPI document describes the server.

Every (path, method, status) the document declares is produced here for real and the answer is
checked against the document (status, content type, headers, body schema); the set produced is
exactly the set declared. The document's examples, built from the loaded bundle, are sent as a
generated client would send them and answer 200. Wrong methods answer 405 with ``Allow``.
Schemathesis (``test_schemathesis.py``) then fuzzes the whole API from the same document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient

from mlcanary_serving.bundle import BuildResult

from .conftest import MODEL, ClientFactory

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
Call = Callable[[], httpx.Response]


def validate(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(instance)


def check_against_document(document: dict[str, Any], path: str, method: str, r: httpx.Response) -> None:
    declared = document["paths"][path][method.lower()]["responses"]
    assert str(r.status_code) in declared, (path, method, r.status_code, r.text[:300])
    response = declared[str(r.status_code)]
    (media_type, media) = next(iter(response["content"].items()))
    assert r.headers["content-type"].split(";")[0] == media_type
    for header in response["headers"]:
        assert r.headers.get(header), (path, header)
    body = r.json() if media_type == "application/json" else r.text
    validate(document, media["schema"], body)


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    doc: dict[str, Any] = client.get("/openapi.json").json()
    return doc


def example_path(document: dict[str, Any], path: str, method: str) -> str:
    for p in document["paths"][path][method.lower()]["parameters"]:
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", str(p["example"]))
    return path


def example_bodies(document: dict[str, Any], path: str, method: str) -> Iterator[tuple[str, Any]]:
    body = document["paths"][path][method.lower()].get("requestBody")
    if body is None:
        yield "no body", None
        return
    for name, ex in body["content"]["application/json"]["examples"].items():
        yield name, ex["value"]


def test_every_example_is_valid_and_answers_200(client: TestClient, document: dict[str, Any]) -> None:
    """What a client generated from the document sends, built from the loaded bundle: 200."""
    sent = 0
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            for name, body in example_bodies(document, path, method):
                if body is not None:
                    schema = op["requestBody"]["content"]["application/json"]["schema"]
                    validate(document, schema, body)
                r = client.request(method.upper(), example_path(document, path, method), json=body)
                assert r.status_code == 200, (path, name, r.text[:300])
                check_against_document(document, path, method, r)
                sent += 1
    assert sent >= 20
    predict = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert len(predict["one row"]["value"]["features"]) == 30  # the bundle's features, not a made-up 3


def test_document_is_bundle_specific(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    row = schemas["PredictRequest"]["properties"]["features"]["oneOf"][0]
    assert row["minItems"] == row["maxItems"] == 30
    named = schemas["PredictRequest"]["properties"]["features"]["oneOf"][1]
    assert "mean radius" in named["properties"] and named["additionalProperties"] is False
    output_names = schemas["InferenceRequest"]["properties"]["outputs"]["items"]["properties"]["name"]["enum"]
    assert output_names == ["label", "probabilities", "score"]
    assert document["paths"]["/metrics"]["get"]["responses"]["200"]["content"].keys() == {"text/plain"}


def test_wrong_methods_answer_405_with_allow(client: TestClient, document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        allowed = {m.upper() for m in operations}
        url = example_path(document, path, next(iter(operations)))
        for method in set(METHODS) - allowed:
            r = client.request(method, url)
            assert r.status_code == 405, (method, path)
            assert set(r.headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == allowed
            assert r.json()["code"] == "http_error" and r.json()["field"] == "path"
            validate(document, {"$ref": "#/components/schemas/Error"}, r.json())


@pytest.fixture
def unready(make_client: ClientFactory) -> TestClient:
    return make_client("/nonexistent/bundle")


@pytest.fixture
def failing(
    make_client: ClientFactory, bundles: dict[str, BuildResult], monkeypatch: pytest.MonkeyPatch
) -> TestClient:
    """A server whose model fails on every call (a server fault, not the client's)."""
    c = make_client(bundles["onnx"].path)

    def fail(_: Any) -> Any:
        raise RuntimeError("the model failed")

    monkeypatch.setattr(c.app.state.service.model.runtime, "predict", fail)  # type: ignore[attr-defined]
    return c


@pytest.fixture
def small_bodies(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> TestClient:
    return make_client(bundles["onnx"].path, max_body_bytes=2048)


def test_every_documented_response_is_what_the_server_sends(
    client: TestClient,
    document: dict[str, Any],
    unready: TestClient,
    failing: TestClient,
    small_bodies: TestClient,
) -> None:
    row = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"][
        "one row"
    ]
    features = row["value"]["features"]
    tensor = {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": features}
    good = {"/predict": {"features": features}, "/feedback": {"features": features, "label": 0},
            "/v2/models/{name}/infer": {"inputs": [tensor]}}  # fmt: skip
    good["/v2/models/{name}/versions/{version}/infer"] = good["/v2/models/{name}/infer"]
    big = b'{"features": [' + b"1.0, " * 1000 + b"1.0]}"
    wrong_model = {"/v2/models/{name}": "/v2/models/other", "/v2/models/{name}/ready": "/v2/models/other/ready",
                   "/v2/models/{name}/infer": "/v2/models/other/infer",
                   "/v2/models/{name}/versions/{version}": f"/v2/models/{MODEL}/versions/9.9.9",
                   "/v2/models/{name}/versions/{version}/ready": f"/v2/models/{MODEL}/versions/9.9.9/ready",
                   "/v2/models/{name}/versions/{version}/infer": f"/v2/models/{MODEL}/versions/9.9.9/infer"}  # fmt: skip

    def recipe(path: str, method: str, status: int) -> tuple[Call, dict[str, Any]] | None:
        url = example_path(document, path, method)
        body = good.get(path)
        if status == 200:
            return (lambda: client.request(method, url, json=body)), document
        if status == 400:
            return (
                lambda: client.request(
                    method, url, content=b"{", headers={"content-type": "application/json"}
                )
            ), document
        if status == 404 and path in wrong_model:
            return (lambda: client.request(method, wrong_model[path], json=body)), document
        if status == 404 and path == "/feedback":
            return (lambda: client.post(url, json={"request_id": "never-seen", "label": 0})), document
        if status == 413:
            return (lambda: small_bodies.request(method, url, content=big)), document
        if status == 422:
            return (lambda: client.request(method, url, json={})), document
        if status == 500:
            return (lambda: failing.request(method, url, json=body)), failing.get("/openapi.json").json()
        if status == 503:
            return (lambda: unready.request(method, url, json=body)), unready.get("/openapi.json").json()
        return None

    declared = {
        (p, m.upper(), int(s))
        for p, ops in document["paths"].items()
        for m, op in ops.items()
        for s in op["responses"]
    }
    produced = set()
    for path, method, status in sorted(declared):
        found = recipe(path, method, status)
        assert found is not None, f"no way to produce the documented {status} of {method} {path}"
        call, doc = found
        r = call()
        assert r.status_code == status, (path, method, status, r.text[:300])
        check_against_document(doc, path, method, r)
        produced.add((path, method, status))
    assert produced == declared
    # and the statuses the document does not list per operation are the router's: 404 and 405
    assert client.get("/nope").status_code == 404 and client.get("/predict").status_code == 405


def test_unready_document_has_the_same_operations(document: dict[str, Any], unready: TestClient) -> None:
    """Before a bundle is loaded the document is generic, but lists the same operations and statuses."""
    doc = unready.get("/openapi.json").json()

    def ops(d: dict[str, Any]) -> set[tuple[str, str, str]]:
        return {(p, m, s) for p, o in d["paths"].items() for m, op in o.items() for s in op["responses"]}

    assert ops(doc) == ops(document)
    assert "examples" not in doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]


def test_reject_mode_documents_the_ranges(
    make_client: ClientFactory, bundles: dict[str, BuildResult]
) -> None:
    c = make_client(bundles["onnx"].path, env={"MLCANARY_OUT_OF_RANGE": "reject"})
    doc = c.get("/openapi.json").json()
    first = doc["components"]["schemas"]["PredictRequest"]["properties"]["features"]["oneOf"][0][
        "prefixItems"
    ][0]
    lo, hi = first["minimum"], first["maximum"]
    assert lo > 0 and hi < 100  # "mean radius" on breast_cancer: 6.98 .. 28.11
    features = next(
        iter(
            doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
                "examples"
            ].values()
        )
    )
    assert c.post("/predict", json=features["value"]).status_code == 200  # examples lie inside the ranges
    assert (
        c.post("/predict", json={"features": [hi + 1, *features["value"]["features"][1:]]}).status_code == 422
    )
