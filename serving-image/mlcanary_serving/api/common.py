"""What every endpoint shares: the request id, the identity headers, JSON answers, bounded body reads."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from ..protocol.codec import dumps
from ..protocol.errors import InputError
from ..service import ModelService, new_request_id

JSON: Final = "application/json"
_RID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
RID_KEY: Final = "mlcanary.request_id"  # the request id, kept in the ASGI scope


def valid_request_id(sent: str) -> bool:
    return _RID_RE.match(sent) is not None


def request_id(request: Request) -> str:
    """A sane incoming ``X-Request-ID`` is reused, else a new one; the same for the whole request."""
    rid: str | None = request.scope.get(RID_KEY)
    if rid is None:
        sent = request.headers.get("x-request-id")
        rid = sent if sent is not None and valid_request_id(sent) else new_request_id()
        request.scope[RID_KEY] = rid
    return rid


def identity(svc: ModelService, rid: str) -> dict[str, str]:
    return {"model_name": svc.name, "model_version": svc.version, "request_id": rid}


def identity_headers(svc: ModelService, rid: str) -> dict[str, str]:
    return {"x-model-name": svc.name, "x-model-version": svc.version, "x-request-id": rid}


def respond(
    svc: ModelService,
    status: int,
    payload: dict[str, Any],
    rid: str,
    extra_headers: Mapping[str, str] | None = None,
) -> Response:
    headers = identity_headers(svc, rid)
    if extra_headers:
        headers.update(extra_headers)
    return Response(dumps(payload), status_code=status, media_type=JSON, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds ``limit`` (Content-Length or streamed)."""
    cl = request.headers.get("content-length")
    if cl is not None:
        if not (cl.isascii() and cl.isdigit()):
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
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding")
    return body if encoding is None else decode_content(body, encoding, limit)


# Content-Encoding -> zlib window bits: gzip, zlib-wrapped deflate (what HTTP's "deflate" means)
_WBITS: Final = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip, deflate, identity), refused with 413 as
    soon as the decompressed size exceeds ``limit``: a small compressed body cannot expand into a
    large one (no zip bombs); anything that does not decompress cleanly is a 400."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise InputError(
            400,
            f"Content-Encoding {encoding!r} is not supported (gzip, deflate or identity)",
            "content-encoding",
            "bad_header",
        )
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit:
            raise InputError(
                413, f"decompressed body exceeds the limit of {limit} bytes", "body", "too_large"
            )
        if not d.eof or d.unused_data or d.unconsumed_tail:
            raise zlib.error("truncated, or data after the end")
    except zlib.error as exc:
        raise InputError(400, f"body is not valid {coding} data ({exc})", "body", "malformed_body") from None
    return out
