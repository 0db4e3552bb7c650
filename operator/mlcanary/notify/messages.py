"""What a notification says, and each provider's payload for it. Pure: no I/O.

A :class:`Notice` is one engine Event plus the facts a reader needs without opening the cluster: the
versions, the step and weight, and for a failure the failing metrics with their value, bound and
sample size (from ``status.lastMeasurements``, which the round that failed wrote).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from mlcanary.models import (
    API_GROUP,
    API_VERSION,
    PLURAL,
    CloudEventsMode,
    EventReason,
    Measurement,
    ModelDeploymentStatus,
    NotificationProvider,
    Verdict,
)

SIGNATURE_HEADER = "X-Mlcanary-Signature"
CLOUDEVENT_TYPE_PREFIX = "io.mlcanary.modeldeployment."
# Reasons whose message is about a failure: they carry the failing metrics of the last round.
_FAILURE_REASONS = {EventReason.ANALYSIS_FAILED, EventReason.ROLLING_BACK, EventReason.ROLLED_BACK}


@dataclass(frozen=True)
class FailedMetric:
    metric: str
    value: float | None
    bound: str | None
    sample_size: int | None
    stable_value: float | None = None

    def describe(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:g}"
        text = f"{self.metric} = {value}"
        if self.bound:
            text += f" (want {self.bound})"
        if self.stable_value is not None:
            text += f", stable {self.stable_value:g}"
        if self.sample_size is not None:
            text += f", {self.sample_size} requests"
        return text


@dataclass(frozen=True)
class Notice:
    reason: str
    type: str  # Normal or Warning
    message: str
    namespace: str
    name: str
    uid: str
    time: datetime
    phase: str | None = None
    stable_version: str | None = None
    canary_version: str | None = None
    step: int | None = None
    weight: int | None = None
    failed_metrics: list[FailedMetric] = field(default_factory=list)

    @property
    def id(self) -> str:
        """Stable across retries, so a receiver can drop duplicates."""
        key = f"{self.uid}/{self.reason}/{self.time.isoformat()}/{self.message}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    @property
    def title(self) -> str:
        return f"{self.namespace}/{self.name}: {self.reason}"

    def data(self) -> dict[str, Any]:
        """The notice as JSON (camelCase, like the API)."""
        raw = asdict(self)
        raw["time"] = self.time.isoformat().replace("+00:00", "Z")
        raw["failedMetrics"] = [
            {_camel(k): v for k, v in metric.items()} for metric in raw.pop("failed_metrics")
        ]
        return {_camel(k): v for k, v in raw.items() if v is not None}

    def facts(self) -> list[tuple[str, str]]:
        rows = [("Phase", self.phase), ("Stable", self.stable_version), ("Canary", self.canary_version)]
        if self.step is not None:
            rows.append(("Step", f"{self.step} at {self.weight}%"))
        return [(k, v) for k, v in rows if v]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def failed_metrics(measurements: list[Measurement]) -> list[FailedMetric]:
    return [
        FailedMetric(m.metric, m.value, m.threshold, m.sample_size, m.stable_value)
        for m in measurements
        if m.verdict == Verdict.FAILED and not m.dry_run
    ]


def notice_for(
    reason: str,
    type_: str,
    message: str,
    *,
    namespace: str,
    name: str,
    uid: str,
    status: ModelDeploymentStatus,
    now: datetime,
) -> Notice:
    """A notice for an Event emitted by the tick whose new status is ``status``."""
    canary = status.canary_version
    if canary is None and status.history and reason in (EventReason.ROLLED_BACK, EventReason.SUPERSEDED):
        canary = status.history[-1].version  # the rollout just ended: its version is in history
    return Notice(
        reason=reason,
        type=type_,
        message=message,
        namespace=namespace,
        name=name,
        uid=uid,
        time=now,
        phase=str(status.phase) if status.phase else None,
        stable_version=status.stable_version,
        canary_version=canary,
        step=status.current_step,
        weight=status.canary_weight if status.current_step is not None else None,
        failed_metrics=failed_metrics(status.last_measurements) if reason in _FAILURE_REASONS else [],
    )


# ----------------------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def slack(notice: Notice) -> Request:
    """A Slack incoming-webhook message (``text`` for notifications, blocks for the channel)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": notice.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": notice.message[:3000]}},
    ]
    if notice.facts():
        blocks.append(
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in notice.facts()],
            }
        )
    if notice.failed_metrics:
        lines = "\n".join(f"• {m.describe()}" for m in notice.failed_metrics)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Failing metrics*\n{lines}"[:3000]}}
        )
    text = f"{notice.title}: {notice.message}"
    return Request({"Content-Type": "application/json"}, _json({"text": text, "blocks": blocks}))


def msteams(notice: Notice) -> Request:
    """A Microsoft Teams webhook message carrying an Adaptive Card (what Teams workflows accept)."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": notice.title,
            "weight": "Bolder",
            "size": "Medium",
            "color": "Attention" if notice.type == "Warning" else "Good",
            "wrap": True,
        },
        {"type": "TextBlock", "text": notice.message, "wrap": True},
    ]
    facts = [*notice.facts(), *((m.metric, m.describe()) for m in notice.failed_metrics)]
    if facts:
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    payload = {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    }
    return Request({"Content-Type": "application/json"}, _json(payload))


def cloudevent(notice: Notice, mode: CloudEventsMode, hmac_key: str | None) -> Request:
    """A CloudEvents 1.0 HTTP request: structured (the event as JSON) or binary (``ce-*`` headers and
    the data as the body). With a key, ``X-Mlcanary-Signature: sha256=<hex>`` signs the body bytes."""
    attributes = {
        "specversion": "1.0",
        "id": notice.id,
        "source": f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{notice.namespace}/{PLURAL}/{notice.name}",
        "type": CLOUDEVENT_TYPE_PREFIX + notice.reason,
        "subject": notice.name,
        "time": notice.time.isoformat().replace("+00:00", "Z"),
    }
    if mode == CloudEventsMode.BINARY:
        headers = {f"ce-{k}": v for k, v in attributes.items()}
        headers["Content-Type"] = "application/json"
        body = _json(notice.data())
    else:
        headers = {"Content-Type": "application/cloudevents+json"}
        body = _json({**attributes, "datacontenttype": "application/json", "data": notice.data()})
    if hmac_key is not None:
        headers[SIGNATURE_HEADER] = sign(hmac_key, body)
    return Request(headers, body)


def sign(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def render(
    provider: NotificationProvider, notice: Notice, mode: CloudEventsMode | None, hmac_key: str | None
) -> Request:
    match provider:
        case NotificationProvider.SLACK:
            return slack(notice)
        case NotificationProvider.MSTEAMS:
            return msteams(notice)
        case NotificationProvider.CLOUDEVENTS:
            return cloudevent(notice, mode or CloudEventsMode.STRUCTURED, hmac_key)
