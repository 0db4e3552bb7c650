"""The shared path of every prediction endpoint: faults, body, parse, predict, render, metrics.

Phases, and who is at fault when one fails: readiness (503, not counted: no model to label it
with), the model name in the URL (404), injected faults (500, counted as server_error), reading the
body and validating it (the client's input: always 4xx, see ``errors.parse_input``), running the
model and rendering the answer (the server: 500, server_error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import metric_names as mn
from ..faults import InjectedFault
from ..protocol.codec import loads
from ..protocol.errors import OutOfRange
from ..protocol.simple import Parsed, Row
from ..service import Loaded, ModelService, NotReady, refuse_unusable_rows
from .common import identity, read_body, request_id, respond
from .errors import error_response, outcome_for, parse_input

Parse = Callable[[Any, Loaded], Parsed]
Render = Callable[[Parsed, list[Row], Loaded, dict[str, str]], dict[str, Any]]


async def run_prediction(
    svc: ModelService,
    request: Request,
    parse: Parse,
    render: Render,
    check: Callable[[], None] | None = None,
) -> Response:
    t0 = time.perf_counter()
    rid = request_id(request)
    m = svc.model
    try:
        if m is None:
            raise NotReady(svc.reason)
        if check is not None:
            check()
        faults = svc.faults
        if faults.faults.active:
            delay = faults.delay_s()
            if delay > 0:
                await asyncio.sleep(delay)
            if faults.should_fail():
                raise InjectedFault()
        body = await read_body(request, svc.settings.max_body_bytes)
        loaded = m
        parsed = parse_input(lambda: parse(loads(body), loaded), rid)
        rows = await svc.predict(parsed.X)
        refuse_unusable_rows([r[1] == r[1] for r in rows], parsed.field, parsed.indexed_rows)  # NaN != NaN
        if svc.settings.feedback_cache:
            svc.remember(rid, [r[0] for r in rows])
        resp = respond(svc, 200, render(parsed, rows, m, identity(svc, rid)), rid)
        outcome = mn.OUTCOME_SUCCESS
    except Exception as exc:
        if isinstance(exc, OutOfRange) and m is not None:
            m.metrics.out_of_range_counts(exc.counts)
        resp = error_response(svc, exc, request)
        outcome = outcome_for(resp.status_code)
    if m is not None:
        m.metrics.request(outcome, time.perf_counter() - t0)
    return resp
