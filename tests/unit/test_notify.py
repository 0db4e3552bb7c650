"""Notifications against real HTTP receivers on 127.0.0.1 that record what they get: payloads of each
provider, HMAC signatures checked as a receiver checks them, retries, a receiver that never answers,
a full queue, and secrets kept out of the logs. The reason contract is checked against the engine's
source and the docs table."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cloudevents.v1.http import from_http

from mlcanary.engine import EmitEvent
from mlcanary.models import (
    EventReason,
    Measurement,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    Verdict,
)
from mlcanary.notify.dispatch import Notifier
from mlcanary.notify.messages import SIGNATURE_HEADER
from mlcanary.operator_metrics import OperatorMetrics
from mlcanary.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
HMAC_KEY = "receiver-shared-key"


@dataclass
class Receiver:
    """An HTTP receiver that records every request; answers with ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}/hook/secret-token-abc"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def never_answering() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Accepts connections and reads them, never writes a byte back."""
    received: list[bytes] = []
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        received.append(await reader.read(65536))
        await asyncio.Event().wait()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook/never-token-xyz", received
    finally:
        for writer in held:
            writer.close()
        server.close()


class Secrets:
    def __init__(self, data: dict[str, dict[str, str]]) -> None:
        self.data = data

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        assert namespace == "ml"
        if name not in self.data:
            raise KeyError(f"secret {namespace}/{name} not found")
        return self.data[name]


def spec_with(routes: list[dict[str, Any]]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "fraud", "version": "2.0.0", "uri": "file:///m/"}, "notifications": routes}
    )


def route(provider: str, key: str, reasons: list[str], **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "reasons": reasons, "urlSecret": {"name": "hooks", "key": key}, **extra}


FAILED = Measurement(
    metric="error-rate",
    verdict=Verdict.FAILED,
    value=0.5,
    threshold="<= 0.05",
    sample_size=1200,
    time=NOW,
)
PASSED = Measurement(
    metric="latency-p99", verdict=Verdict.SUCCESSFUL, value=0.1, threshold="<= 0.5", time=NOW
)
STATUS = ModelDeploymentStatus(
    phase=Phase.ROLLING_BACK,
    stable_version="1.0.0",
    canary_version="2.0.0",
    current_step=2,
    canary_weight=0,
    last_measurements=[FAILED, PASSED],
)
ROLLING_BACK = EmitEvent("Warning", "RollingBack", "2.0.0: analysis failed: error-rate=0.5 (want <= 0.05)")


def sent(metrics: OperatorMetrics, provider: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "mlcanary_notifications_total", {"provider": provider, "result": result}
    )
    return value or 0.0


def submit(notifier: Notifier, spec: ModelDeploymentSpec, *events: EmitEvent) -> int:
    return notifier.submit(
        namespace="ml", name="fraud", uid="u-1", spec=spec, status=STATUS, events=events, now=NOW
    )


def verify_signature(headers: dict[str, str], body: bytes, key: str) -> bool:
    """What a receiver does: recompute HMAC-SHA256 over the raw body, compare in constant time."""
    expected = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get(SIGNATURE_HEADER, ""), expected)


