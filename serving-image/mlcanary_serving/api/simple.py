"""The simple protocol: ``POST /predict`` (bodies in ``protocol.simple``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..protocol.simple import Parsed, Row, parse_simple, render_simple
from ..service import Loaded, ModelService
from .prediction import Protocol, answer_as_response
from .routing import BODY_ERRORS, Route


def _parse(obj: Any, m: Loaded) -> Parsed:
    return parse_simple(obj, m.validator)


def _render(parsed: Parsed, rows: list[Row], m: Loaded, ident: dict[str, str]) -> dict[str, Any]:
    return render_simple(parsed, rows, ident)


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
