"""The one path of every prediction endpoint: faults, body, parse, predict, render, metrics.

It works on the raw ASGI scope: ``app.ServingApp`` dispatches ``POST /predict`` and
``POST /v2/models/{name}[/versions/{v}]/infer`` here *before* FastAPI (no routing, middleware,
``Request``/``Response`` objects or header dictionaries on the hot path); the same function serves
the FastAPI routes of the routes table (``answer_as_response``), which only see these requests when
the app is mounted under a ``root_path``.

Phases, and who is at fault when one fails: readiness (503, not counted: no model to label it
with), the model name in the URL (404), injected faults (500, counted as server_error), reading the
body and validating it (the client's input: always 4xx, see ``errors.parse_input``), running the
model and rendering the answer (the server: 500, server_error). Every failure is answered by
``errors.error_response``, the one error map.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..faults import InjectedFault
from ..protocol.errors import InputError, OutOfRange
from ..protocol.simple import Parsed, Row
from ..service import Loaded, ModelService, NotReady, new_request_id, refuse_unusable_rows
from .common import RID_KEY, decode_content, valid_request_id
from .errors import error_response, outcome_for, parse_input

RawHeaders = list[tuple[bytes, bytes]]
Check = Callable[[ModelService], None]

JSON: Final = b"application/json"


@dataclass
class Wire:
    """The request headers the prediction path reads, found in one pass over the raw list."""

    request_id: str
    content_length: bytes | None = None
    content_encoding: bytes | None = None
    header_length: bytes | None = None  # Inference-Header-Content-Length (OIP binary tensor data)


Parse = Callable[[bytes, Wire, Loaded], Parsed]
"""The (decoded) body -> validated rows; runs behind ``errors.parse_input``."""
Render = Callable[[Parsed, list[Row], Loaded, dict[str, str]], tuple[bytes, bytes, RawHeaders]]
"""Rows -> (body, content type, extra headers)."""


@dataclass(frozen=True)
class Protocol:
    """How one protocol reads a body into rows and renders rows into an answer."""

    parse: Parse
    render: Render


def read_wire(scope: Scope) -> Wire:
    sent_rid: bytes | None = None
    wire = Wire("")
    for k, v in scope["headers"]:
        if k == b"content-length":
            if wire.content_length is None:
                wire.content_length = v
        elif k == b"x-request-id":
            if sent_rid is None:
                sent_rid = v
        elif k == b"content-encoding":
            if wire.content_encoding is None:
                wire.content_encoding = v
        elif k == b"inference-header-content-length" and wire.header_length is None:
            wire.header_length = v
    rid: str | None = scope.get(RID_KEY)
    if rid is None:
        text = sent_rid.decode("latin-1") if sent_rid is not None else None
        rid = text if text is not None and valid_request_id(text) else new_request_id()
        scope[RID_KEY] = rid
    wire.request_id = rid
    return wire


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds ``limit`` (Content-Length or streamed)."""
    if content_length is not None:
        if not (content_length.isascii() and content_length.isdigit()):
            raise InputError(400, "Content-Length is not a number", "content-length", "bad_header")
        if int(content_length) > limit:
            raise InputError(
                413,
                f"body of {content_length.decode()} bytes exceeds the limit of {limit} bytes",
                "body",
                "too_large",
            )
    body = b""
    chunks: list[bytes] | None = None
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise InputError(413, f"body exceeds the limit of {limit} bytes", "body", "too_large")
            if not body:
                body = chunk
            else:
                if chunks is None:
                    chunks = [body]
                chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks) if chunks is not None else body


def identity_raw(svc: ModelService, rid: str) -> RawHeaders:
    return [
        (b"x-model-name", svc.name.encode("latin-1")),
        (b"x-model-version", svc.version.encode("latin-1")),
        (b"x-request-id", rid.encode("latin-1")),
    ]


async def answer(
    svc: ModelService, scope: Scope, receive: Receive, proto: Protocol, check: Check | None = None
) -> tuple[int, bytes, RawHeaders]:
    """Status, body and headers of the answer to one prediction request."""
    t0 = time.perf_counter()
    wire = read_wire(scope)
    rid = wire.request_id
    m = svc.model
    try:
        if m is None:
            raise NotReady(svc.reason)
        if check is not None:
            check(svc)
        faults = svc.faults
        if faults.faults.active:
            delay = faults.delay_s()
            if delay > 0:
                await asyncio.sleep(delay)
            if faults.should_fail():
                raise InjectedFault()
        limit = svc.settings.max_body_bytes
        body = await read_body(receive, wire.content_length, limit)
        if wire.content_encoding is not None:
            body = decode_content(body, wire.content_encoding.decode("latin-1"), limit)
        loaded = m
        parsed = parse_input(lambda: proto.parse(body, wire, loaded), rid)
        rows = await svc.predict(parsed.X)
        if any(r[1] != r[1] for r in rows):  # NaN != NaN: a row the model could not compute
            refuse_unusable_rows([r[1] == r[1] for r in rows], parsed.field, parsed.indexed_rows)
        if svc.settings.feedback_cache:
            svc.remember(rid, [r[0] for r in rows])
        ident = {"model_name": m.name, "model_version": m.version, "request_id": rid}
        out, content_type, extra = proto.render(parsed, rows, m, ident)
        status = 200
        headers = [
            (b"content-length", str(len(out)).encode()),
            (b"content-type", content_type),
            *identity_raw(svc, rid),
            *extra,
        ]
    except Exception as exc:
        if isinstance(exc, OutOfRange) and m is not None:
            m.metrics.out_of_range_counts(exc.counts)
        resp = error_response(svc, exc, Request(scope, receive))
        status, out, headers = resp.status_code, bytes(resp.body), resp.raw_headers
    if m is not None:
        m.metrics.request(outcome_for(status), time.perf_counter() - t0)
    return status, out, headers


async def serve(
    svc: ModelService, scope: Scope, receive: Receive, send: Send, proto: Protocol, check: Check | None = None
) -> None:
    """The raw ASGI answer (``app.ServingApp`` calls this before FastAPI sees the request)."""
    status, body, headers = await answer(svc, scope, receive, proto, check)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def answer_as_response(
    svc: ModelService, request: Request, proto: Protocol, check: Check | None = None
) -> Response:
    """The same answer as a Starlette response (the routes table's endpoints)."""
    status, body, headers = await answer(svc, request.scope, request.receive, proto, check)
    resp = Response(body, status_code=status)
    resp.raw_headers = headers
    return resp
