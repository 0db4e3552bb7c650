"""Retraining decisions: a pure function of (spec, retraining status, observations, now).

The operator requests training, it never trains. A request is a Job from the user's template or a
signed CloudEvent to a pipeline's webhook. What requests one:

* a trigger on the **stable** version, judged only while no rollout is in flight: input drift,
  prediction drift (PSI above a threshold) or accuracy (below a floor), each held for ``for``;
* optionally, a rollback caused by a failed inputDrift, predictionDrift or accuracy analysis metric;
* the ``mlcanary.io/retrain`` annotation, acted on once per value (like promote/abort/retry).

Two rules keep a drift storm to one training run: **one at a time** (nothing is requested while the
last run, or a run of the schedule, is still going) and a **cooldown** after each request (a manual
request is not held by the cooldown). A suppressed request is one ``RetrainSuppressed`` Event per
run or cooldown window, not one per evaluation.

Every wait is computed from timestamps in ``status.retraining``, so a restarted operator carries on
where the last one stopped. Nothing here performs I/O.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from croniter import croniter

from mlcanary import conditions as cond
from mlcanary.durations import parse_duration
from mlcanary.engine import EmitEvent
from mlcanary.models import (
    AccuracyTrigger,
    BuiltinMetric,
    Condition,
    DriftTrigger,
    EventReason,
    ModelDeploymentSpec,
    Phase,
    RetrainAction,
    RetrainingStatus,
    RetrainResult,
    RolloutOutcome,
    RolloutRecord,
    Verdict,
)

RETRAIN_ANNOTATION = "mlcanary.io/retrain"
INPUT_DRIFT, PREDICTION_DRIFT, ACCURACY_DROP = "inputDrift", "predictionDrift", "accuracyDrop"
TRIGGER_KINDS = (INPUT_DRIFT, PREDICTION_DRIFT, ACCURACY_DROP)
# A run whose Job (or webhook outcome) is not seen this long after the request has failed: the Job
# was deleted, could not be created, or the operator restarted while delivering the webhook.
MISSING_RUN_GRACE = timedelta(minutes=2)
# Analysis metrics whose failure makes a rollback a reason to retrain (onRollback).
_DATA_METRICS = (BuiltinMetric.INPUT_DRIFT, BuiltinMetric.PREDICTION_DRIFT, BuiltinMetric.ACCURACY)
# Phases in which the stable version is judged: no rollout in flight.
STEADY_PHASES = (Phase.HEALTHY, Phase.ROLLED_BACK)


@dataclass(frozen=True)
class Sample:
    """One evaluation of one trigger's metric for the stable version (None: no data)."""

    value: float | None
    at: datetime
    samples: float | None = None  # feedback labels in the window (accuracy)


@dataclass(frozen=True)
class RunObservation:
    """What the cluster shows of the run in ``status.retraining.lastRun``."""

    state: RetrainResult | None  # Running, Succeeded, Failed; None: not seen (yet)
    message: str = ""


@dataclass(frozen=True)
class RetrainObservations:
    name: str
    phase: Phase | None
    stable_version: str | None
    samples: Mapping[str, Sample] = field(default_factory=dict)
    run: RunObservation = field(default_factory=lambda: RunObservation(None))
    scheduled_run: str | None = None  # a Job of the schedule that is still running
    annotation: str | None = None
    history: Sequence[RolloutRecord] = ()


@dataclass(frozen=True)
class EnsureTrainingRun:
    """Make sure the requested run exists: create the Job (idempotent: named after the request), or
    deliver the webhook (``first``: only on the tick that requested it; delivery retries itself)."""

    run: str
    action: RetrainAction
    reason: str
    version: str
    values: Mapping[str, float]
    requested_at: datetime
    first: bool


Action = EnsureTrainingRun | EmitEvent


def run_name(owner_name: str, at: datetime) -> str:
    """The request's Job name (and CloudEvent id): one per ModelDeployment and second.

    >>> from datetime import UTC
    >>> run_name("fraud", datetime(2026, 1, 1, tzinfo=UTC))
    'fraud-retrain-1767225600'
    """
    return f"{owner_name[:40].rstrip('-')}-retrain-{int(at.timestamp())}"


def next_scheduled_run(schedule: str, time_zone: str, now: datetime) -> datetime:
    """When the CronJob next runs (the controller evaluates the schedule in ``time_zone``)."""
    start = now.astimezone(zoneinfo.ZoneInfo(time_zone))
    following: datetime = croniter(schedule, start).get_next(datetime)
    return following.astimezone(now.tzinfo)


def breaches(trigger: DriftTrigger | AccuracyTrigger, sample: Sample) -> bool:
    """Whether one evaluation meets the trigger's condition. No data never does."""
    if sample.value is None:
        return False
    if isinstance(trigger, AccuracyTrigger):
        return (sample.samples or 0) >= trigger.min_samples and sample.value < trigger.threshold
    return sample.value > trigger.threshold


