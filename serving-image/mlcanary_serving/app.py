"""HTTP adapter (FastAPI): the simple protocol, Open Inference Protocol v2, health, metrics.

Prediction handlers take the raw body (no pydantic model): orjson parses it, ``protocol``
validates it into a float matrix in a few vectorised steps, and the answer is serialised by
orjson. Every response carries the model name and version (body and ``X-Model-Name`` /
``X-Model-Version`` headers) and a request id (``request_id`` / ``X-Request-ID``; a sane incoming
``X-Request-ID`` is reused).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from . import metric_names as mn
from .protocol import InputError, OutOfRange, Parsed, Validator, dumps, loads, parse_simple, parse_v2
from .service import ModelService, NotReady, Row, new_request_id
from .settings import Settings

log = logging.getLogger("mlcanary_serving")

JSON = "application/json"
_RID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

try:
    SERVER_VERSION = metadata.version("mlcanary")
except metadata.PackageNotFoundError:  # pragma: no cover
    SERVER_VERSION = "0"

_NUM = {"type": "number"}
_ROW = {"oneOf": [{"type": "array", "items": _NUM}, {"type": "object", "additionalProperties": _NUM}]}
PREDICT_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "features": {"oneOf": [_ROW, {"type": "array", "items": _ROW}]},
                        "instances": {"type": "array", "items": _ROW},
                    },
                },
                "example": {"features": [14.1, 19.3, 91.9]},
            }
        },
    }
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "data": {"type": "array"},
    },
}
INFER_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {"id": {"type": "string"}, "inputs": {"type": "array", "items": _TENSOR}},
                }
            }
        },
    }
}
FEEDBACK_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "request_id": {"type": "string"},
                        "label": {},
                        "labels": {"type": "array"},
                        "features": {"oneOf": [_ROW, {"type": "array", "items": _ROW}]},
                    },
                }
            }
        },
    }
}


def create_app(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    load_in_background: bool = True,
) -> FastAPI:
    """Build the ASGI app. ``registry``: inject a CollectorRegistry (tests); default: a fresh one."""
    settings = settings or Settings.from_env()
    svc = ModelService(settings, registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if load_in_background:
            task = asyncio.create_task(asyncio.to_thread(svc.load))
        else:
            await asyncio.to_thread(svc.load)
        try:
            yield
        finally:
            if load_in_background and not task.done():
                task.cancel()
            svc.close()

    app = FastAPI(
        title="mlcanary model server",
        version=SERVER_VERSION,
        summary="Serves one model bundle: simple JSON and Open Inference Protocol v2, with canary metrics.",
        lifespan=lifespan,
    )
    app.state.service = svc

    def headers(rid: str) -> dict[str, str]:
        return {"x-model-name": svc.name, "x-model-version": svc.version, "x-request-id": rid}

    def respond(status: int, payload: dict[str, Any], rid: str) -> Response:
        return Response(dumps(payload), status_code=status, media_type=JSON, headers=headers(rid))

    def error(status: int, message: str, rid: str, field: str | None = None, code: str = "error") -> Response:
        return respond(
            status,
            {
                "error": message,
                "field": field,
                "code": code,
                "model_name": svc.name,
                "model_version": svc.version,
                "request_id": rid,
            },
            rid,
        )

    def request_id(request: Request) -> str:
        rid = request.headers.get("x-request-id")
        return rid if rid is not None and _RID_RE.match(rid) else new_request_id()

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        cl = request.headers.get("content-length")
        if cl is not None:
            if not cl.isdigit():
                raise InputError(400, "Content-Length is not a number", "content-length", "bad_header")
            if int(cl) > limit:
                raise InputError(
                    413, f"body of {cl} bytes exceeds the limit of {limit} bytes", "body", "too_large"
                )
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise InputError(413, f"body exceeds the limit of {limit} bytes", "body", "too_large")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def run_prediction(
        request: Request,
        parse: Callable[[Any, Validator], Parsed],
        render: Callable[[Parsed, list[Row], str], dict[str, Any]],
        check: Callable[[], None] | None = None,
    ) -> Response:
        """Shared path of /predict and /v2/.../infer: faults, body, parse, predict, metrics."""
        t0 = time.perf_counter()
        rid = request_id(request)
        m = svc.model
        outcome = mn.OUTCOME_SUCCESS
        try:
            if m is None:
                raise NotReady(svc.reason)
            if check is not None:
                check()
            faults = svc.faults
            if faults.faults.active:
                delay = faults.delay_s()
                if delay > 0:
                    await asyncio.sleep(delay)
                if faults.should_fail():
                    outcome = mn.OUTCOME_SERVER_ERROR
                    resp = error(
                        500, "injected fault (MLCANARY_FAULT_ERROR_RATE)", rid, None, "injected_fault"
                    )
                    m.metrics.request(outcome, time.perf_counter() - t0)
                    return resp
            parsed = parse(loads(await read_body(request)), m.validator)
            rows = await svc.predict(parsed.X)
            if settings.feedback_cache:
                svc.remember(rid, [r[0] for r in rows])
            resp = respond(200, render(parsed, rows, rid), rid)
        except InputError as exc:
            outcome = mn.OUTCOME_CLIENT_ERROR
            if isinstance(exc, OutOfRange) and m is not None:
                m.metrics.out_of_range_counts(exc.counts)
            resp = error(exc.status, exc.message, rid, exc.field, exc.code)
        except NotReady as exc:
            outcome = mn.OUTCOME_SERVER_ERROR
            resp = error(503, f"model not ready: {exc}", rid, None, "not_ready")
        except Exception as exc:
            outcome = mn.OUTCOME_SERVER_ERROR
            log.exception("prediction failed (request %s)", rid)
            resp = error(500, f"internal error: {type(exc).__name__}", rid, None, "internal")
        if m is not None:
            m.metrics.request(outcome, time.perf_counter() - t0)
        return resp

    # ------------------------------------------------------------------------ simple protocol
    def render_simple(parsed: Parsed, rows: list[Row], rid: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model_name": svc.name, "model_version": svc.version, "request_id": rid}
        if parsed.batch:
            out["predictions"] = [r[0] for r in rows]
            out["scores"] = [r[1] for r in rows]
            if rows and rows[0][2] is not None:
                out["probabilities"] = [r[2] for r in rows]
        else:
            label, score, proba = rows[0]
            out["prediction"] = label
            out["score"] = score
            if proba is not None:
                out["probabilities"] = proba
        return out

    @app.post("/predict", openapi_extra=PREDICT_SCHEMA, tags=["predict"])
    async def predict(request: Request) -> Response:
        """Predict one row (`{"features": [...]}` or by name) or a batch (a list of rows)."""
        return await run_prediction(request, parse_simple, render_simple)

    # ------------------------------------------------------------------------ feedback
    @app.post("/feedback", openapi_extra=FEEDBACK_SCHEMA, tags=["predict"])
    async def feedback(request: Request) -> Response:
        """Ground truth for an earlier request id (`label`/`labels`), or for `features` + `label`."""
        rid = request_id(request)
        try:
            m = svc.require()
            obj = loads(await read_body(request))
            if type(obj) is not dict:
                raise InputError(422, "request body must be a JSON object", "body", "wrong_type")
            if "label" in obj and "labels" in obj:
                raise InputError(422, "send either 'label' or 'labels', not both", "labels", "ambiguous")
            if "labels" in obj:
                truth = obj["labels"]
                if type(truth) is not list or not truth:
                    raise InputError(422, "labels: expected a non-empty array", "labels", "wrong_type")
            elif "label" in obj:
                truth = [obj["label"]]
            else:
                raise InputError(422, "missing field 'label' (or 'labels')", "label", "missing_field")
            for i, t in enumerate(truth):
                if type(t) not in (int, float, str, bool):
                    f = "label" if "label" in obj else f"labels[{i}]"
                    raise InputError(422, f"{f}: expected a class label", f, "wrong_type")
            if "request_id" in obj:
                target = obj["request_id"]
                if type(target) is not str:
                    raise InputError(422, "request_id: expected a string", "request_id", "wrong_type")
                correct = svc.feedback_for(target, truth)
            elif "features" in obj or "instances" in obj:
                parsed = parse_simple(obj, m.validator)
                if parsed.X.shape[0] != len(truth):
                    raise InputError(
                        422, f"{parsed.X.shape[0]} rows but {len(truth)} labels", "labels", "wrong_count"
                    )
                X = parsed.X
                pred = await asyncio.get_running_loop().run_in_executor(None, m.runtime.predict, X)
                target = None
                correct = svc.score_feedback(pred.labels, truth)
            else:
                raise InputError(
                    422, "missing field 'request_id' (or 'features')", "request_id", "missing_field"
                )
        except InputError as exc:
            return error(exc.status, exc.message, rid, exc.field, exc.code)
        except NotReady as exc:
            return error(503, f"model not ready: {exc}", rid, None, "not_ready")
        except Exception as exc:
            log.exception("feedback failed (request %s)", rid)
            return error(500, f"internal error: {type(exc).__name__}", rid, None, "internal")
        return respond(
            200,
            {
                "model_name": svc.name,
                "model_version": svc.version,
                "request_id": rid,
                "for_request_id": target,
                "correct": correct if len(correct) > 1 or "labels" in obj else correct[0],
            },
            rid,
        )

    # ------------------------------------------------------------------------ OIP v2
    def check_model(name: str, version: str | None) -> None:
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

    def render_v2(parsed: Parsed, rows: list[Row], rid: str) -> dict[str, Any]:
        m = svc.require()
        n = len(rows)
        labels = [r[0] for r in rows]
        outputs: list[dict[str, Any]] = []
        if m.bundle.manifest.task == "classification":
            dt = "BYTES" if labels and isinstance(labels[0], str) else "INT64"
            if labels and isinstance(labels[0], float):
                dt = "FP64"
            outputs.append({"name": "label", "shape": [n], "datatype": dt, "data": labels})
            if rows and rows[0][2] is not None:
                k = len(rows[0][2] or [])
                flat = [p for r in rows for p in (r[2] or [])]
                outputs.append({"name": "probabilities", "shape": [n, k], "datatype": "FP64", "data": flat})
            outputs.append({"name": "score", "shape": [n], "datatype": "FP64", "data": [r[1] for r in rows]})
        else:
            outputs.append({"name": "prediction", "shape": [n], "datatype": "FP64", "data": labels})
        return {
            "model_name": svc.name,
            "model_version": svc.version,
            "id": parsed.request_id or rid,
            "request_id": rid,
            "outputs": outputs,
        }

    async def infer(request: Request, name: str, version: str | None) -> Response:
        return await run_prediction(request, parse_v2, render_v2, lambda: check_model(name, version))

    @app.post("/v2/models/{name}/infer", openapi_extra=INFER_SCHEMA, tags=["v2"])
    async def v2_infer(request: Request, name: str) -> Response:
        """Open Inference Protocol v2 inference."""
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=INFER_SCHEMA, tags=["v2"])
    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        """Open Inference Protocol v2 inference, pinned to a version."""
        return await infer(request, name, version)

    def guarded(fn: Callable[[str], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            rid = request_id(request)
            try:
                return respond(200, fn(rid), rid)
            except InputError as exc:
                return error(exc.status, exc.message, rid, exc.field, exc.code)
            except NotReady as exc:
                return error(503, f"model not ready: {exc}", rid, None, "not_ready")

        return handler

    def model_metadata(name: str, version: str | None, rid: str) -> dict[str, Any]:
        m = svc.require()
        check_model(name, version)
        man = m.bundle.manifest
        platform = "onnxruntime" if man.format == "onnx" else "sklearn"
        outputs = (
            [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(man.classes)]},
                {"name": "score", "datatype": "FP64", "shape": [-1]},
            ]
            if man.task == "classification"
            else [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        )
        return {
            "name": svc.name,
            "versions": [svc.version],
            "platform": platform,
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, len(m.validator.names)]}],
            "outputs": outputs,
            "parameters": {
                "feature_names": m.validator.names,
                "classes": man.classes,
                "task": man.task,
                "bundle_sha256": m.bundle.manifest_sha256,
            },
            "model_name": svc.name,
            "model_version": svc.version,
            "request_id": rid,
        }

    @app.get("/v2/models/{name}", tags=["v2"])
    async def v2_model(request: Request, name: str) -> Response:
        return await guarded(lambda rid: model_metadata(name, None, rid))(request)

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"])
    async def v2_model_version(request: Request, name: str, version: str) -> Response:
        return await guarded(lambda rid: model_metadata(name, version, rid))(request)

    def model_ready(name: str, version: str | None, rid: str) -> dict[str, Any]:
        svc.require()
        check_model(name, version)
        return {
            "name": svc.name,
            "ready": True,
            "model_name": svc.name,
            "model_version": svc.version,
            "request_id": rid,
        }

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def v2_model_ready(request: Request, name: str) -> Response:
        return await guarded(lambda rid: model_ready(name, None, rid))(request)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"])
    async def v2_model_version_ready(request: Request, name: str, version: str) -> Response:
        return await guarded(lambda rid: model_ready(name, version, rid))(request)

    @app.get("/v2", tags=["v2"])
    async def v2_server(request: Request) -> Response:
        rid = request_id(request)
        return respond(
            200,
            {
                "name": "mlcanary-serving",
                "version": SERVER_VERSION,
                "extensions": [],
                "model_name": svc.name,
                "model_version": svc.version,
                "request_id": rid,
            },
            rid,
        )

    def health(kind: str, rid: str) -> Response:
        body = {
            "model_name": svc.name,
            "model_version": svc.version,
            "request_id": rid,
            "state": svc.state,
        }
        if kind == "live":
            return respond(200, {"live": True, **body}, rid)
        if svc.ready:
            return respond(200, {"ready": True, **body}, rid)
        return respond(503, {"ready": False, "reason": svc.reason, **body}, rid)

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live(request: Request) -> Response:
        return health("live", request_id(request))

    @app.get("/v2/health/ready", tags=["v2"])
    async def v2_ready(request: Request) -> Response:
        return health("ready", request_id(request))

    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> Response:
        """Liveness: 200 while the process runs, even when the bundle failed to load."""
        return health("live", request_id(request))

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> Response:
        """Readiness: 200 only when a verified model is loaded."""
        return health("ready", request_id(request))

    @app.get("/model-card", tags=["model"])
    async def model_card(request: Request) -> Response:
        """The bundle's model card (intended use, metrics, subgroups) and manifest summary."""

        def card(rid: str) -> dict[str, Any]:
            m = svc.require()
            man = m.bundle.manifest
            return {
                "model_name": svc.name,
                "model_version": svc.version,
                "request_id": rid,
                "card": m.bundle.model_card,
                "manifest": {
                    k: man.raw.get(k) for k in ("format", "created_at", "task", "classes", "training", "onnx")
                },
                "schema": m.bundle.schema.as_dict(),
                "bundle_sha256": m.bundle.manifest_sha256,
            }

        return await guarded(card)(request)

    @app.get("/metrics", tags=["health"])
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition (names in mlcanary_serving.metric_names)."""
        rid = request_id(request)
        data = await asyncio.to_thread(generate_latest, svc.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST, headers=headers(rid))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        rid = request_id(request)
        field = "path" if exc.status_code in (404, 405) else None
        msg = f"{exc.detail}: {request.method} {request.url.path}"
        return error(exc.status_code, msg, rid, field, "http_error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        rid = request_id(request)
        errs = exc.errors()
        loc = ".".join(str(p) for p in errs[0]["loc"]) if errs else None
        return error(422, str(errs[0]["msg"]) if errs else "invalid request", rid, loc, "invalid_request")

    return app
