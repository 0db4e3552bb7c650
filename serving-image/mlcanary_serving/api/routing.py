"""A route: path, method, endpoint, and what the OpenAPI document says about it.

Endpoints are plain ``async def endpoint(svc, request) -> Response`` functions in the protocol
modules (``simple``, ``v2``, ``ops``); ``app.create_app`` binds them to the service, and
``openapi`` generates the document from the same table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from ..service import ModelService

Endpoint = Callable[[ModelService, Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    path: str
    method: Literal["GET", "POST"]
    endpoint: Endpoint
    operation_id: str
    summary: str
    tag: str
    request_body: str | None = None  # request schema name (JSON body)
    description: str = ""
