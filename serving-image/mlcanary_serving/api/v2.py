"""Open Inference Protocol v2: inference, model metadata and readiness, server metadata and health."""

from __future__ import annotations

from importlib import metadata

from starlette.requests import Request
from starlette.responses import Response

from ..protocol.codec import dumps, loads
from ..protocol.errors import InputError
from ..protocol.simple import Parsed, Row
from ..protocol.v2 import binary_answer, parse_v2, render_v2, split_body
from ..service import Loaded, ModelService
from .common import identity, request_id, respond
from .ops import health
from .prediction import JSON, Protocol, RawHeaders, Wire, answer_as_response
from .routing import BODY_ERRORS, ERROR, Route

try:
    SERVER_VERSION = metadata.version("mlcanary")
except metadata.PackageNotFoundError:  # pragma: no cover - the image runs the package uninstalled
    SERVER_VERSION = "0"


def check_model(svc: ModelService, request: Request) -> None:
    """404 unless the URL names the served model (and version, when it names one)."""
    check_name(svc, request.path_params["name"], request.path_params.get("version"))


def check_name(svc: ModelService, name: str, version: str | None) -> None:
    if name != svc.name:
        raise InputError(
            404, f"model {name!r} not found; this server serves {svc.name!r}", "model_name", "not_found"
        )
    if version is not None and version != svc.version:
        raise InputError(
            404,
            f"version {version!r} of model {name!r} not found; this server serves {svc.version!r}",
            "model_version",
            "not_found",
        )


OCTET_STREAM = b"application/octet-stream"


def _parse(body: bytes, wire: Wire, m: Loaded) -> Parsed:
    header, binary_data = split_body(body, wire.header_length)
    return parse_v2(loads(header), m.validator, [o.name for o in m.outputs], binary_data)


def _render(
    parsed: Parsed, rows: list[Row], m: Loaded, ident: dict[str, str]
) -> tuple[bytes, bytes, RawHeaders]:
    payload = render_v2(parsed, rows, m.outputs, ident)
    if not parsed.binary_outputs:
        return dumps(payload), JSON, []
    header, binary_data = binary_answer(payload, parsed.binary_outputs)
    return (
        header + binary_data,
        OCTET_STREAM,
        [(b"inference-header-content-length", str(len(header)).encode())],
    )


V2 = Protocol(_parse, _render)


def infer_path(path: str) -> tuple[str, str | None] | None:
    """(name, version) of ``/v2/models/{name}[/versions/{version}]/infer``, else None (the
    routes table's patterns: each part non-empty, no ``/`` inside)."""
    parts = path.split("/")
    n = len(parts)
    if n == 5 and parts[3] and parts[1] == "v2" and parts[2] == "models" and parts[4] == "infer":
        return parts[3], None
    if (
        n == 7
        and parts[3]
        and parts[5]
        and parts[1] == "v2"
        and parts[2] == "models"
        and parts[4] == "versions"
        and parts[6] == "infer"
    ):
        return parts[3], parts[5]
    return None


async def infer(svc: ModelService, request: Request) -> Response:
    return await answer_as_response(svc, request, V2, lambda s: check_model(s, request))


async def model_metadata(svc: ModelService, request: Request) -> Response:
    m = svc.require()
    check_model(svc, request)
    man = m.bundle.manifest
    rid = request_id(request)
    body = {
        "name": svc.name,
        "versions": [svc.version],
        "platform": "onnxruntime" if man.format == "onnx" else "sklearn",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, m.validator.n]}],
        "outputs": [o.metadata() for o in m.outputs],
        "parameters": {
            "feature_names": m.validator.names,
            "classes": man.classes,
            "task": man.task,
            "bundle_sha256": m.bundle.manifest_sha256,
        },
        **identity(svc, rid),
    }
    return respond(svc, 200, body, rid)


async def model_ready(svc: ModelService, request: Request) -> Response:
    svc.require()
    check_model(svc, request)
    rid = request_id(request)
    return respond(svc, 200, {"name": svc.name, "ready": True, **identity(svc, rid)}, rid)


async def server_metadata(svc: ModelService, request: Request) -> Response:
    rid = request_id(request)
    body = {
        "name": "mlcanary-serving",
        "version": SERVER_VERSION,
        "extensions": ["binary_tensor_data"],
        **identity(svc, rid),
    }
    return respond(svc, 200, body, rid)


async def live(svc: ModelService, request: Request) -> Response:
    return health(svc, request, "live")


async def ready(svc: ModelService, request: Request) -> Response:
    return health(svc, request, "ready")


_MODEL = {404: ERROR, 503: ERROR}
_INFER = {200: "InferenceResponse", 404: ERROR, **BODY_ERRORS}
_INFER_DESCRIPTION = (
    "Send one tensor of shape `[rows, n_features]` (or `[n_features]`) with `data` flat in row-major "
    "order or nested exactly as the shape says, or one tensor per feature named after it, of shape "
    "`[rows]` or `[rows, 1]`. Any numeric datatype; values must fit it. `outputs` selects (and "
    "orders) the outputs returned. The binary tensor data extension is supported (the JSON request of "
    "`Inference-Header-Content-Length` bytes, then the raw little-endian bytes of each input with "
    "`parameters.binary_data_size`); outputs are sent as binary data when `binary_data_output` or an "
    "output's `binary_data` asks for it. gzip and deflate request bodies (`Content-Encoding`) are accepted."
)

ROUTES = (
    Route("/v2/models/{name}/infer", "POST", infer, "v2_infer", "Inference (OIP v2)", "v2", _INFER,
          request_body="InferenceRequest", description=_INFER_DESCRIPTION),
    Route("/v2/models/{name}/versions/{version}/infer", "POST", infer, "v2_infer_version",
          "Inference, pinned to a version (OIP v2)", "v2", _INFER, request_body="InferenceRequest",
          description=_INFER_DESCRIPTION),
    Route("/v2/models/{name}", "GET", model_metadata, "v2_model_metadata", "Model metadata (OIP v2)", "v2",
          {200: "ModelMetadata", **_MODEL}),
    Route("/v2/models/{name}/versions/{version}", "GET", model_metadata, "v2_model_version_metadata",
          "Model metadata of a version (OIP v2)", "v2", {200: "ModelMetadata", **_MODEL}),
    Route("/v2/models/{name}/ready", "GET", model_ready, "v2_model_ready", "Model readiness (OIP v2)", "v2",
          {200: "ModelReady", **_MODEL}),
    Route("/v2/models/{name}/versions/{version}/ready", "GET", model_ready, "v2_model_version_ready",
          "Readiness of a model version (OIP v2)", "v2", {200: "ModelReady", **_MODEL}),
    Route("/v2", "GET", server_metadata, "v2_server_metadata", "Server metadata (OIP v2)", "v2",
          {200: "ServerMetadata"}),
    Route("/v2/health/live", "GET", live, "v2_live", "Server liveness (OIP v2)", "v2", {200: "Health"}),
    Route("/v2/health/ready", "GET", ready, "v2_ready", "Server readiness (OIP v2)", "v2",
          {200: "Health", 503: "Health"}),
)  # fmt: skip
