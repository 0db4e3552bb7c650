"""Jobs, CronJobs and HorizontalPodAutoscalers: defaulting and validation (the controllers that act on
them are in :mod:`kube_emulator.controllers`).

What the real API server defaults and refuses for ``batch/v1`` Jobs and CronJobs and
``autoscaling/v2`` HPAs: the generated selector and job labels, the restart policy, the immutable
template, the cron schedule and time zone, the replica bounds.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from kube_emulator.errors import Cause

Obj = dict[str, Any]

JOBS = ("batch", "jobs")
CRONJOBS = ("batch", "cronjobs")
HPAS = ("autoscaling", "horizontalpodautoscalers")
OUTCOME_ANNOTATION = "emulator.mlcanary.io/job-outcome"
DURATION_ANNOTATION = "emulator.mlcanary.io/job-duration"
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
_RESTART_POLICIES = '"OnFailure", "Never"'

# ------------------------------------------------------------------------------------- admission


def _restart_policy_causes(template: Any, field: str) -> list[Cause]:
    spec = (template or {}).get("spec") if isinstance(template, Mapping) else None
    if not isinstance(spec, Mapping) or not spec.get("containers"):
        return [Cause(f"{field}.spec.containers", "FieldValueRequired", "Required value")]
    policy = spec.get("restartPolicy")
    if policy is None:
        return [
            Cause(
                f"{field}.spec.restartPolicy",
                "FieldValueRequired",
                f"Required value: valid values: {_RESTART_POLICIES}",
            )
        ]
    if policy not in ("OnFailure", "Never"):
        return [
            Cause(
                f"{field}.spec.restartPolicy",
                "FieldValueNotSupported",
                f'Unsupported value: "{policy}": supported values: {_RESTART_POLICIES}',
            )
        ]
    return []


def job_admission(obj: Obj, old: Obj | None, field: str = "spec") -> list[Cause]:
    """Default and validate a Job (``field``: where its spec sits, for a CronJob's template)."""
    spec = obj.get("spec") if field == "spec" else obj
    if not isinstance(spec, dict):
        return [Cause(field, "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    for name in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        value = spec.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            causes.append(
                Cause(
                    f"{field}.{name}",
                    "FieldValueInvalid",
                    f"Invalid value: {value}: must be greater than or equal to 0",
                )
            )
    template = spec.get("template")
    causes.extend(_restart_policy_causes(template, f"{field}.template"))
    if field == "spec" and isinstance(template, dict):
        meta = obj["metadata"]
        uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
        if old is None and not spec.get("manualSelector"):
            # The generated selector and labels, as the real Job strategy sets them on create.
            generated = {"batch.kubernetes.io/controller-uid": uid}
            spec["selector"] = {"matchLabels": generated}
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels.update(
                {
                    "batch.kubernetes.io/controller-uid": uid,
                    "batch.kubernetes.io/job-name": name,
                    "controller-uid": uid,
                    "job-name": name,
                }
            )
        if old is not None:
            old_spec = old.get("spec") or {}
            for immutable in ("template", "selector", "completions", "completionMode"):
                if spec.get(immutable) != old_spec.get(immutable) and not (
                    immutable == "completions" and spec.get("completions") == spec.get("parallelism")
                ):
                    causes.append(
                        Cause(
                            f"{field}.{immutable}", "FieldValueInvalid", "Invalid value: field is immutable"
                        )
                    )
    return causes


def cronjob_admission(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    schedule = spec.get("schedule")
    if not schedule:
        causes.append(Cause("spec.schedule", "FieldValueRequired", "Required value"))
    elif (
        not isinstance(schedule, str) or schedule.startswith(("TZ=", "CRON_TZ=")) or not _valid_cron(schedule)
    ):
        causes.append(
            Cause(
                "spec.schedule",
                "FieldValueInvalid",
                f'Invalid value: "{schedule}": unparseable cron schedule',
            )
        )
    zone = spec.get("timeZone")
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(str(zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            causes.append(
                Cause(
                    "spec.timeZone", "FieldValueInvalid", f'Invalid value: "{zone}": unknown time zone {zone}'
                )
            )
    if spec.get("concurrencyPolicy") not in ("Allow", "Forbid", "Replace"):
        causes.append(
            Cause(
                "spec.concurrencyPolicy",
                "FieldValueNotSupported",
                f'Unsupported value: "{spec.get("concurrencyPolicy")}": supported values: "Allow", "Forbid", "Replace"',
            )
        )
    job = spec.get("jobTemplate")
    if not isinstance(job, dict) or not isinstance(job.get("spec"), dict):
        causes.append(Cause("spec.jobTemplate.spec", "FieldValueRequired", "Required value"))
    else:
        causes.extend(job_admission(job["spec"], None, field="spec.jobTemplate.spec"))
    return causes


def _valid_cron(schedule: str) -> bool:
    # Kubernetes takes five fields (and @hourly-style macros); croniter would also take seconds.
    return (schedule.startswith("@") or len(schedule.split()) == 5) and croniter.is_valid(schedule)


def hpa_admission(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    target = spec.get("scaleTargetRef")
    if not isinstance(target, dict):
        causes.append(Cause("spec.scaleTargetRef", "FieldValueRequired", "Required value"))
    else:
        for key in ("kind", "name"):
            if not target.get(key):
                causes.append(Cause(f"spec.scaleTargetRef.{key}", "FieldValueRequired", "Required value"))
    spec.setdefault("minReplicas", 1)
    minimum, maximum = spec.get("minReplicas"), spec.get("maxReplicas")
    if not isinstance(minimum, int) or minimum < 1:
        causes.append(
            Cause(
                "spec.minReplicas",
                "FieldValueInvalid",
                f"Invalid value: {minimum}: must be greater than or equal to 1",
            )
        )
    if not isinstance(maximum, int) or maximum < 1:
        causes.append(
            Cause(
                "spec.maxReplicas", "FieldValueInvalid", f"Invalid value: {maximum}: must be greater than 0"
            )
        )
    elif isinstance(minimum, int) and maximum < minimum:
        causes.append(
            Cause(
                "spec.maxReplicas",
                "FieldValueInvalid",
                f"Invalid value: {maximum}: must be greater than or equal to `minReplicas`",
            )
        )
    spec.setdefault(
        "metrics",
        [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
            }
        ],
    )
    return causes


# ----------------------------------------------------------------------------------- helpers


def _condition(kind: str, reason: str, message: str, now: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def finished(job: Mapping[str, Any]) -> str | None:
    """ "Complete" or "Failed" once a Job has ended, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def job_succeeded_status(job: Mapping[str, Any], now: str) -> dict[str, Any]:
    spec = job.get("spec") or {}
    status = dict(job.get("status") or {})
    status.update(
        active=0,
        ready=0,
        succeeded=int(spec.get("completions") or 1),
        completionTime=now,
        conditions=[
            _condition(
                "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods", now
            ),
            _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", now),
        ],
    )
    status.setdefault("startTime", now)
    return status


def job_failed_status(job: Mapping[str, Any], now: str, reason: str, failed: int) -> dict[str, Any]:
    message = (
        "Job has reached the specified backoff limit"
        if reason == "BackoffLimitExceeded"
        else "Job was active longer than specified deadline"
    )
    status = dict(job.get("status") or {})
    status.update(
        active=0,
        ready=0,
        failed=failed,
        conditions=[
            _condition("FailureTarget", reason, message, now),
            _condition("Failed", reason, message, now),
        ],
    )
    status.setdefault("startTime", now)
    return status


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
