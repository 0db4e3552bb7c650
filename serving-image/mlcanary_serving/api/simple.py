"""The simple protocol: ``POST /predict`` (bodies in ``protocol.simple``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..protocol.codec import dumps, loads
from ..protocol.simple import Parsed, Row, parse_simple, render_simple
from ..service import Loaded, ModelService
from .prediction import JSON, Protocol, RawHeaders, Wire, answer_as_response
from .routing import BODY_ERRORS, Route


def _parse(body: bytes, wire: Wire, m: Loaded) -> Parsed:
    return parse_simple(loads(body), m.validator)


def _render(
    parsed: Parsed, rows: list[Row], m: Loaded, ident: dict[str, str]
) -> tuple[bytes, bytes, RawHeaders]:
    return dumps(render_simple(parsed, rows, ident)), JSON, []


SIMPLE = Protocol(_parse, _render)


async def predict(svc: ModelService, request: Request) -> Response:
    return await answer_as_response(svc, request, SIMPLE)


ROUTES = (
    Route(
        "/predict",
        "POST",
        predict,
        "predict",
        "Predict one row or a batch",
        "predict",
        {200: "PredictResponse", **BODY_ERRORS},
        request_body="PredictRequest",
        description="One row (`features` as an array in schema order, or an object by feature name; "
        "optional features may be left out) or a batch (an array of rows, all of one kind). "
        "`instances` is accepted instead of `features`. A batch is answered with lists.",
    ),
)