async def test_each_provider_gets_its_payload_with_the_failing_metric() -> None:
    metrics = OperatorMetrics()
    async with (
        receiving(Receiver()) as slack,
        receiving(Receiver()) as teams,
        receiving(Receiver()) as structured,
        receiving(Receiver()) as binary,
    ):
        secrets = Secrets(
            {
                "hooks": {"slack": slack.url, "teams": teams.url, "ce": structured.url, "bin": binary.url},
                "keys": {"hmac": HMAC_KEY + "\n"},  # a trailing newline (kubectl create secret --from-file)
            }
        )
        spec = spec_with(
            [
                route("slack", "slack", ["RollingBack", "RolledBack"]),
                route("msteams", "teams", ["RollingBack"]),
                route("cloudevents", "ce", ["RollingBack"], hmacSecret={"name": "keys", "key": "hmac"}),
                route(
                    "cloudevents",
                    "bin",
                    ["RollingBack"],
                    mode="binary",
                    hmacSecret={"name": "keys", "key": "hmac"},
                ),
            ]
        )
        notifier = Notifier(secrets, metrics, timeout_seconds=2)
        notifier.start()
        try:
            # StepStarted is routed nowhere: only RollingBack goes out, once per route.
            assert submit(notifier, spec, EmitEvent("Normal", "StepStarted", "step 1"), ROLLING_BACK) == 4
            await asyncio.wait_for(notifier.drain(), 10)
        finally:
            await notifier.stop()

    [(_, slack_body)] = slack.requests
    slack_json = json.loads(slack_body)
    assert slack_json["text"].startswith("ml/fraud: RollingBack")
    slack_text = json.dumps(slack_json["blocks"])
    assert "error-rate = 0.5 (want <= 0.05), 1200 requests" in slack_text
    assert "latency-p99" not in slack_text  # only failing metrics are listed

    [(_, teams_body)] = teams.requests
    card = json.loads(teams_body)["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    facts = {f["title"]: f["value"] for f in card["content"]["body"][2]["facts"]}
    assert facts["error-rate"] == "error-rate = 0.5 (want <= 0.05), 1200 requests"
    assert facts["Canary"] == "2.0.0"

    [(headers, body)] = structured.requests
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert verify_signature(headers, body, HMAC_KEY)
    assert not verify_signature(headers, body, "another-key")
    assert not verify_signature(headers, body.replace(b"0.5", b"0.6"), HMAC_KEY)
    event = json.loads(body)
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.mlcanary.modeldeployment.RollingBack"
    assert event["source"] == "/apis/mlcanary.io/v1alpha1/namespaces/ml/modeldeployments/fraud"
    assert event["time"] == "2026-12-07T23:00:00Z"
    assert event["data"]["failedMetrics"] == [
        {"metric": "error-rate", "value": 0.5, "bound": "<= 0.05", "sampleSize": 1200, "stableValue": None}
    ]

    [(bin_headers, bin_body)] = binary.requests
    assert verify_signature(bin_headers, bin_body, HMAC_KEY)
    ce = {k.lower(): v for k, v in bin_headers.items() if k.lower().startswith("ce-")}
    assert ce["ce-specversion"] == "1.0"
    assert ce["ce-type"] == "io.mlcanary.modeldeployment.RollingBack"
    assert ce["ce-id"] == event["id"]  # the same event, the same id: receivers can deduplicate
    assert json.loads(bin_body) == event["data"]
    # The CloudEvents SDK reads both requests as the same valid CloudEvents 1.0 event.
    for parsed in (from_http(headers, body), from_http(bin_headers, bin_body)):
        assert parsed["specversion"] == "1.0" and parsed["id"] == event["id"]
        assert parsed["type"] == "io.mlcanary.modeldeployment.RollingBack"
        assert parsed["source"] == event["source"] and parsed["subject"] == "fraud"
        assert parsed.data["failedMetrics"][0]["sampleSize"] == 1200
    for provider in ("slack", "msteams"):
        assert sent(metrics, provider, "sent") == 1
    assert sent(metrics, "cloudevents", "sent") == 2


async def test_a_5xx_is_retried_with_backoff_and_a_4xx_is_not() -> None:
    metrics = OperatorMetrics()
    async with receiving(Receiver(statuses=[503, 502])) as flaky, receiving(Receiver(statuses=[404])) as gone:
        secrets = Secrets({"hooks": {"flaky": flaky.url, "gone": gone.url}})
        spec = spec_with(
            [route("slack", "flaky", ["RollingBack"]), route("msteams", "gone", ["RollingBack"])]
        )
        notifier = Notifier(secrets, metrics, attempts=3, backoff_seconds=0.01)
        notifier.start()
        try:
            submit(notifier, spec, ROLLING_BACK)
            await asyncio.wait_for(notifier.drain(), 10)
        finally:
            await notifier.stop()
    assert len(flaky.requests) == 3
    assert len({body for _, body in flaky.requests}) == 1  # every attempt sends the same payload
    assert sent(metrics, "slack", "sent") == 1
    assert len(gone.requests) == 1
    assert sent(metrics, "msteams", "failed") == 1


async def test_a_receiver_that_never_answers_costs_the_caller_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """submit() is not a coroutine: it only queues. The worker gives up after attempts x timeout."""
    metrics = OperatorMetrics()
    caplog.set_level(logging.DEBUG)
    async with never_answering() as (url, received), receiving(Receiver()) as healthy:
        secrets = Secrets({"hooks": {"dead": url, "ok": healthy.url}})
        spec = spec_with(
            [route("cloudevents", "dead", ["RollingBack"]), route("slack", "ok", ["RollingBack"])]
        )
        notifier = Notifier(secrets, metrics, timeout_seconds=0.3, attempts=2, backoff_seconds=0.01)
        notifier.start()
        try:
            assert submit(notifier, spec, ROLLING_BACK) == 2
            await asyncio.wait_for(notifier.drain(), 10)
        finally:
            await notifier.stop()
    assert len(received) == 2 and all(b"POST /hook/" in r for r in received)  # both attempts arrived
    assert sent(metrics, "cloudevents", "failed") == 1
    assert sent(metrics, "slack", "sent") == 1  # the dead receiver did not hold up the other route
    operator_side = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert "never-token-xyz" not in operator_side and "secret-token-abc" not in operator_side
    assert "attempt 2 failed: TimeoutError" in operator_side


async def test_a_dead_receiver_holds_up_only_its_own_lane() -> None:
    """Each receiver has its own sender: three notifications reach the healthy one while the first
    attempt to the dead one still hangs (it would for 30 s), and the dead one sees one at a time."""
    metrics = OperatorMetrics()
    async with never_answering() as (url, received), receiving(Receiver()) as healthy:
        secrets = Secrets({"hooks": {"dead": url, "ok": healthy.url}})
        spec = spec_with(
            [route("cloudevents", "dead", ["RollingBack"]), route("slack", "ok", ["RollingBack"])]
        )
        notifier = Notifier(secrets, metrics, timeout_seconds=30, attempts=1)
        notifier.start()
        try:
            events = [EmitEvent("Warning", "RollingBack", f"attempt {i}") for i in range(3)]
            assert submit(notifier, spec, *events) == 6
            for _ in range(200):
                if len(healthy.requests) == 3:
                    break
                await asyncio.sleep(0.02)
            assert [json.loads(b)["text"].rsplit(" ", 1)[1] for _, b in healthy.requests] == ["0", "1", "2"]
            assert len(received) == 1  # in order, one at a time: the others wait in the dead lane
            assert notifier.pending == 3
        finally:
            await notifier.stop()


async def test_a_full_queue_drops_and_counts() -> None:
    metrics = OperatorMetrics()
    spec = spec_with([route("slack", "x", ["RollingBack"])])
    notifier = Notifier(Secrets({}), metrics, queue_size=3, lane_size=2)  # not started: nothing drains
    try:
        assert submit(notifier, spec, ROLLING_BACK, ROLLING_BACK, ROLLING_BACK) == 2  # the lane's bound
        other = spec_with([route("slack", "x", ["RollingBack"]), route("msteams", "y", ["RollingBack"])])
        assert submit(notifier, other, ROLLING_BACK) == 1  # slack's lane is full, msteams' lane is new
        assert submit(notifier, other, ROLLING_BACK) == 0  # 3 pending in all: the total bound
    finally:
        await notifier.stop()
    assert sent(metrics, "slack", "dropped") == 3
    assert sent(metrics, "msteams", "dropped") == 1


async def test_a_missing_secret_key_fails_without_leaking_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = OperatorMetrics()
    caplog.set_level(logging.DEBUG)
    spec = spec_with(
        [route("cloudevents", "url", ["RollingBack"], hmacSecret={"name": "hooks", "key": "missing"})]
    )
    notifier = Notifier(Secrets({"hooks": {"url": "http://127.0.0.1:9/do-not-log"}}), metrics)
    notifier.start()
    try:
        submit(notifier, spec, ROLLING_BACK)
        await asyncio.wait_for(notifier.drain(), 10)
    finally:
        await notifier.stop()
    assert sent(metrics, "cloudevents", "failed") == 1
    assert "has no key 'missing'" in caplog.text
    assert "do-not-log" not in caplog.text


def test_hmac_and_mode_are_refused_outside_cloudevents() -> None:
    with pytest.raises(ValueError, match="hmacSecret and mode apply to the cloudevents provider only"):
        spec_with([route("slack", "x", ["RolledBack"], mode="binary")])
    with pytest.raises(ValueError, match="reasons"):
        spec_with([route("slack", "x", ["NoSuchReason"])])


def test_delivery_settings_are_bounded() -> None:
    assert Settings.from_env({"MLCANARY_NOTIFY_TIMEOUT_SECONDS": "3600"}).notify_timeout_seconds == 60
    for name, value in (
        ("ATTEMPTS", "0"),
        ("ATTEMPTS", "11"),
        ("QUEUE_SIZE", "0"),
        ("TIMEOUT_SECONDS", "-1"),
    ):
        with pytest.raises(ValueError, match=f"MLCANARY_NOTIFY_{name}"):
            Settings.from_env({f"MLCANARY_NOTIFY_{name}": value})


def _engine_reasons() -> set[str]:
    """Every reason the engine and the retraining core emit: tick.event("X", ...) and
    EmitEvent(type, "X" or EventReason.X, ...), plus the reasons passed to _start_step / _begin_rollback."""
    reasons = _reasons_in(REPO / "operator/mlcanary/engine.py")
    return reasons | _reasons_in(REPO / "operator/mlcanary/retraining/core.py")


def _reasons_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    reasons: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if name == "event" and node.args and isinstance(node.args[0], ast.Constant):
            reasons.add(str(node.args[0].value))
        elif name == "EmitEvent" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            reasons.add(str(node.args[1].value))
        elif (
            name == "EmitEvent"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Attribute)
            and isinstance(node.args[1].value, ast.Name)
            and node.args[1].value.id == "EventReason"
        ):
            reasons.add(EventReason[node.args[1].attr].value)
        elif name in ("_start_step", "_begin_rollback"):
            reasons.update(a for a in args if re.fullmatch(r"[A-Z][A-Za-z]+", a))
    for node in ast.walk(tree):  # the defaults of the reason parameters
        if isinstance(node, ast.FunctionDef) and node.name in ("_start_step", "_begin_rollback"):
            reasons.update(str(d.value) for d in node.args.defaults if isinstance(d, ast.Constant))
    return reasons


def _registry_reasons() -> set[str]:
    """The reasons spec.model.registry emits (EventReason.X in the registry package)."""
    reasons: set[str] = set()
    for module in ("core", "sync"):
        tree = ast.parse((REPO / f"operator/mlcanary/registry/{module}.py").read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "EventReason"
            ):
                reasons.add(EventReason[node.attr].value)
    return reasons


def test_the_reason_contract_matches_the_engine_and_the_docs() -> None:
    declared = {r.value for r in EventReason}
    assert _engine_reasons() | _registry_reasons() == declared
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", (REPO / "docs/notifications.md").read_text(), re.M))
    assert declared <= documented
