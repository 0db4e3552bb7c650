"""spec.retraining's objects and requests: the Job and CronJob valid for Kubernetes 1.29 and 1.37, the
batched PromQL, and the signed CloudEvent delivered to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from mlcanary.analysis.promql import parse
from mlcanary.models import ModelDeploymentSpec, RetrainWebhook
from mlcanary.resources import Owner
from mlcanary.retraining import objects
from mlcanary.retraining import queries as rq
from mlcanary.retraining.monitor import WebhookSender
from mlcanary.retraining.requests import TrainingRequest

KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
OWNER = Owner(name="fraud-detector", namespace="ml", uid="0b4c3f9e-1111-2222-3333-444455556666")
SPEC = ModelDeploymentSpec.model_validate(
    {
        "model": {"name": "fraud-detector", "version": "2.0.0", "uri": "file:///m"},
        "retraining": {
            "schedule": "0 3 * * 0",
            "timeZone": "Europe/Paris",
            "jobTemplate": {
                "image": "trainer:1.4.0",
                "command": ["python", "-m", "train"],
                "args": ["--recent", "$(WINDOW)"],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}],
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                "serviceAccountName": "trainer",
                "activeDeadline": "2h",
            },
            "triggers": {"inputDrift": {"threshold": 0.25, "for": "1h"}},
        },
    }
)


def built() -> list[dict[str, Any]]:
    job = objects.training_job(
        OWNER,
        SPEC,
        "fraud-detector-retrain-1767225600",
        "2.0.0",
        "inputDrift 0.4 > 0.25",
        {"inputDrift": 0.4},
    )
    return [job, objects.training_cronjob(OWNER, SPEC, "2.0.0")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_job_and_cronjob_validate_strictly(version: str) -> None:
    """In process, as tests/chart does: a missing schema raises, so every object is really checked."""
    import kubernetes_validate
    import kubernetes_validate.utils

    assert version in kubernetes_validate.utils.all_versions()
    for obj in built():
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_run_is_told_what_it_needs_and_the_schedule_runs_one_at_a_time() -> None:
    job, cronjob = built()
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL"] == "fraud-detector" and env["STABLE_VERSION"] == "2.0.0"
    assert env["REASON"] == "inputDrift 0.4 > 0.25" and env["WINDOW"] == "1h"
    assert env["METRIC_INPUT_DRIFT"] == "0.4" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert job["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert cronjob["spec"]["timeZone"] == "Europe/Paris" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["metadata"]["name"]) <= objects.MAX_CRONJOB_NAME
    labels = cronjob["spec"]["jobTemplate"]["metadata"]["labels"]
    assert labels[objects.LABEL_RETRAIN] == "schedule"  # the operator sees the schedule's runs


def test_training_pods_are_never_selected_by_the_models_services() -> None:
    """The entry Service selects the model-deployment label (every revision's pods behind the
    replicas router): a running training pod must not carry it, or it would get prediction traffic."""
    from mlcanary.resources import entry_service

    job, cronjob = built()
    selector = entry_service(OWNER, SPEC, None)["spec"]["selector"]
    for pod_labels in (
        job["spec"]["template"]["metadata"]["labels"],
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ):
        assert not selector.items() <= pod_labels.items()
        assert pod_labels[objects.LABEL_TRAINING_FOR] == OWNER.name
    # The Jobs themselves carry it: the operator's informer finds them by it.
    assert job["metadata"]["labels"]["mlcanary.io/model-deployment"] == OWNER.name
    assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"]["mlcanary.io/model-deployment"] == OWNER.name


def test_one_query_per_kind_for_every_object_and_values_escaped() -> None:
    subs = [
        rq.Subscription("a", 'evil"} or vector(1)', "1.0.0", frozenset({"inputDrift", "accuracyDrop"}), "1h"),
        rq.Subscription("b", "fraud", "2.0.0", frozenset({"inputDrift", "predictionDrift"}), "1h"),
        rq.Subscription("c", "churn", "3.0.0", frozenset({"accuracyDrop"}), "6h"),
    ]
    batch = rq.batch_queries(subs, "namespace")
    assert [(q.kind, q.window) for q in batch] == [
        ("inputDrift", None),
        ("predictionDrift", None),
        ("accuracyDrop", "1h"),
        ("accuracyDrop", "6h"),
    ]
    for query in batch:
        parse(query.promql)  # parses: the hostile name stayed inside its string
        assert "or vector(1)" not in query.promql.replace("or vector\\\\(1\\\\)", "")
    result = [
        {"metric": {"namespace": "c", "model_name": "churn", "model_version": "3.0.0", "correct": "true"},
         "value": [0, "80"]},
        {"metric": {"namespace": "c", "model_name": "churn", "model_version": "3.0.0", "correct": "false"},
         "value": [0, "20"]},
    ]  # fmt: skip
    readings = rq.parse_result(batch[3], result, "namespace")
    assert readings[("c", "churn", "3.0.0")] == rq.Reading(0.8, samples=100.0)


async def test_the_webhook_is_a_signed_cloudevent_and_the_secrets_stay_out_of_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cloudevents.v1.http import from_http

    received: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/train", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/train?token=s3cr3t-url"

    class Secrets:
        async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
            return {"url": url, "key": "hmac-key-123"}

    woken: list[str] = []
    sender = WebhookSender(Secrets(), timeout_seconds=5, attempts=1, wake=woken.append)
    webhook = RetrainWebhook.model_validate(
        {"urlSecret": {"name": "hooks", "key": "url"}, "hmacSecret": {"name": "hooks", "key": "key"}}
    )
    request = TrainingRequest(
        namespace="ml", name="fraud", run="fraud-retrain-1", model="fraud", version="2.0.0",
        reason="inputDrift 0.4 > 0.25 for 1h", window="1h", values={"inputDrift": 0.4},
        time=datetime(2026, 3, 1, tzinfo=UTC),
    )  # fmt: skip
    try:
        sender.send("uid-1", webhook, request)
        await asyncio.wait_for(sender.drain(), 10)
    finally:
        await runner.cleanup()
    assert sender.outcome("uid-1", "fraud-retrain-1") is True and woken == ["uid-1"]
    ((headers, body),) = received
    expected = "sha256=" + hmac.new(b"hmac-key-123", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Mlcanary-Signature"], expected)
    event = from_http(headers, body)
    assert (
        event["type"] == "io.mlcanary.modeldeployment.RetrainRequested" and event["id"] == "fraud-retrain-1"
    )
    assert json.loads(body)["data"]["stableVersion"] == "2.0.0"
    assert "s3cr3t" not in caplog.text and "hmac-key" not in caplog.text


async def test_a_refused_webhook_is_a_failed_request() -> None:
    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=403)

    app = web.Application()
    app.router.add_post("/train", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    class Secrets:
        async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
            return {"url": f"http://127.0.0.1:{port}/train"}

    sender = WebhookSender(Secrets(), timeout_seconds=5, attempts=3, backoff_seconds=0.01)
    webhook = RetrainWebhook.model_validate({"urlSecret": {"name": "hooks", "key": "url"}})
    request = TrainingRequest("ml", "fraud", "run-2", "fraud", "2.0.0", "manual", "1h", {}, datetime.now(UTC))
    try:
        sender.send("uid-2", webhook, request)
        await asyncio.wait_for(sender.drain(), 10)
    finally:
        await runner.cleanup()
    assert sender.outcome("uid-2", "run-2") is False
