"""The training request as a CloudEvent 1.0 (structured JSON), signed like spec.notifications. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from mlcanary.models import API_GROUP, API_VERSION, PLURAL, EventReason
from mlcanary.notify.messages import CLOUDEVENT_TYPE_PREFIX, SIGNATURE_HEADER, sign


@dataclass(frozen=True)
class TrainingRequest:
    namespace: str
    name: str
    run: str  # the CloudEvent id: stable across retries, so a receiver drops duplicates
    model: str
    version: str
    reason: str
    window: str
    values: Mapping[str, float]
    time: datetime


def cloudevent(request: TrainingRequest, hmac_key: str | None) -> tuple[dict[str, str], bytes]:
    """Headers and body of the request; ``X-Mlcanary-Signature: sha256=<hex>`` when a key is given."""
    event = {
        "specversion": "1.0",
        "id": request.run,
        "source": f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{request.namespace}/{PLURAL}/{request.name}",
        "type": CLOUDEVENT_TYPE_PREFIX + EventReason.RETRAIN_REQUESTED,
        "subject": request.name,
        "time": request.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "model": request.model,
            "stableVersion": request.version,
            "reason": request.reason,
            "window": request.window,
            "values": dict(request.values),
            "run": request.run,
        },
    }
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/cloudevents+json"}
    if hmac_key is not None:
        headers[SIGNATURE_HEADER] = sign(hmac_key, body)
    return headers, body
