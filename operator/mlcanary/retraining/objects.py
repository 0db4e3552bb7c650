"""Pure builders of the training Job and the schedule's CronJob (batch/v1), and what the operator owns
in them. The pod runs the user's one container; the operator adds what the run needs to know as
environment variables:

| variable | value |
|---|---|
| MODEL | spec.model.name |
| STABLE_VERSION | the stable version training was requested for |
| REASON | why (``schedule`` for runs of the CronJob) |
| WINDOW | spec.retraining.window: how much recent data to retrain on |
| METRIC_INPUT_DRIFT, METRIC_PREDICTION_DRIFT, METRIC_ACCURACY_DROP | trigger values at the request |
| MLCANARY_MODEL_DEPLOYMENT, MLCANARY_NAMESPACE | the ModelDeployment asking |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlcanary.durations import parse_duration
from mlcanary.models import ModelDeploymentSpec, Retraining, RetrainJobTemplate
from mlcanary.resources import LABEL_MANAGED_BY, LABEL_MDEP, MANAGED_BY, Owner

LABEL_RETRAIN = "mlcanary.io/retrain"  # "request" on requested Jobs, "schedule" on the CronJob's
LABEL_TRAINING_FOR = "mlcanary.io/training-for"  # on training pods: the ModelDeployment's name
SCHEDULE_REASON = "schedule"
MAX_CRONJOB_NAME = 52  # the CronJob controller names its Jobs <cronjob>-<minutes> (63 at most)


def cronjob_name(owner_name: str) -> str:
    return f"{owner_name[: MAX_CRONJOB_NAME - len('-retrain')].rstrip('-')}-retrain"


def _pod_labels(owner: Owner, kind: str) -> dict[str, str]:
    """Labels of a training pod: never the model-deployment label, which the model's entry Service
    selects — a running training pod would otherwise receive prediction traffic."""
    return {
        LABEL_TRAINING_FOR: owner.name,
        LABEL_RETRAIN: kind,
        "app.kubernetes.io/component": "training",
    }


def _labels(owner: Owner, kind: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MDEP: owner.name,
        LABEL_RETRAIN: kind,
        "app.kubernetes.io/component": "training",
    }


def _env_name(kind: str) -> str:
    return "METRIC_" + re.sub(r"(?<!^)([A-Z])", r"_\1", kind).upper()


def run_env(
    owner: Owner,
    spec: ModelDeploymentSpec,
    version: str,
    reason: str,
    values: Mapping[str, float],
) -> list[dict[str, str]]:
    """What the operator tells a training run, before the user's own env (which may not override it:
    Kubernetes takes the last duplicate, so ours go last)."""
    assert spec.retraining is not None
    env = [
        {"name": "MODEL", "value": spec.model.name},
        {"name": "STABLE_VERSION", "value": version},
        {"name": "REASON", "value": reason[:1024]},
        {"name": "WINDOW", "value": spec.retraining.window},
        {"name": "MLCANARY_MODEL_DEPLOYMENT", "value": owner.name},
        {"name": "MLCANARY_NAMESPACE", "value": owner.namespace},
    ]
    env.extend({"name": _env_name(kind), "value": f"{value:.6g}"} for kind, value in sorted(values.items()))
    return env


def _job_spec(
    template: RetrainJobTemplate, pod_labels: dict[str, str], env: list[dict[str, str]]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "train",
        "image": template.image,
        "env": [*(e.to_wire() for e in template.env or []), *env],
    }
    if template.command:
        container["command"] = list(template.command)
    if template.args:
        container["args"] = list(template.args)
    if template.resources is not None:
        container["resources"] = template.resources.to_wire()
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if template.service_account_name:
        pod_spec["serviceAccountName"] = template.service_account_name
    return {
        "backoffLimit": template.backoff_limit,
        "activeDeadlineSeconds": max(1, int(parse_duration(template.active_deadline).total_seconds())),
        "ttlSecondsAfterFinished": int(parse_duration(template.ttl_after_finished).total_seconds()),
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }


def training_job(
    owner: Owner,
    spec: ModelDeploymentSpec,
    name: str,
    version: str,
    reason: str,
    values: Mapping[str, float],
) -> dict[str, Any]:
    """The Job of one training request, named after it (creating it twice is one Job)."""
    retraining: Retraining | None = spec.retraining
    assert retraining is not None and retraining.job_template is not None
    labels = _labels(owner, "request")
    annotations = dict(retraining.job_template.annotations or {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(name, labels, annotations),
        "spec": _job_spec(
            retraining.job_template,
            _pod_labels(owner, "request"),
            run_env(owner, spec, version, reason, values),
        ),
    }


def training_cronjob(owner: Owner, spec: ModelDeploymentSpec, stable_version: str) -> dict[str, Any]:
    """The CronJob of spec.retraining.schedule: Forbid concurrency (one run at a time), its Jobs
    labelled as the ModelDeployment's so the operator sees them run."""
    retraining = spec.retraining
    assert retraining is not None and retraining.schedule and retraining.job_template is not None
    labels = _labels(owner, SCHEDULE_REASON)
    annotations = retraining.job_template.annotations
    env = run_env(owner, spec, stable_version, SCHEDULE_REASON, {})
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": owner.metadata(cronjob_name(owner.name), labels),
        "spec": {
            "schedule": retraining.schedule,
            "timeZone": retraining.time_zone,
            "concurrencyPolicy": "Forbid",
            "suspend": False,
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {
                    "labels": labels,
                    **({"annotations": dict(annotations)} if annotations else {}),
                },
                "spec": _job_spec(retraining.job_template, _pod_labels(owner, SCHEDULE_REASON), env),
            },
        },
    }


def job_state(job: Mapping[str, Any]) -> str:
    """Running, Succeeded or Failed, from a Job's conditions (Complete / Failed = True)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") == "Complete":
            return "Succeeded"
        if condition.get("status") == "True" and condition.get("type") == "Failed":
            return "Failed"
    return "Running"


def job_message(job: Mapping[str, Any]) -> str:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") == "Failed":
            return str(condition.get("reason") or condition.get("message") or "")[:200]
    return ""