def configured_triggers(spec: ModelDeploymentSpec) -> dict[str, DriftTrigger | AccuracyTrigger]:
    if spec.retraining is None:
        return {}
    triggers = spec.retraining.triggers
    found: dict[str, DriftTrigger | AccuracyTrigger | None] = {
        INPUT_DRIFT: triggers.input_drift,
        PREDICTION_DRIFT: triggers.prediction_drift,
        ACCURACY_DROP: triggers.accuracy_drop,
    }
    return {kind: trigger for kind, trigger in found.items() if trigger is not None}


def _describe(kind: str, trigger: DriftTrigger | AccuracyTrigger, value: float | None) -> str:
    shown = f"{value:.4g}" if value is not None else "n/a"
    relation = "<" if isinstance(trigger, AccuracyTrigger) else ">"
    return f"{kind} {shown} {relation} {trigger.threshold:g} for {trigger.for_}"


def decide(
    spec: ModelDeploymentSpec,
    status: RetrainingStatus | None,
    obs: RetrainObservations,
    now: datetime,
) -> tuple[RetrainingStatus | None, list[Action]]:
    """One retraining step. Pure: same inputs, same outputs."""
    retraining = spec.retraining
    if retraining is None:
        return status, []  # the record of past runs stays; nothing is judged any more
    st = status.model_copy(deep=True) if status is not None else RetrainingStatus()
    events: list[EmitEvent] = []
    actions: list[Action] = []
    _follow_run(st, retraining.action, obs, now, events)

    reasons: list[str] = []
    # A request made before any version serves waits for one (it is not consumed and refused).
    manual = (
        obs.annotation is not None and obs.annotation != st.handled_request and obs.stable_version is not None
    )
    if manual:
        st.handled_request = obs.annotation
        reasons.append(f"requested by the {RETRAIN_ANNOTATION} annotation")
    values = _judge_triggers(spec, st, obs, now, reasons)
    rollback = _data_rollback(spec, st, obs)
    if rollback is not None:
        reasons.append(rollback)

    busy = _busy(st, obs)
    if reasons:
        reason = "; ".join(reasons)
        cooling = st.suppressed_until is not None and now < st.suppressed_until and not manual
        if busy is not None:
            _suppress(st, f"run:{busy}", f"{reason}: training run {busy} is still running", events)
        elif cooling:
            assert st.suppressed_until is not None
            until = st.suppressed_until.isoformat().replace("+00:00", "Z")
            _suppress(st, f"until:{until}", f"{reason}: cooldown until {until}", events)
        elif obs.stable_version is None:
            _suppress(st, "no-stable", f"{reason}: no stable version yet", events)
        else:
            name = run_name(obs.name, now)
            st.last_trigger_time = now
            st.last_reason = reason[:1024]
            st.last_run = name
            st.last_result = RetrainResult.RUNNING
            st.last_values = dict(values)
            st.version = obs.stable_version
            st.suppressed_until = now + parse_duration(retraining.cooldown)
            st.suppressed_for = None
            st.requests += 1
            what = f"Job {name}" if retraining.action == RetrainAction.JOB else f"webhook event {name}"
            events.append(
                EmitEvent(
                    "Normal", EventReason.RETRAIN_REQUESTED, f"{what} for {obs.stable_version}: {reason}"
                )
            )
            actions.append(_ensure(st, retraining.action, first=True))
    if not actions and st.last_result == RetrainResult.RUNNING and obs.run.state is None:
        actions.append(_ensure(st, retraining.action, first=False))  # re-create a Job not seen yet
    st.next_scheduled_run = (
        next_scheduled_run(retraining.schedule, retraining.time_zone, now) if retraining.schedule else None
    )
    return st, [*actions, *events]


def _ensure(st: RetrainingStatus, action: RetrainAction, *, first: bool) -> EnsureTrainingRun:
    assert st.last_run is not None and st.last_trigger_time is not None
    return EnsureTrainingRun(
        run=st.last_run,
        action=action,
        reason=st.last_reason or "",
        version=st.version or "",
        values=dict(st.last_values),
        requested_at=st.last_trigger_time,
        first=first,
    )


