"""spec.retraining decisions (mlcanary.retraining.core): table tests and properties of dedupe and
cooldown — a drift storm launches exactly one training run per cooldown."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcanary.engine import EmitEvent
from mlcanary.models import (
    Measurement,
    ModelDeploymentSpec,
    Phase,
    RetrainingStatus,
    RetrainResult,
    RolloutOutcome,
    RolloutRecord,
    StepReport,
    Verdict,
)
from mlcanary.retraining import core

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec(**retraining: Any) -> ModelDeploymentSpec:
    wire: dict[str, Any] = {
        "model": {"name": "fraud", "version": "1.0.0", "uri": "file:///m"},
        "analysis": {"metrics": [{"name": "drift", "builtin": "inputDrift", "max": 0.2}]},
        "retraining": {"jobTemplate": {"image": "trainer:1"}, **retraining},
    }
    return ModelDeploymentSpec.model_validate(wire)


def obs(value: float | None = None, at: datetime = T0, **kw: Any) -> core.RetrainObservations:
    samples = {core.INPUT_DRIFT: core.Sample(value, at)} if value is not None else {}
    base: dict[str, Any] = {
        "name": "fraud",
        "phase": Phase.HEALTHY,
        "stable_version": "1.0.0",
        "samples": samples,
    }
    base.update(kw)
    return core.RetrainObservations(**base)


def reasons(actions: list[core.Action]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, EmitEvent)]


def requests(actions: list[core.Action]) -> list[core.EnsureTrainingRun]:
    return [a for a in actions if isinstance(a, core.EnsureTrainingRun) and a.first]


DRIFT = {"triggers": {"inputDrift": {"threshold": 0.25, "for": "10m"}}, "cooldown": "1h"}


def test_a_trigger_must_hold_for_its_duration() -> None:
    s = spec(**DRIFT)
    status, actions = core.decide(s, None, obs(0.4, T0), T0)
    assert status is not None and status.breaching_since == {core.INPUT_DRIFT: T0}
    assert requests(actions) == []
    status, actions = core.decide(s, status, obs(0.4, T0 + timedelta(minutes=9)), T0 + timedelta(minutes=9))
    assert requests(actions) == []
    later = T0 + timedelta(minutes=10)
    status, actions = core.decide(s, status, obs(0.4, later), later)
    (request,) = requests(actions)
    assert request.run == core.run_name("fraud", later) and request.version == "1.0.0"
    assert request.values == {core.INPUT_DRIFT: 0.4}
    assert status is not None and status.last_result == RetrainResult.RUNNING
    assert status.suppressed_until == later + timedelta(hours=1)
    assert reasons(actions) == ["RetrainRequested"]


def test_a_dip_below_the_threshold_restarts_the_wait() -> None:
    s = spec(**DRIFT)
    status, _ = core.decide(s, None, obs(0.4), T0)
    status, _ = core.decide(s, status, obs(0.1, T0 + timedelta(minutes=5)), T0 + timedelta(minutes=5))
    assert status is not None and status.breaching_since == {}
    at = T0 + timedelta(minutes=12)
    status, actions = core.decide(s, status, obs(0.4, at), at)
    assert requests(actions) == [] and status is not None and status.breaching_since == {core.INPUT_DRIFT: at}


def test_no_trigger_is_judged_during_a_rollout() -> None:
    s = spec(**DRIFT)
    status, _ = core.decide(s, None, obs(0.4), T0)
    at = T0 + timedelta(hours=2)
    status, actions = core.decide(s, status, obs(0.4, at, phase=Phase.PROGRESSING), at)
    assert requests(actions) == [] and status is not None and status.breaching_since == {}


def test_a_running_job_holds_every_trigger_and_says_so_once() -> None:
    s = spec(triggers={"inputDrift": {"threshold": 0.25, "for": "0s"}}, cooldown="1m")
    status, actions = core.decide(s, None, obs(0.4), T0)
    assert len(requests(actions)) == 1
    running = core.RunObservation(RetrainResult.RUNNING)
    said = []
    for minute in range(1, 30):
        at = T0 + timedelta(minutes=minute)
        status, actions = core.decide(s, status, obs(0.4, at, run=running), at)
        assert requests(actions) == []
        said += reasons(actions)
    assert said == ["RetrainSuppressed"]
    at = T0 + timedelta(minutes=30)
    status, actions = core.decide(
        s, status, obs(0.4, at, run=core.RunObservation(RetrainResult.SUCCEEDED)), at
    )
    assert reasons(actions) == ["RetrainSucceeded", "RetrainRequested"]  # done, and the storm goes on


def test_a_failed_job_is_reported() -> None:
    s = spec(**DRIFT)
    status, _ = core.decide(s, None, obs(annotation="1"), T0)
    failed = core.RunObservation(RetrainResult.FAILED, "BackoffLimitExceeded")
    status, actions = core.decide(s, status, obs(annotation="1", run=failed), T0 + timedelta(minutes=1))
    assert status is not None and status.last_result == RetrainResult.FAILED
    assert [(a.reason, a.type) for a in actions if isinstance(a, EmitEvent)] == [("RetrainFailed", "Warning")]


def test_a_job_never_seen_is_created_again_then_failed_after_the_grace() -> None:
    s = spec(**DRIFT)
    status, _ = core.decide(s, None, obs(annotation="1"), T0)
    status, actions = core.decide(s, status, obs(annotation="1"), T0 + timedelta(seconds=30))
    assert [a.first for a in actions if isinstance(a, core.EnsureTrainingRun)] == [False]
    status, actions = core.decide(s, status, obs(annotation="1"), T0 + core.MISSING_RUN_GRACE * 2)
    assert status is not None and status.last_result == RetrainResult.FAILED
    assert reasons(actions) == ["RetrainFailed"]


def test_the_annotation_requests_once_per_value_and_skips_the_cooldown() -> None:
    s = spec(**DRIFT)
    status, actions = core.decide(s, None, obs(annotation="a"), T0)
    assert len(requests(actions)) == 1
    done = core.RunObservation(RetrainResult.SUCCEEDED)
    at = T0 + timedelta(minutes=1)
    status, actions = core.decide(s, status, obs(annotation="a", run=done), at)
    assert requests(actions) == []  # the same value: handled
    status, actions = core.decide(s, status, obs(annotation="b"), at + timedelta(seconds=1))
    assert len(requests(actions)) == 1  # a new value inside the cooldown: a person asked


def test_a_rollback_on_a_drift_metric_requests_training_once() -> None:
    s = spec(triggers={"onRollback": True})
    status, actions = core.decide(s, None, obs(), T0)
    assert requests(actions) == [] and status is not None and status.rollbacks_seen_until is None

    def rollback(at: datetime, metric: str) -> RolloutRecord:
        measurement = Measurement(metric=metric, verdict=Verdict.FAILED, value=0.5, time=at)
        return RolloutRecord(
            version="2.0.0",
            outcome=RolloutOutcome.ROLLED_BACK,
            reason="analysis failed",
            finished_at=at,
            steps=[StepReport(step=1, weight=20, measurements=[measurement])],
        )

    old = [rollback(T0 - timedelta(days=1), "drift")]
    status, actions = core.decide(s, status, obs(history=old), T0)
    assert requests(actions) == []  # from before retraining looked: only marks the time
    history = [*old, rollback(T0 + timedelta(minutes=1), "error-rate")]
    status, actions = core.decide(s, status, obs(history=history), T0 + timedelta(minutes=2))
    assert requests(actions) == []  # not a data metric
    history = [*history, rollback(T0 + timedelta(minutes=3), "drift")]
    status, actions = core.decide(s, status, obs(history=history), T0 + timedelta(minutes=4))
    (request,) = requests(actions)
    assert "rollback of 2.0.0 on drift" in request.reason
    status, actions = core.decide(s, status, obs(history=history), T0 + timedelta(minutes=5))
    assert requests(actions) == []


def test_accuracy_needs_enough_samples() -> None:
    s = spec(triggers={"accuracyDrop": {"threshold": 0.9, "for": "0s", "minSamples": 100}})
    few = {core.ACCURACY_DROP: core.Sample(0.5, T0, samples=10)}
    _, actions = core.decide(s, None, obs(samples=few), T0)
    assert requests(actions) == []
    many = {core.ACCURACY_DROP: core.Sample(0.5, T0, samples=500)}
    _, actions = core.decide(s, None, obs(samples=many), T0)
    assert len(requests(actions)) == 1


def test_next_scheduled_run_follows_the_time_zone() -> None:
    s = spec(schedule="0 3 * * *", timeZone="Europe/Paris")
    status, _ = core.decide(s, None, obs(), T0)
    assert status is not None and status.next_scheduled_run == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def test_without_retraining_nothing_is_judged() -> None:
    s = ModelDeploymentSpec.model_validate({"model": {"name": "f", "version": "1.0.0", "uri": "file:///m"}})
    kept = RetrainingStatus(requests=3)
    assert core.decide(s, kept, obs(0.9), T0) == (kept, [])


@pytest.mark.parametrize(
    ("retraining", "field"),
    [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"schedule": "0 3 * * *", "timeZone": "Mars/Olympus"}, "timeZone"),
        ({"cooldown": "1000h"}, "cooldown"),
        ({"action": "Webhook"}, "action Job needs jobTemplate"),
    ],
)
def test_invalid_retraining_is_refused_naming_the_field(retraining: dict[str, Any], field: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        spec(**retraining)
    assert field in str(error.value)


# --------------------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(
    cooldown_minutes=st.integers(min_value=1, max_value=90),
    for_minutes=st.integers(min_value=0, max_value=30),
    period_seconds=st.integers(min_value=5, max_value=300),
    job_minutes=st.integers(min_value=0, max_value=120),
    repeats=st.integers(min_value=1, max_value=3),
)
def test_a_storm_launches_one_run_per_cooldown(
    cooldown_minutes: int, for_minutes: int, period_seconds: int, job_minutes: int, repeats: int
) -> None:
    """The trigger is true on every evaluation for an hour; each evaluation may be seen by several
    ticks (``repeats``: dedupe). Runs: never two within a cooldown, never one while the last runs,
    and a new one as soon as both allow it."""
    s = spec(
        triggers={"inputDrift": {"threshold": 0.25, "for": f"{for_minutes}m"}},
        cooldown=f"{cooldown_minutes}m",
    )
    status: RetrainingStatus | None = None
    launched: list[datetime] = []
    suppressed = 0
    now = T0
    end = T0 + timedelta(hours=1)
    while now <= end:
        for _ in range(repeats):
            last = launched[-1] if launched else None
            running = last is not None and now - last < timedelta(minutes=job_minutes)
            run = core.RunObservation(
                RetrainResult.RUNNING if running else RetrainResult.SUCCEEDED if last else None
            )
            status, actions = core.decide(s, status, obs(0.9, now, run=run), now)
            launched += [now for _ in requests(actions)]
            suppressed += reasons(actions).count("RetrainSuppressed")
        now += timedelta(seconds=period_seconds)
    assert launched, "an hour-long storm requests at least one run"
    assert launched[0] - T0 < timedelta(minutes=for_minutes) + timedelta(seconds=period_seconds)
    gap = max(timedelta(minutes=cooldown_minutes), timedelta(minutes=job_minutes))
    for earlier, later in itertools.pairwise(launched):
        assert later - earlier >= gap  # one per cooldown, one at a time
        assert later - earlier < gap + timedelta(seconds=period_seconds)  # and no longer held
    assert suppressed <= 2 * len(launched)  # one Event per run or cooldown window, not per evaluation


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.1, 0.3, None]), min_size=1, max_size=60))
def test_the_same_inputs_twice_request_nothing_more(values: list[float | None]) -> None:
    """Dedupe: deciding again on its own output with the same observations requests nothing more,
    and a third time changes nothing and says nothing (a fixed point)."""
    s = spec(triggers={"inputDrift": {"threshold": 0.25, "for": "2m"}}, cooldown="10m")
    status: RetrainingStatus | None = None
    for minute, value in enumerate(values):
        now = T0 + timedelta(minutes=minute)
        observation = obs(value, now)
        status, _ = core.decide(s, status, observation, now)
        again, actions = core.decide(s, status, observation, now)
        assert requests(actions) == []  # at most a RetrainSuppressed for the run just requested
        third, actions = core.decide(s, again, observation, now)
        assert third == again and actions == [a for a in actions if not isinstance(a, EmitEvent)]
        assert requests(actions) == []
        status = third


def test_a_request_before_any_version_serves_waits_for_one() -> None:
    s = spec(**DRIFT)
    status, actions = core.decide(s, None, obs(annotation="early", stable_version=None, phase=None), T0)
    assert actions == [] and status is not None and status.handled_request is None
    status, actions = core.decide(s, status, obs(annotation="early"), T0 + timedelta(seconds=5))
    assert len(requests(actions)) == 1 and status is not None and status.handled_request == "early"
