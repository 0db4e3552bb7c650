"""The one map from an exception to an HTTP answer, used by every endpoint and by the router.

| exception | status | ``code`` |
|---|---|---|
| ``InputError`` (the request's own fault) | its 4xx | its code |
| router ``HTTPException`` (unknown path, wrong method) | 404 / 405 | http_error |
| ``NotReady`` (no verified model) | 503 | not_ready |
| ``InjectedFault`` (MLCANARY_FAULT_ERROR_RATE) | 500 | injected_fault |
| anything else (logged with the request id) | 500 | internal |

The prediction endpoints count each answer under ``outcome_for(status)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import metric_names as mn
from ..faults import InjectedFault
from ..protocol.errors import InputError
from ..service import ModelService, NotReady
from .common import identity, request_id, respond

log = logging.getLogger("mlcanary_serving")


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    message: str
    field: str | None
    code: str


def answer_for(exc: Exception, request: Request) -> ErrorAnswer:
    if isinstance(exc, InputError):
        return ErrorAnswer(exc.status, exc.message, exc.field, exc.code)
    if isinstance(exc, HTTPException):
        where = "path" if exc.status_code in (404, 405) else None
        return ErrorAnswer(
            exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", where, "http_error"
        )
    if isinstance(exc, NotReady):
        return ErrorAnswer(503, f"model not ready: {exc}", None, "not_ready")
    if isinstance(exc, InjectedFault):
        return ErrorAnswer(500, "injected fault (MLCANARY_FAULT_ERROR_RATE)", None, "injected_fault")
    return ErrorAnswer(500, f"internal error: {type(exc).__name__}", None, "internal")


def outcome_for(status: int) -> str:
    """The ``outcome`` label of a prediction answered with ``status``."""
    if status < 400:
        return mn.OUTCOME_SUCCESS
    return mn.OUTCOME_CLIENT_ERROR if status < 500 else mn.OUTCOME_SERVER_ERROR


def error_response(svc: ModelService, exc: Exception, request: Request) -> Response:
    rid = request_id(request)
    answer = answer_for(exc, request)
    if answer.code == "internal":
        log.error("%s %s failed (request %s)", request.method, request.url.path, rid, exc_info=exc)
    body = {"error": answer.message, "field": answer.field, "code": answer.code, **identity(svc, rid)}
    return respond(svc, answer.status, body, rid)
