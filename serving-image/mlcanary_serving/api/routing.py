"""A route: path, method, endpoint, and what the OpenAPI document says about it.

Endpoints are plain ``async def endpoint(svc, request) -> Response`` functions in the protocol
modules (``simple``, ``v2``, ``ops``); ``app.create_app`` binds them to the service. Each route
lists every status it can answer with the schema of that answer (a key of
``openapi.RESPONSE_SCHEMAS``), so the document is generated from the same table that routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from starlette.requests import Request
from starlette.responses import Response

from ..service import ModelService

Endpoint = Callable[[ModelService, Request], Awaitable[Response]]

ERROR: Final = "Error"
# errors of an endpoint that reads a body and runs the model
BODY_ERRORS: Final = {400: ERROR, 413: ERROR, 422: ERROR, 500: ERROR, 503: ERROR}


@dataclass(frozen=True)
class Route:
    path: str
    method: Literal["GET", "POST"]
    endpoint: Endpoint
    operation_id: str
    summary: str
    tag: str
    responses: Mapping[int, str]  # status -> response schema name
    request_body: str | None = None  # request schema name (JSON body)
    description: str = ""
