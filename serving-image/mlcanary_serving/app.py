"""The app factory: the routes table, the error map, the lifespan that loads the bundle.

Endpoints live in ``api/`` by protocol (``simple``: /predict; ``v2``: Open Inference Protocol;
``ops``: health, readiness, metrics, model card, feedback). They take the raw body (no pydantic):
orjson parses it, ``protocol`` validates it into a float matrix, and the answer is serialised by
orjson. Every response carries the model name and version (body and ``X-Model-Name`` /
``X-Model-Version`` headers) and a request id (``request_id`` / ``X-Request-ID``; a sane incoming
``X-Request-ID`` is reused). Every failure goes through ``api.errors``. The OpenAPI document is
generated from the same routes table (``api.openapi``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .api import ops, simple, v2
from .api.errors import error_response
from .api.openapi import openapi_document
from .api.prediction import serve
from .api.routing import Endpoint, Route
from .service import ModelService
from .settings import Settings

ROUTES: tuple[Route, ...] = (*simple.ROUTES, *v2.ROUTES, *ops.ROUTES)

TITLE = "mlcanary model server"
SUMMARY = "Serves one model bundle: simple JSON and Open Inference Protocol v2, with canary metrics."


class ServingApp(FastAPI):
    """FastAPI for the document, the docs page and every route but the prediction routes, which are
    answered before FastAPI sees them (``api.prediction``: the same answers without routing,
    middleware and request/response objects). The OpenAPI document is ours (``api.openapi``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            if path == "/predict":
                return await serve(self.service, scope, receive, send, simple.SIMPLE)
            if path.startswith("/v2/models/"):
                where = v2.infer_path(path)
                if where is not None:
                    name, version = where
                    await serve(
                        self.service, scope, receive, send, v2.V2, lambda s: v2.check_name(s, name, version)
                    )
                    return None
        await super().__call__(scope, receive, send)

    def __init__(self, service: ModelService, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self._document: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        if self._document is not None:
            return self._document
        document = openapi_document(ROUTES, self.service, TITLE, v2.SERVER_VERSION, SUMMARY)
        if self.service.ready:  # the loaded bundle shapes the document: final from now on
            self._document = document
        return document


def _bind(endpoint: Endpoint, svc: ModelService) -> Any:
    async def handle(request: Request) -> Response:
        try:
            return await endpoint(svc, request)
        except Exception as exc:
            return error_response(svc, exc, request)

    return handle


def create_app(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    load_in_background: bool = True,
) -> FastAPI:
    """Build the ASGI app. ``registry``: inject a CollectorRegistry (tests); default: a fresh one."""
    svc = ModelService(settings or Settings.from_env(), registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(asyncio.to_thread(svc.load))
        if not load_in_background:
            await task
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
            svc.close()

    app = ServingApp(svc, title=TITLE, version=v2.SERVER_VERSION, summary=SUMMARY, lifespan=lifespan)
    app.state.service = svc
    for route in ROUTES:
        app.router.add_route(
            route.path, _bind(route.endpoint, svc), methods=[route.method], name=route.operation_id
        )

    async def http_error(request: Request, exc: Exception) -> Response:  # unknown path, wrong method
        return error_response(svc, exc, request)

    app.add_exception_handler(HTTPException, http_error)
    return app
