"""Kubernetes-style conditions: set by type, keep lastTransitionTime when the status is unchanged.

Reasons are constants so tools (Argo CD health checks, alerts, tests) can match them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from mlcanary.models import Condition

READY = "Ready"
PROGRESSING = "Progressing"
SPEC_VALID = "SpecValid"
RECONCILED = "Reconciled"  # False while ticks fail (an API error, a bug): the message says why
RETRAINING_IN_PROGRESS = "RetrainingInProgress"  # spec.retraining: a requested training Job runs
REGISTRY_REACHABLE = "RegistryReachable"  # spec.model.registry: False names why the alias is unresolved

# Reasons
REASON_HEALTHY = "Healthy"
REASON_INITIALIZING = "Initializing"
REASON_CANARY_RUNNING = "CanaryRunning"
REASON_ROLLOUT_COMPLETE = "RolloutComplete"
REASON_ROLLED_BACK = "RolledBack"
REASON_PAUSED = "Paused"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_VALID = "Valid"
REASON_GENERATION_PENDING = "GenerationNotObserved"
REASON_RECONCILED = "Reconciled"
REASON_TICK_FAILED = "TickFailed"
REASON_RETRAIN_RUNNING = "TrainingJobRunning"
REASON_RETRAIN_IDLE = "NoTrainingRunning"
REASON_REGISTRY_RESOLVED = "AliasResolved"

Status = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; its transition time moves only when status changes."""
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type_:
            result.append(condition)
            continue
        found = True
        transition = condition.last_transition_time if condition.status == status else now
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=transition,
                observed_generation=generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return result


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