def _follow_run(
    st: RetrainingStatus,
    action: RetrainAction,
    obs: RetrainObservations,
    now: datetime,
    events: list[EmitEvent],
) -> None:
    """Record the outcome of the run in flight, once."""
    if st.last_result != RetrainResult.RUNNING or st.last_run is None:
        return
    state = obs.run.state
    detail = f": {obs.run.message}" if obs.run.message else ""
    if state is None and st.last_trigger_time is not None and now - st.last_trigger_time > MISSING_RUN_GRACE:
        state = RetrainResult.FAILED
        detail = (
            ": its Job is gone or was never created"
            if action == RetrainAction.JOB
            else ": no delivery outcome (the operator restarted while sending it?)"
        )
    if state == RetrainResult.SUCCEEDED:
        st.last_result = RetrainResult.SUCCEEDED
        events.append(EmitEvent("Normal", EventReason.RETRAIN_SUCCEEDED, f"Job {st.last_run} succeeded"))
    elif state == RetrainResult.REQUESTED:
        st.last_result = RetrainResult.REQUESTED  # the pipeline accepted it; what follows is its own
    elif state == RetrainResult.FAILED:
        st.last_result = RetrainResult.FAILED
        what = f"Job {st.last_run}" if action == RetrainAction.JOB else f"webhook event {st.last_run}"
        events.append(EmitEvent("Warning", EventReason.RETRAIN_FAILED, f"{what} failed{detail}"))


def _judge_triggers(
    spec: ModelDeploymentSpec,
    st: RetrainingStatus,
    obs: RetrainObservations,
    now: datetime,
    reasons: list[str],
) -> dict[str, float]:
    """Update since when each trigger has held; append the reasons of those held for ``for``."""
    triggers = configured_triggers(spec)
    if obs.phase not in STEADY_PHASES or obs.stable_version is None:
        st.breaching_since = {}  # a rollout is in flight: the stable version is judged outside them
        return {}
    values: dict[str, float] = {}
    for kind in list(st.breaching_since):
        if kind not in triggers:
            del st.breaching_since[kind]
    for kind, trigger in triggers.items():
        sample = obs.samples.get(kind)
        if sample is not None and sample.value is not None:
            values[kind] = sample.value
        if sample is None or not breaches(trigger, sample):
            st.breaching_since.pop(kind, None)
            continue
        since = st.breaching_since.setdefault(kind, min(sample.at, now))
        if now - since >= parse_duration(trigger.for_):
            reasons.append(_describe(kind, trigger, sample.value))
    return values


def _data_rollback(spec: ModelDeploymentSpec, st: RetrainingStatus, obs: RetrainObservations) -> str | None:
    """A rollback caused by a failed drift or accuracy metric, finished since the last one seen."""
    finished = [r for r in obs.history if r.outcome == RolloutOutcome.ROLLED_BACK]
    newest = max((r.finished_at for r in finished), default=None)
    seen = st.rollbacks_seen_until
    if newest is not None and (seen is None or newest > seen):
        st.rollbacks_seen_until = newest
    assert spec.retraining is not None
    if seen is None or not spec.retraining.triggers.on_rollback:
        return None  # the first look only sets the mark: rollbacks from before are not acted on
    data_metrics = {m.name for m in spec.analysis.metrics if m.builtin in _DATA_METRICS}
    for record in sorted(finished, key=lambda r: r.finished_at, reverse=True):
        if record.finished_at <= seen:
            break
        failed = sorted(
            {
                m.metric
                for step in record.steps
                for m in step.measurements
                if m.verdict == Verdict.FAILED and not m.dry_run and m.metric in data_metrics
            }
        )
        if failed:
            return f"rollback of {record.version} on {', '.join(failed)}"
    return None


def _busy(st: RetrainingStatus, obs: RetrainObservations) -> str | None:
    if st.last_result == RetrainResult.RUNNING and st.last_run is not None:
        return st.last_run
    return obs.scheduled_run


def _suppress(st: RetrainingStatus, key: str, message: str, events: list[EmitEvent]) -> None:
    if st.suppressed_for == key:
        return  # said once for this run or cooldown window
    st.suppressed_for = key
    events.append(EmitEvent("Normal", EventReason.RETRAIN_SUPPRESSED, message))


def condition(
    conditions: list[Condition],
    spec: ModelDeploymentSpec,
    st: RetrainingStatus | None,
    obs: RetrainObservations,
    now: datetime,
    generation: int,
) -> list[Condition]:
    """``RetrainingInProgress``: True while a requested run or a run of the schedule is going;
    absent without spec.retraining."""
    if spec.retraining is None:
        return [c for c in conditions if c.type != cond.RETRAINING_IN_PROGRESS]
    busy = _busy(st, obs) if st is not None else obs.scheduled_run
    if busy is not None:
        return cond.set_condition(
            conditions,
            cond.RETRAINING_IN_PROGRESS,
            "True",
            cond.REASON_RETRAIN_RUNNING,
            f"training run {busy} is running",
            now,
            generation,
        )
    return cond.set_condition(
        conditions, cond.RETRAINING_IN_PROGRESS, "False", cond.REASON_RETRAIN_IDLE, "", now, generation
    )
