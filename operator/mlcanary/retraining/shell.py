"""Retraining within one tick: observe (Jobs, samples of the shared loop, the annotation), decide
(:mod:`.core`), and after the status write apply (the CronJob, the requested Job or webhook)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlcanary import resources
from mlcanary.engine import EmitEvent
from mlcanary.kube import ApiError, EnsureResult, Kube, controlled_by
from mlcanary.kubeapi import CRONJOBS, JOBS
from mlcanary.models import ModelDeploymentSpec, ModelDeploymentStatus, RetrainAction, RetrainResult
from mlcanary.retraining import core, objects
from mlcanary.retraining.monitor import RetrainingMonitor, WebhookSender
from mlcanary.retraining.queries import Subscription
from mlcanary.retraining.requests import TrainingRequest

logger = logging.getLogger(__name__)
Action = core.Action


@dataclass
class Retrainer:
    """The operator's retraining parts: the shared trigger loop and the webhook sender."""

    monitor: RetrainingMonitor | None = None
    webhooks: WebhookSender | None = None
    ensured: dict[str, str] = field(default_factory=dict)  # uid -> run whose Job was created

    def forget(self, uid: str) -> None:
        if self.monitor is not None:
            self.monitor.subscribe(uid, None)
        if self.webhooks is not None:
            self.webhooks.forget(uid)
        self.ensured.pop(uid, None)


def _owned(job: Mapping[str, Any], owner: resources.Owner) -> bool:
    labels = (job.get("metadata") or {}).get("labels") or {}
    return labels.get(resources.LABEL_MDEP) == owner.name and objects.LABEL_RETRAIN in labels


async def step(
    retrainer: Retrainer,
    kube: Kube,
    obj: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    owner: resources.Owner,
    now: datetime,
    generation: int,
) -> list[core.Action]:
    """Decide retraining for this tick: updates ``status`` (retraining, condition) in place."""
    uid = owner.uid
    retraining = spec.retraining
    stable_version = status.stable.template.model.version if status.stable else None
    if retrainer.monitor is not None:
        kinds = frozenset(core.configured_triggers(spec))
        subscription = (
            Subscription(owner.namespace, spec.model.name, stable_version, kinds, retraining.window)
            if retraining is not None and stable_version is not None and status.phase in core.STEADY_PHASES
            else None
        )
        retrainer.monitor.subscribe(uid, subscription)
    if retraining is None and status.retraining is None:
        return []
    jobs = [j for j in await kube.children(JOBS, owner.namespace, owner.name) if _owned(j, owner)]
    current = status.retraining
    run = core.RunObservation(None)
    if (
        current is not None
        and current.last_run is not None
        and current.last_result == RetrainResult.RUNNING
        and retraining is not None
    ):
        if retraining.action == RetrainAction.WEBHOOK and retrainer.webhooks is not None:
            delivered = retrainer.webhooks.outcome(uid, current.last_run)
            if delivered is not None:
                run = core.RunObservation(RetrainResult.REQUESTED if delivered else RetrainResult.FAILED)
        else:
            job = next((j for j in jobs if j["metadata"]["name"] == current.last_run), None)
            if job is not None:
                run = core.RunObservation(RetrainResult(objects.job_state(job)), objects.job_message(job))
    scheduled = sorted(
        j["metadata"]["name"]
        for j in jobs
        if (j["metadata"].get("labels") or {}).get(objects.LABEL_RETRAIN) == objects.SCHEDULE_REASON
        and objects.job_state(j) == "Running"
    )
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    observations = core.RetrainObservations(
        name=owner.name,
        phase=status.phase,
        stable_version=stable_version,
        samples=retrainer.monitor.samples(uid, now) if retrainer.monitor is not None else {},
        run=run,
        scheduled_run=scheduled[0] if scheduled else None,
        annotation=annotations.get(core.RETRAIN_ANNOTATION),
        history=status.history,
    )
    status.retraining, actions = core.decide(spec, status.retraining, observations, now)
    status.conditions = core.condition(
        status.conditions, spec, status.retraining, observations, now, generation
    )
    return actions


async def apply(
    retrainer: Retrainer,
    kube: Kube,
    obj: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    owner: resources.Owner,
    actions: list[core.Action],
) -> list[EnsureResult]:
    """The CronJob (ensured while scheduled, removed when not), the run requested, the Events."""
    results: list[EnsureResult] = []
    retraining = spec.retraining
    stable_version = status.stable.template.model.version if status.stable else None
    name = objects.cronjob_name(owner.name)
    if retraining is not None and retraining.schedule and stable_version is not None:
        results.append(await kube.ensure(objects.training_cronjob(owner, spec, stable_version), owner))
    elif status.retraining is not None and kube.served(CRONJOBS):
        # Only an object that ever had spec.retraining can have a CronJob: the others make no request.
        live = await kube.get(CRONJOBS, owner.namespace, name)
        if live is not None and controlled_by(live, owner):
            await kube.delete(CRONJOBS, owner.namespace, name)
    for action in actions:
        match action:
            case core.EnsureTrainingRun() if retraining is not None:
                await _ensure_run(retrainer, kube, spec, owner, action)
            case EmitEvent(type=type_, reason=reason, message=message):
                kube.post_event_soon(dict(obj), type_, reason, message)
                logger.info("%s/%s: %s: %s", owner.namespace, owner.name, reason, message)
    return results


async def _ensure_run(
    retrainer: Retrainer,
    kube: Kube,
    spec: ModelDeploymentSpec,
    owner: resources.Owner,
    action: core.EnsureTrainingRun,
) -> None:
    assert spec.retraining is not None
    if action.action == RetrainAction.WEBHOOK:
        if action.first and spec.retraining.webhook is not None and retrainer.webhooks is not None:
            request = TrainingRequest(
                namespace=owner.namespace,
                name=owner.name,
                run=action.run,
                model=spec.model.name,
                version=action.version,
                reason=action.reason,
                window=spec.retraining.window,
                values=action.values,
                time=action.requested_at,
            )
            retrainer.webhooks.send(owner.uid, spec.retraining.webhook, request)
        return
    if spec.retraining.job_template is None or retrainer.ensured.get(owner.uid) == action.run:
        return  # created already (the cache may not show it yet)
    job = objects.training_job(owner, spec, action.run, action.version, action.reason, action.values)
    try:
        await kube.create(job)
    except ApiError as error:
        if not error.conflict:  # 409: created before (the name is the request's)
            raise
    retrainer.ensured[owner.uid] = action.run
