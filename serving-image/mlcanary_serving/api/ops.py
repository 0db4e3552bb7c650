"""Operations endpoints: liveness, readiness, metrics, the model card, and feedback (ground truth)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from ..metrics import multiprocess_dir
from ..protocol.codec import loads
from ..protocol.errors import InputError
from ..protocol.feedback import parse_feedback
from ..service import ModelService, finite_rows, refuse_unusable_rows
from ..workers import ask_peers
from .common import identity, identity_headers, read_body, request_id, respond
from .errors import parse_input
from .routing import ERROR, Route


def health(svc: ModelService, request: Request, kind: str) -> Response:
    rid = request_id(request)
    body: dict[str, Any] = {**identity(svc, rid), "state": svc.state}
    if kind == "live":
        return respond(svc, 200, {"live": True, **body}, rid)
    if svc.ready:
        return respond(svc, 200, {"ready": True, **body}, rid)
    return respond(svc, 503, {"ready": False, "reason": svc.reason, **body}, rid)


async def healthz(svc: ModelService, request: Request) -> Response:
    return health(svc, request, "live")


async def readyz(svc: ModelService, request: Request) -> Response:
    return health(svc, request, "ready")


async def metrics(svc: ModelService, request: Request) -> Response:
    data = await asyncio.to_thread(svc.scrape)
    return Response(data, media_type=CONTENT_TYPE_LATEST, headers=identity_headers(svc, request_id(request)))


async def model_card(svc: ModelService, request: Request) -> Response:
    m = svc.require()
    man = m.bundle.manifest
    rid = request_id(request)
    body = {
        **identity(svc, rid),
        "card": m.bundle.model_card,
        "manifest": {
            k: man.raw.get(k) for k in ("format", "created_at", "task", "classes", "training", "onnx")
        },
        "schema": m.bundle.schema.as_dict(),
        "bundle_sha256": m.bundle.manifest_sha256,
    }
    return respond(svc, 200, body, rid)


async def feedback(svc: ModelService, request: Request) -> Response:
    rid = request_id(request)
    m = svc.require()
    body = await read_body(request, svc.settings.max_body_bytes)
    fb = parse_input(lambda: parse_feedback(loads(body), m.validator), rid)
    if fb.request_id is not None:
        try:
            correct = svc.feedback_for(fb.request_id, fb.truth)
        except InputError as exc:
            forwarded = await _from_peers(exc, request, body, rid)
            if forwarded is None:
                raise
            return forwarded
    else:
        assert fb.X is not None
        pred = await asyncio.get_running_loop().run_in_executor(None, m.runtime.predict, fb.X)
        computed = finite_rows(pred)
        if computed is not None:
            refuse_unusable_rows(computed.tolist(), fb.field, fb.indexed_rows)
        correct = svc.score_feedback(pred.labels, fb.truth)
    answer = {
        **identity(svc, rid),
        "for_request_id": fb.request_id,
        "correct": correct[0] if fb.single else correct,
    }
    return respond(svc, 200, answer, rid)


async def _from_peers(exc: InputError, request: Request, body: bytes, rid: str) -> Response | None:
    """With several workers, a request id this one does not know may be another's: ask them (over
    their Unix sockets; a request that came that way is not forwarded again)."""
    directory = multiprocess_dir()
    if exc.code != "unknown_request_id" or directory is None or request.scope.get("server") is None:
        return None  # (uvicorn gives Unix-socket connections no server address)
    headers = {"content-type": "application/json", "x-request-id": rid}
    answer = await ask_peers(directory, "/feedback", body, headers)
    if answer is None:
        return None
    status, payload, raw = answer
    resp = Response(payload, status_code=status)
    resp.raw_headers = [(k, v) for k, v in raw if k not in (b"connection", b"date", b"transfer-encoding")]
    return resp


ROUTES = (
    Route("/healthz", "GET", healthz, "healthz", "Liveness", "health", {200: "Health"},
          description="200 while the process runs, even when the bundle failed to load."),
    Route("/readyz", "GET", readyz, "readyz", "Readiness", "health", {200: "Health", 503: "Health"},
          description="200 only when a verified model is loaded; 503 with `reason` otherwise."),
    Route("/metrics", "GET", metrics, "metrics", "Prometheus metrics", "health", {200: "Metrics"},
          description="Prometheus text exposition (names in `mlcanary_serving.metric_names`)."),
    Route("/model-card", "GET", model_card, "model_card", "Model card", "model",
          {200: "ModelCard", 503: ERROR},
          description="The bundle's model card (intended use, metrics, subgroups), manifest summary, schema."),
    Route("/feedback", "POST", feedback, "feedback", "Ground truth for an earlier answer", "predict",
          {200: "FeedbackResponse", 400: ERROR, 404: ERROR, 413: ERROR, 422: ERROR, 500: ERROR, 503: ERROR},
          request_body="FeedbackRequest",
          description="`request_id` of an earlier answer with `label` (or `labels` for a batch), or "
          "`features` + `label` to predict and compare in one call. Classifiers only."),
)  # fmt: skip
