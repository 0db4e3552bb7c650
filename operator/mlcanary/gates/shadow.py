"""The shadow gate: pure rules of the phase between a ready canary and step 1 (``spec.shadow``).

A share of live prediction requests is mirrored to the canary (its user weight stays 0); the canary
pods also load the stable's bundle (the *reference*) and score every request with both models, so
the agreement between the two answers to the *same* request is measured where it happens, whatever
the gateway does with the mirrored answer (it throws it away). Rounds judge the builtins
``agreement`` and ``scoreDifference`` (:func:`shadow_metrics`); the engine (``_shadowing``) moves
the phase on. Everything is kept in ``status.shadow`` keyed by the canary revision, so a restarted
operator resumes the phase where it was and never runs a passed one again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mlcanary.durations import parse_duration
from mlcanary.models import (
    Analysis,
    BuiltinMetric,
    Measurement,
    Metric,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelRef,
    Phase,
    Shadow,
    ShadowPhase,
    ShadowStatus,
    Verdict,
)

AGREEMENT_METRIC = "shadow-agreement"
SCORE_DIFFERENCE_METRIC = "shadow-scoreDifference"


def shadow_metrics(shadow: Shadow) -> list[Metric]:
    """The checks of every shadow round: the spec's bounds as builtin metrics. The noise floor is
    the metric's ``tolerance``; ``minSamples`` its ``minRequests`` (compared rows)."""
    metrics: list[Metric] = []
    if shadow.agreement is not None:
        metrics.append(
            Metric(
                name=AGREEMENT_METRIC,
                builtin=BuiltinMetric.AGREEMENT,
                min=shadow.agreement.min,
                tolerance=shadow.agreement.noise_floor,
                min_requests=shadow.min_samples,
            )
        )
    if shadow.score_difference is not None:
        bound = shadow.score_difference
        metrics.append(
            Metric(
                name=SCORE_DIFFERENCE_METRIC,
                builtin=BuiltinMetric.SCORE_DIFFERENCE,
                max=bound.max,
                quantile=bound.quantile,
                tolerance=bound.noise_floor,
                min_requests=shadow.min_samples,
            )
        )
    return metrics


def shadow_analysis(spec: ModelDeploymentSpec) -> Analysis:
    """What a shadow round measures: the shadow metrics, at the analysis interval and Prometheus."""
    assert spec.shadow is not None
    return spec.analysis.model_copy(update={"metrics": shadow_metrics(spec.shadow)})


def _for_canary(status: ModelDeploymentStatus) -> ShadowStatus | None:
    if status.canary is None or status.shadow is None or status.shadow.revision != status.canary.revision:
        return None
    return status.shadow


def passed(status: ModelDeploymentStatus) -> bool:
    shadow = _for_canary(status)
    return shadow is not None and shadow.phase == ShadowPhase.PASSED


def pending(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> bool:
    """Whether the canary must pass the shadow phase before step 1."""
    return spec.shadow is not None and status.canary is not None and not passed(status)


def reference_model(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> ModelRef | None:
    """The stable model the canary's pods load beside their own while the shadow phase is ahead or
    running (dropped once it passed: one restart of the canary at weight 0, none later)."""
    if not pending(spec, status) or status.stable is None:
        return None
    return status.stable.template.model


def mirror_percent(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> int:
    """Percent of prediction requests the router mirrors to the canary now (0 outside the phase)."""
    if spec.shadow is None or status.canary is None or status.phase != Phase.SHADOWING:
        return 0
    return spec.shadow.mirror_percent


def start(status: ModelDeploymentStatus, now: datetime) -> ShadowStatus:
    assert status.canary is not None
    return ShadowStatus(revision=status.canary.revision, phase=ShadowPhase.RUNNING, started_at=now)


def round_due_since(status: ModelDeploymentStatus) -> datetime | None:
    """When the running shadow phase began (rounds are due an interval after it), else None."""
    shadow = _for_canary(status)
    if status.phase != Phase.SHADOWING or shadow is None or shadow.phase != ShadowPhase.RUNNING:
        return None
    return shadow.started_at


def duration(spec: ModelDeploymentSpec) -> timedelta:
    assert spec.shadow is not None
    return parse_duration(spec.shadow.duration)


def give_up_after(spec: ModelDeploymentSpec) -> timedelta:
    """A phase without a successful round by duration + progressDeadline is rolled back: thin
    mirrored traffic must not hold a rollout forever, nor ever pass it."""
    return duration(spec) + parse_duration(spec.rollout.progress_deadline)


@dataclass(frozen=True)
class Step:
    """What one tick of the shadow phase came to: still Running (``text`` is the status message),
    Passed (``text``: the measured values) or Failed (``text``: the rollback reason)."""

    outcome: ShadowPhase
    text: str


def advance(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    measurements: list[Measurement] | None,
    verdict: Verdict | None,
    now: datetime,
) -> Step:
    """Record this tick's round (if any) in ``status`` and say where the phase is. Fails at the first
    Failed round; passes once ``duration`` has elapsed and the last round was Successful; fails when
    no round succeeded within :func:`give_up_after`. The engine emits the Events and moves phases."""
    shadow = status.shadow
    assert shadow is not None and spec.shadow is not None
    if measurements is not None and verdict is not None:
        shadow.rounds += 1
        shadow.verdict = verdict
        status.analysis.last_round_at = now
        status.analysis.last_verdict = verdict
        status.last_measurements = list(measurements)
        for report in status.steps:
            if report.kind == "shadow":
                report.verdict, report.rounds = verdict, shadow.rounds
                report.measurements = list(measurements)
        if verdict == Verdict.FAILED:
            status.analysis.failures += 1
            return _end(shadow, ShadowPhase.FAILED, now, f"shadow phase failed: {failed_text(measurements)}")
    elapsed = now - shadow.started_at
    if elapsed >= duration(spec) and shadow.verdict == Verdict.SUCCESSFUL:
        text = "; ".join(describe(m) for m in status.last_measurements if not m.dry_run)
        return _end(shadow, ShadowPhase.PASSED, now, text)
    if elapsed > give_up_after(spec):
        detail = (
            f"last round {shadow.verdict}: "
            + "; ".join(f"{m.metric}: {m.message}" for m in status.last_measurements)
            if shadow.verdict is not None
            else "no analysis round completed"
        )
        reason = (
            f"shadow phase found no successful round within duration {spec.shadow.duration} + "
            f"progressDeadline {spec.rollout.progress_deadline} ({detail})"
        )[:600]
        return _end(shadow, ShadowPhase.FAILED, now, reason)
    text = f"shadow: {int(elapsed.total_seconds())}s of {spec.shadow.duration}, {shadow.rounds} rounds"
    return Step(ShadowPhase.RUNNING, text + (f", last {shadow.verdict}" if shadow.verdict else ""))


def _end(shadow: ShadowStatus, outcome: ShadowPhase, now: datetime, text: str) -> Step:
    shadow.phase, shadow.finished_at, shadow.message = outcome, now, text
    return Step(outcome, text)


def failed_text(measurements: list[Measurement]) -> str:
    return ", ".join(describe(m) for m in measurements if m.verdict == Verdict.FAILED and not m.dry_run)


def describe(m: Measurement) -> str:
    text = f"{m.metric}={m.value:.4g}" if m.value is not None else f"{m.metric}=n/a"
    if m.threshold:
        text += f" (want {m.threshold})"
    if m.sample_size is not None:
        text += f" over {m.sample_size} rows"
    return text
