"""The one map from an exception to an HTTP answer, used by every endpoint and by the router.

| exception | status | ``code`` | ``outcome`` |
|---|---|---|---|
| ``InputError`` (the request's own fault) | its 4xx | its code | client_error |
| ``ClientDisconnect`` (the client left mid-body) | 400 | client_disconnected | client_error |
| router ``HTTPException`` (unknown path, wrong method; ``Allow`` kept) | 404 / 405 | http_error | - |
| ``NotReady`` (no verified model) | 503 | not_ready | (not counted) |
| ``InjectedFault`` (MLCANARY_FAULT_ERROR_RATE) | 500 | injected_fault | server_error |
| anything else (a model or server failure, logged with the request id) | 500 | internal | server_error |

Client input cannot reach the last row: parsing runs behind ``parse_input``, which turns any
exception raised while reading the client's data into a 400 (and logs it as a bug), so
``outcome="server_error"`` (the series the error-rate gate reads) counts only the server's faults.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .. import metric_names as mn
from ..faults import InjectedFault
from ..protocol.errors import InputError
from ..service import ModelService, NotReady
from .common import identity, request_id, respond

log = logging.getLogger("mlcanary_serving")

T = TypeVar("T")


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    message: str
    field: str | None
    code: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def answer_for(exc: Exception, request: Request) -> ErrorAnswer:
    if isinstance(exc, InputError):
        return ErrorAnswer(exc.status, exc.message, exc.field, exc.code)
    if isinstance(exc, ClientDisconnect):
        return ErrorAnswer(400, "client disconnected before the body was read", "body", "client_disconnected")
    if isinstance(exc, HTTPException):
        where = "path" if exc.status_code in (404, 405) else None
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return ErrorAnswer(exc.status_code, message, where, "http_error", exc.headers or {})
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
    return respond(svc, answer.status, body, rid, answer.headers)


def parse_input(parse: Callable[[], T], rid: str) -> T:
    """Run a parser over client data: its refusals pass through; anything else it raises is still
    about the client's input (a validation gap, logged as a bug), so it answers 400, never 500."""
    try:
        return parse()
    except InputError:
        raise
    except Exception as exc:
        log.error("request %s: validating the input raised %s; answering 400 (a bug: please report it)",
                  rid, type(exc).__name__, exc_info=exc)  # fmt: skip
        raise InputError(
            400, f"the request could not be interpreted ({type(exc).__name__})", "body", "invalid_input"
        ) from exc
