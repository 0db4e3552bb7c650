"""The OpenAPI 3.1 document, generated from the routes table and the loaded bundle.

Every operation declares every status it answers, each with its body schema, the identity headers
and the real content type (``/metrics`` is Prometheus text). Once a bundle is loaded, the schemas
are the bundle's: the feature count, names and types of a row, integer features, the allowed range
(when out-of-range values are refused), the class values and their JSON type, the outputs of
inference; the examples are built from the bundle's schema and reference statistics, so a client
generated from the document, or one that sends its examples, gets 200s. Before a bundle is loaded
the same shapes are given without the bundle's specifics.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from ..metric_names import METRIC_NAMES
from ..protocol.errors import ERROR_CODES
from ..protocol.v2 import MAX_RANK, V2_NUMERIC, OutputSpec
from ..protocol.validator import MAX_SAFE_INTEGER
from ..service import Loaded, ModelService
from .common import JSON
from .routing import Route

OCTET_STREAM: Final = "application/octet-stream"

OPENAPI_VERSION: Final = "3.1.0"

METRICS_MEDIA_TYPE: Final = "text/plain"
IDENTITY_HEADERS: Final = {
    "X-Model-Name": "Name of the served model.",
    "X-Model-Version": "Version of the served model (the bundle's semantic version).",
    "X-Request-ID": "The request id (the caller's X-Request-ID when it is 1-128 of [A-Za-z0-9._:-]).",
}
STRING: Final = {"type": "string"}
NUMBER: Final = {"type": "number"}
IDENTITY: Final = {"model_name": STRING, "model_version": STRING, "request_id": STRING}


def _object(
    properties: dict[str, Any], required: Sequence[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A closed object: every property listed, ``required`` (default: all of them)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else list(required),
        "additionalProperties": False,
        **extra,
    }


def _answer(properties: dict[str, Any], optional: Sequence[str] = ()) -> dict[str, Any]:
    props = {**properties, **IDENTITY}
    return _object(props, [k for k in props if k not in optional])


def _array(items: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


# ------------------------------------------------------------------------------------ values
def _feature_values(m: Loaded | None) -> list[dict[str, Any]] | None:
    """Each feature's value: a finite double (the range of a float32 model's input, the schema's
    range when out-of-range values are refused), or an integer of at most 2**53-1 in magnitude."""
    if m is None:
        return None
    reject = m.validator.reject_out_of_range
    out = []
    for f in m.bundle.schema.features:
        if f.type == "int":
            value: dict[str, Any] = {
                "type": "integer",
                "minimum": -MAX_SAFE_INTEGER,
                "maximum": MAX_SAFE_INTEGER,
            }
        elif m.validator.max_abs is not None:
            value = {"type": "number", "minimum": -m.validator.max_abs, "maximum": m.validator.max_abs}
        else:
            value = {"type": "number", "description": "a finite double"}
        if reject and f.min is not None:
            value["minimum"] = max(value.get("minimum", f.min), f.min)
        if reject and f.max is not None:
            value["maximum"] = min(value.get("maximum", f.max), f.max)
        out.append(value)
    return out


def _json_type(datatype: str) -> dict[str, Any]:
    return {"BOOL": {"type": "boolean"}, "INT64": {"type": "integer"}, "BYTES": STRING}.get(datatype, NUMBER)


def _label(m: Loaded | None) -> dict[str, Any]:
    if m is None:
        return {}
    spec = m.outputs[0]
    schema = _json_type(spec.datatype)
    if spec.name == "label" and m.bundle.manifest.classes:
        return {**schema, "enum": list(m.bundle.manifest.classes)}
    return schema


def _rows(m: Loaded | None, values: list[dict[str, Any]] | None, max_rows: int) -> dict[str, Any]:
    """``features``: one row (positional or named) or a batch of one kind of row."""
    if m is None or values is None:
        positional: dict[str, Any] = _array(NUMBER, minItems=1)
        named: dict[str, Any] = {"type": "object", "additionalProperties": NUMBER}
    else:
        n = m.validator.n
        positional = {"type": "array", "prefixItems": values, "items": False, "minItems": n, "maxItems": n}
        named = _object(
            dict(zip(m.validator.names, values, strict=True)),
            [name for name, req in zip(m.validator.names, m.validator.required, strict=True) if req],
        )
    return {
        "oneOf": [
            {**positional, "description": "one row, in schema order"},
            {**named, "description": "one row, by feature name (optional features may be left out)"},
            _array(positional, minItems=1, maxItems=max_rows, description="a batch of rows"),
            _array(named, minItems=1, maxItems=max_rows, description="a batch of rows by name"),
        ]
    }


def _one_of_fields(*names: str) -> dict[str, Any]:
    return {"oneOf": [{"required": [n]} for n in names]}


# ----------------------------------------------------------------------------------- schemas
def schemas(svc: ModelService) -> dict[str, Any]:
    m = svc.model
    values = _feature_values(m)
    max_rows = svc.settings.max_rows
    rows = _rows(m, values, max_rows)
    label = _label(m)
    probabilities = m is not None and any(o.name == "probabilities" for o in m.outputs)
    k = len(m.bundle.manifest.classes) if m is not None else None
    proba = _array(NUMBER, minItems=k, maxItems=k) if k else _array(NUMBER)
    optional_proba = () if probabilities else ("probabilities",)
    single = _answer({"prediction": label, "score": NUMBER, "probabilities": proba}, optional_proba)
    batch = _answer(
        {"predictions": _array(label), "scores": _array(NUMBER), "probabilities": _array(proba)},
        optional_proba,
    )
    if m is not None and not probabilities:  # regressors (and classifiers without probabilities)
        for s in (single, batch):
            del s["properties"]["probabilities"]
    outputs = [o.name for o in m.outputs] if m is not None else None
    output_name = {"type": "string", **({"enum": outputs} if outputs else {})}
    n_inputs = {"maxItems": m.validator.n} if m is not None else {}
    classes = m.bundle.manifest.classes if m is not None else []
    feedback_label = {**label, "description": "a class of the model"} if classes else {}
    return {
        "Error": _answer(
            {
                "error": {**STRING, "description": "what is wrong, naming the field"},
                "field": {"type": ["string", "null"], "description": "the field at fault: features[3], inputs[0].shape, body, path ..."},
                "code": {"type": "string", "enum": list(ERROR_CODES)},
            }
        ),
        "Health": _answer(
            {
                "state": {"type": "string", "enum": ["loading", "ready", "failed"]},
                "live": {"const": True},
                "ready": {"type": "boolean"},
                "reason": {**STRING, "description": "why the server is not ready"},
            },
            optional=("live", "ready", "reason"),
        ),
        "ServerMetadata": _answer(
            {"name": STRING, "version": STRING, "extensions": _array({"const": "binary_tensor_data"}, maxItems=1)}
        ),
        "ModelReady": _answer({"name": STRING, "ready": {"const": True}}),
        "ModelMetadata": _answer(
            {
                "name": STRING,
                "versions": _array(STRING),
                "platform": {"type": "string", "enum": ["onnxruntime", "sklearn"]},
                "inputs": _array(_tensor_metadata(None)),
                "outputs": _array(
                    {"oneOf": [_tensor_metadata(o) for o in m.outputs]} if m is not None else _tensor_metadata(None)
                ),
                "parameters": _object(
                    {
                        "feature_names": _array(STRING),
                        "classes": _array(label if classes else {}),
                        "task": {"type": "string", "enum": ["classification", "regression"]},
                        "bundle_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    }
                ),
            }
        ),
        "ModelCard": _answer(
            {"card": {"type": "object"}, "manifest": {"type": "object"}, "schema": {"type": "object"}, "bundle_sha256": STRING}
        ),
        "PredictRequest": {
            **_object({"features": rows, "instances": rows}, required=[]),
            **_one_of_fields("features", "instances"),
        },
        "PredictResponse": {"oneOf": [single, batch]},
        "InferenceRequest": _object(
            {
                "id": {**STRING, "description": "echoed as the answer's id"},
                "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean", "description": "answer every output as binary data (application/octet-stream), unless an output's binary_data says otherwise"}}},
                "inputs": _array(_input_tensor(), minItems=1, **n_inputs),
                "outputs": _array(
                    _object(
                        {"name": output_name, "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean", "description": "answer this output as binary data"}}}},
                        required=["name"],
                    ),
                    uniqueItems=True,
                    description="outputs to return, in this order (default: all)",
                ),
            },
            required=["inputs"],
        ),
        "InferenceResponse": _answer(
            {
                "id": STRING,
                "outputs": _array(
                    {"oneOf": [_output_tensor(o, label) for o in m.outputs]} if m is not None else _output_tensor(None, {})
                ),
            }
        ),
        "FeedbackRequest": {
            **_object(
                {
                    "request_id": {**STRING, "description": "X-Request-ID of an earlier prediction"},
                    "label": feedback_label,
                    "labels": _array(feedback_label, minItems=1, maxItems=max_rows),
                    "features": rows,
                    "instances": rows,
                },
                required=[],
            ),
            "allOf": [_one_of_fields("label", "labels"), _one_of_fields("request_id", "features", "instances")],
        },
        "FeedbackResponse": _answer(
            {"for_request_id": {"type": ["string", "null"]}, "correct": {"oneOf": [{"type": "boolean"}, _array({"type": "boolean"})]}}
        ),
    }  # fmt: skip


def _tensor_metadata(spec: OutputSpec | None) -> dict[str, Any]:
    if spec is None:
        return _object({"name": STRING, "datatype": STRING, "shape": _array({"type": "integer"})})
    return _object(
        {
            "name": {"const": spec.name},
            "datatype": {"const": spec.datatype},
            "shape": {"const": spec.metadata()["shape"]},
        }
    )


def _input_tensor() -> dict[str, Any]:
    return _object(
        {
            "name": {**STRING, "description": "any name for one [rows, n] tensor; a feature name for one tensor per feature"},
            "shape": _array({"type": "integer", "minimum": 0}, minItems=1, maxItems=MAX_RANK),
            "datatype": {"type": "string", "enum": list(V2_NUMERIC)},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"not": {}, "description": "binary tensor data: only in an application/octet-stream request with Inference-Header-Content-Length (see the operation)"}}},
            "data": _array({"oneOf": [NUMBER, _array(NUMBER)]}),
        },
        required=["name", "shape", "datatype", "data"],
    )  # fmt: skip


def _output_tensor(spec: OutputSpec | None, label: dict[str, Any]) -> dict[str, Any]:
    if spec is None:
        return _object(
            {"name": STRING, "datatype": STRING, "shape": _array({"type": "integer"}), "data": _array({})}
        )
    item = label if spec.name == "label" else _json_type(spec.datatype)
    rank = 1 if spec.per_row is None else 2
    return _object(
        {
            "name": {"const": spec.name},
            "datatype": {"const": spec.datatype},
            "shape": _array({"type": "integer", "minimum": 0}, minItems=rank, maxItems=rank),
            "data": _array(item),
        }
    )


# ---------------------------------------------------------------------------------- examples
def example_row(m: Loaded) -> list[float | int]:
    """A plausible row: each feature's median bin edge from the reference, inside its range."""
    row: list[float | int] = []
    for f, edges in zip(m.bundle.schema.features, m.bundle.reference.feature_edges, strict=True):
        v = edges[len(edges) // 2] if edges else (f.default or 0.0)
        if f.min is not None:
            v = max(v, f.min)
        if f.max is not None:
            v = min(v, f.max)
        row.append(round(v) if f.type == "int" else v)
    return row


def examples(m: Loaded | None) -> dict[str, dict[str, Any]]:
    if m is None:
        return {}
    row = example_row(m)
    names = m.validator.names
    infer: dict[str, Any] = {
        "one tensor": {
            "value": {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
        },
        "two rows, nested": {
            "value": {
                "inputs": [{"name": "input", "shape": [2, len(row)], "datatype": "FP64", "data": [row, row]}]
            }
        },
        "one tensor per feature": {
            "value": {
                "inputs": [
                    {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
                    for n, v in zip(names, row, strict=True)
                ]
            }
        },
        f"only {m.outputs[0].name}": {
            "value": {
                "inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}],
                "outputs": [{"name": m.outputs[0].name}],
            }
        },
    }
    out = {
        "PredictRequest": {
            "one row": {"value": {"features": row}},
            "one row by name": {"value": {"features": dict(zip(names, row, strict=True))}},
            "a batch": {"value": {"features": [row, row]}},
        },
        "InferenceRequest": infer,
    }
    if m.bundle.manifest.task == "classification" and m.bundle.manifest.classes:
        out["FeedbackRequest"] = {
            "rows and their true class": {"value": {"features": row, "label": m.bundle.manifest.classes[0]}}
        }
    return out  # fmt: skip


# ---------------------------------------------------------------------------------- document
def _response(schema: str, status: int) -> dict[str, Any]:
    headers = {h: {"$ref": f"#/components/headers/{h}"} for h in IDENTITY_HEADERS}
    content: dict[str, Any]
    if schema == "Metrics":
        content = {METRICS_MEDIA_TYPE: {"schema": STRING}}
        description = f"Prometheus text format ({', '.join(sorted(METRIC_NAMES.values()))})"
    else:
        content = {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        description = _DESCRIPTIONS.get(status, "")
        if schema == "InferenceResponse":  # binary tensor data extension, when the request asks for it
            content[OCTET_STREAM] = {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "the JSON answer of Inference-Header-Content-Length bytes, then the raw "
                    "little-endian bytes of each output with parameters.binary_data_size",
                }
            }
    return {"description": description or "OK", "headers": headers, "content": content}


_DESCRIPTIONS: Final = {
    200: "OK",
    400: "Unreadable request: malformed JSON, an empty body, a bad Content-Length, a client gone mid-body",
    404: "Unknown model name or version, or unknown feedback request_id",
    413: "Body larger than MLCANARY_MAX_BODY_BYTES",
    422: "Well-formed JSON that is not a valid request; `field` names the culprit",
    500: "The server failed (model error, injected fault): counted as server_error",
    503: "No verified model is loaded (yet, or the bundle failed to load)",
}


def _operation(route: Route, svc: ModelService, request_examples: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": STRING,
            "example": svc.name if p == "name" else svc.version,
            "description": "the served model's name" if p == "name" else "the served version",
        }
        for p in re.findall(r"{(\w+)}", route.path)
    ]
    params.append(
        {
            "name": "X-Request-ID",
            "in": "header",
            "required": False,
            "schema": STRING,
            "description": "reused as the request id when it is 1-128 of [A-Za-z0-9._:-]; else one is generated",
        }
    )
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": params,
        "responses": {str(s): _response(schema, s) for s, schema in sorted(route.responses.items())},
    }
    if route.description:
        op["description"] = route.description
    if route.request_body is not None:
        media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{route.request_body}"}}
        if route.request_body in request_examples:
            media["examples"] = request_examples[route.request_body]
        op["requestBody"] = {"required": True, "content": {JSON: media}}
    return op


def openapi_document(
    routes: Sequence[Route], svc: ModelService, title: str, version: str, summary: str
) -> dict[str, Any]:
    request_examples = examples(svc.model)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, svc, request_examples)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "summary": summary,
            "description": f"Serving model {svc.name!r} version {svc.version!r}. Every error is the `Error` "
            "body; any endpoint answers 500 with it on an unexpected fault. A wrong method answers 405 with "
            "`Allow`; an unknown path 404.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(svc),
            "headers": {
                h: {"description": d, "required": True, "schema": STRING} for h, d in IDENTITY_HEADERS.items()
            },
        },
    }
