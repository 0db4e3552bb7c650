"""Scenario and table tests for the pure rollout engine (:func:`mlcanary.engine.decide`).

Every test drives the engine through the simulator in conftest and asserts on the resulting status
and actions, never on how the engine got there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from conftest import (
    ERROR_RATE,
    NAME,
    FakeRevision,
    Sim,
    analysis_round,
    ensured,
    make_spec,
    measurement,
    reasons,
    removed,
    rev,
    roundtrip,
    traffic,
)

from mlcanary import conditions as cond
from mlcanary.engine import (
    HISTORY_LIMIT,
    AnalysisRound,
    EmitEvent,
    SetTraffic,
    analysis_due,
    decide,
    invalid_spec,
    next_wakeup,
    round_verdict,
)
from mlcanary.models import ModelDeploymentStatus, Phase, RolloutOutcome, Verdict

MESH = ["gatewayAPI", "istio"]
ALL_ROUTERS = ["replicas", *MESH]
V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"


def r(version: str) -> str:
    return rev(make_spec(version))


def condition(sim_or_status: Sim | ModelDeploymentStatus, type_: str) -> tuple[str, str]:
    status = sim_or_status.status if isinstance(sim_or_status, Sim) else sim_or_status
    found = cond.get_condition(status.conditions, type_)
    assert found is not None, f"no {type_} condition"
    return found.status, found.reason


# ---------------------------------------------------------------------------------------- first deploy


def test_first_deploy_goes_straight_to_stable_without_a_canary() -> None:
    sim = Sim(make_spec(V1, replicas=3, steps=[25, 50]), settle=False)
    actions = sim.tick()
    assert sim.phase == Phase.INITIALIZING
    assert sim.status.stable is not None and sim.status.stable.revision == r(V1)
    assert sim.status.canary is None and sim.weight == 0
    assert set(ensured(actions)) == {"stable"} and ensured(actions)["stable"].replicas == 3
    assert traffic(actions) == SetTraffic(r(V1), None, 0)
    assert "Deploying" in reasons(actions)

    sim.tick(30)  # pods not ready yet
    assert sim.phase == Phase.INITIALIZING
    assert condition(sim, cond.READY) == ("False", cond.REASON_INITIALIZING)
    assert condition(sim, cond.PROGRESSING) == ("True", cond.REASON_INITIALIZING)

    sim.make_ready()
    actions = sim.tick(30)
    assert sim.phase == Phase.HEALTHY
    assert "Ready" in reasons(actions)
    assert sim.status.stable_version == V1 and sim.status.canary_version is None
    assert sim.status.history == []  # the first deploy is not a rollout
    assert condition(sim, cond.READY) == ("True", cond.REASON_HEALTHY)
    assert condition(sim, cond.PROGRESSING) == ("False", cond.REASON_ROLLOUT_COMPLETE)
    assert condition(sim, cond.SPEC_VALID) == ("True", cond.REASON_VALID)


@pytest.mark.parametrize("router", MESH)
def test_first_deploy_waits_for_the_router_to_confirm(router: str) -> None:
    sim = Sim(make_spec(V1, router=router), settle=False)
    sim.tick()
    sim.make_ready()
    sim.tick(10)
    assert sim.phase == Phase.INITIALIZING  # ready pods, but the route is not confirmed
    sim.confirm()
    sim.tick(10)
    assert sim.phase == Phase.HEALTHY


def test_version_change_before_first_deploy_finishes_replaces_the_stable_revision() -> None:
    sim = Sim(make_spec(V1, scale_down_delay="30s"), settle=False)
    sim.tick()
    sim.new_version("1.1.0")
    actions = sim.tick(5)
    assert sim.phase == Phase.INITIALIZING
    assert sim.status.stable is not None and sim.status.stable.revision == r("1.1.0")
    assert sim.status.canary is None
    assert [x.revision for x in sim.status.retiring] == [r(V1)]
    assert removed(actions) == set()
    assert removed(sim.tick(29)) == set()
    assert removed(sim.tick(1)) == {r(V1)}


# ---------------------------------------------------------------------------------------- canary start


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_new_version_creates_a_canary_and_waits_for_it_before_step_1(router: str) -> None:
    sim = Sim(make_spec(V1, router=router, replicas=20)).deploy()
    sim.settle = False
    sim.new_version(V2)
    actions = sim.tick(10)
    assert sim.phase == Phase.PREPARING
    assert sim.status.stable is not None and sim.status.stable.revision == r(V1)
    assert sim.status.canary is not None and sim.status.canary.revision == r(V2)
    assert sim.status.canary_started_at == sim.now and sim.status.current_step is None
    assert set(ensured(actions)) == {"stable", "canary"}
    assert traffic(actions) == SetTraffic(r(V1), r(V2), 0)
    assert "CanaryStarted" in reasons(actions)

    for _ in range(5):
        actions = sim.tick(60)
        assert sim.phase == Phase.PREPARING and traffic(actions).canary_weight == 0

    sim.make_ready()
    sim.confirm()
    actions = sim.tick(1)
    assert sim.phase == Phase.PROGRESSING
    assert (sim.status.current_step, sim.weight) == (1, 5)
    assert sim.status.step_started_at == sim.now
    assert traffic(actions) == SetTraffic(r(V1), r(V2), 5)
    assert "StepStarted" in reasons(actions)
    assert [(s.step, s.weight) for s in sim.status.steps] == [(1, 5)]


def test_single_step_of_100_promotes_as_soon_as_the_canary_is_ready() -> None:
    sim = Sim(make_spec(V1, steps=[100], router="istio")).deploy()
    sim.new_version(V2)
    sim.tick()
    assert sim.phase == Phase.PREPARING
    sim.tick(1)
    assert sim.phase == Phase.PROMOTING and sim.weight == 100


def test_steps_stopping_short_of_100_end_with_an_implied_promotion() -> None:
    sim = Sim(make_spec(V1, steps=[10, 40], router="istio")).to_progressing(V2)
    seen = []
    while sim.phase == Phase.PROGRESSING:
        seen.append(sim.weight)
        sim.pass_step()
    assert seen == [10, 40]
    assert sim.phase == Phase.PROMOTING and sim.status.current_step == 3


# ----------------------------------------------------------------------------------------- step timing


def test_a_step_advances_only_once_its_duration_has_passed() -> None:
    sim = Sim(make_spec(V1, step_duration="5m")).to_progressing(V2)
    started = sim.status.step_started_at
    assert next_wakeup(sim.spec, sim.status, sim.now) == timedelta(minutes=5)
    sim.tick(timedelta(minutes=5) - timedelta(seconds=1))
    assert sim.status.current_step == 1 and sim.status.step_started_at == started
    assert next_wakeup(sim.spec, sim.status, sim.now) == timedelta(seconds=1)
    sim.tick(1)
    assert (sim.status.current_step, sim.weight) == (2, 20)
    assert sim.status.step_started_at == sim.now


def test_a_restart_mid_step_neither_resets_nor_skips_the_step() -> None:
    sim = Sim(make_spec(V1, step_duration="5m"), restart_every_tick=False).to_progressing(V2)
    started = sim.status.step_started_at
    assert started is not None
    sim.tick(120)
    restored = roundtrip(sim.status)
    assert restored == sim.status  # the wire form loses nothing

    # An operator restarted one minute later carries on with the same step and the same timer.
    status, _ = decide(sim.spec, restored, sim.observations(), started + timedelta(minutes=3))
    assert status.current_step == 1 and status.step_started_at == started

    # Down for three step durations: on return it advances exactly one step, not three.
    status, actions = decide(sim.spec, restored, sim.observations(), started + timedelta(minutes=15))
    assert status.current_step == 2 and traffic(actions).canary_weight == 20


def test_restarting_every_tick_gives_the_same_rollout_as_never_restarting() -> None:
    spec = make_spec(V1, metrics=[ERROR_RATE], failureLimit=2)
    script: list[tuple[float, Verdict | None]] = [
        (0, None),
        (1, None),
        (1, None),
        (60, Verdict.SUCCESSFUL),
        (60, Verdict.FAILED),
        (60, Verdict.INCONCLUSIVE),
        (60, Verdict.SUCCESSFUL),
        (120, None),
        (60, Verdict.ERROR),
        (60, Verdict.SUCCESSFUL),
        (300, None),
        (60, Verdict.SUCCESSFUL),
        (300, None),
        (1, None),
        (1, None),
    ]
    sims = [Sim(spec, restart_every_tick=flag).deploy() for flag in (True, False)]
    for sim in sims:
        sim.new_version(V2)
    for advance, verdict in script:
        for sim in sims:
            sim.tick(advance, analysis=analysis_round(verdict) if verdict else None)
        assert sims[0].status == sims[1].status
        assert sims[0].actions == sims[1].actions
    assert sims[0].phase == Phase.HEALTHY and sims[0].status.stable_version == V2


@pytest.mark.parametrize("router", MESH)
def test_a_step_waits_for_the_router_to_confirm_its_weight(router: str) -> None:
    sim = Sim(make_spec(V1, router=router)).to_progressing(V2)
    sim.settle = False
    sim.mesh_confirmed = False
    sim.tick(sim.step_duration() * 2)
    assert sim.status.current_step == 1
    assert "confirm" in (sim.status.message or "")
    sim.confirm()
    sim.tick(1)
    assert sim.status.current_step == 2


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_a_full_promotion_switches_which_revision_is_stable(router: str) -> None:
    sim = Sim(make_spec(V1, router=router, replicas=20, scale_down_delay="30s")).to_progressing(V2)
    v2_template = sim.status.canary.template if sim.status.canary else None
    seen = []
    while sim.phase == Phase.PROGRESSING:
        seen.append((sim.status.current_step, sim.weight))
        sim.pass_step()
    assert seen == [(1, 5), (2, 20), (3, 50)]
    assert sim.phase == Phase.PROMOTING and sim.weight == 100
    assert traffic(sim.actions) == SetTraffic(r(V1), r(V2), 100)

    actions = sim.run_until(Phase.HEALTHY)
    assert sim.status.stable is not None
    assert sim.status.stable.revision == r(V2)  # the canary's revision, not v1 re-templated
    assert sim.status.stable.template == v2_template
    assert sim.status.canary is None and sim.weight == 0
    assert set(ensured(actions)) == {"stable"}
    assert ensured(actions)["stable"].revision.revision == r(V2)
    assert ensured(actions)["stable"].replicas == 20
    assert traffic(actions) == SetTraffic(r(V2), None, 0)
    record = sim.status.history[-1]
    assert (record.version, record.from_version, record.outcome) == (V2, V1, RolloutOutcome.PROMOTED)
    assert [s.weight for s in record.steps] == [5, 20, 50]
    assert "Promoted" in reasons(actions)

    # v1 keeps running for scaleDownDelay after the promotion was confirmed, then goes.
    since = sim.status.retiring[0].since
    assert [x.revision for x in sim.status.retiring] == [r(V1)]
    assert r(V1) in sim.revisions
    assert removed(sim.tick(since + timedelta(seconds=29) - sim.now)) == set()
    assert removed(sim.tick(1)) == {r(V1)}
    sim.tick(1)
    assert sim.status.retiring == [] and set(sim.revisions) == {r(V2)}
    assert sim.status.stable_version == V2


# -------------------------------------------------------------------------------------------- analysis


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([], Verdict.SUCCESSFUL),
        ([Verdict.SUCCESSFUL, Verdict.SUCCESSFUL], Verdict.SUCCESSFUL),
        ([Verdict.SUCCESSFUL, Verdict.INCONCLUSIVE], Verdict.INCONCLUSIVE),
        ([Verdict.INCONCLUSIVE, Verdict.ERROR], Verdict.ERROR),
        ([Verdict.ERROR, Verdict.FAILED, Verdict.INCONCLUSIVE], Verdict.FAILED),
    ],
)
def test_round_verdict_precedence(verdicts: list[Verdict], expected: Verdict) -> None:
    assert round_verdict([measurement(v, f"m{i}") for i, v in enumerate(verdicts)]) == expected


def test_dry_run_measurements_never_count() -> None:
    dry = [measurement(v, f"d{v}", dry_run=True) for v in (Verdict.FAILED, Verdict.ERROR)]
    assert round_verdict(dry) == Verdict.SUCCESSFUL
    assert round_verdict([*dry, measurement(Verdict.INCONCLUSIVE)]) == Verdict.INCONCLUSIVE

    sim = Sim(make_spec(V1, metrics=[ERROR_RATE], step_duration="1h")).to_progressing(V2)
    shadow = AnalysisRound([measurement(Verdict.SUCCESSFUL), *dry])
    sim.tick(60, analysis=shadow)
    assert sim.phase == Phase.PROGRESSING
    assert sim.status.analysis.failures == 0
    assert sim.status.analysis.last_verdict == Verdict.SUCCESSFUL
    assert len(sim.status.last_measurements) == 3  # recorded all the same


def analysed(step_duration: str = "1h", **analysis: object) -> Sim:
    return Sim(make_spec(V1, metrics=[ERROR_RATE], step_duration=step_duration, **analysis)).to_progressing(
        V2
    )


HOLD = {"onInconclusive": "Hold"}
ROLLBACK = {"onInconclusive": "Rollback"}
OK, FAIL, INC, ERR = Verdict.SUCCESSFUL, Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.ERROR


@pytest.mark.parametrize(
    ("analysis", "verdicts", "expected"),
    [
        pytest.param({}, [FAIL], Phase.ROLLING_BACK, id="first-failure-rolls-back"),
        pytest.param({"failureLimit": 2}, [FAIL], Phase.PROGRESSING, id="failure-below-limit"),
        pytest.param({"failureLimit": 2}, [FAIL, OK, OK, FAIL], Phase.ROLLING_BACK, id="failures-add-up"),
        pytest.param(HOLD, [INC] * 12, Phase.PROGRESSING, id="hold-waits-forever"),
        pytest.param({**ROLLBACK, "inconclusiveLimit": 3}, [INC, INC], Phase.PROGRESSING, id="incl-below"),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 3}, [INC, INC, INC], Phase.ROLLING_BACK, id="incl-limit"
        ),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 3},
            [INC, INC, OK, INC, INC],
            Phase.PROGRESSING,
            id="incl-row-broken",
        ),
        pytest.param(HOLD, [ERR] * 20, Phase.PROGRESSING, id="errors-never-fail-with-hold"),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 1, "consecutiveErrorLimit": 2},
            [ERR],
            Phase.PROGRESSING,
            id="err-1",
        ),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 1, "consecutiveErrorLimit": 2},
            [ERR, ERR],
            Phase.ROLLING_BACK,
            id="errors-at-limit-count-as-inconclusive",
        ),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 2, "consecutiveErrorLimit": 4},
            [ERR] * 4,
            Phase.PROGRESSING,
            id="fourth-error-is-first-inconclusive",
        ),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 2, "consecutiveErrorLimit": 4},
            [ERR] * 5,
            Phase.ROLLING_BACK,
            id="fifth-error-is-second-inconclusive",
        ),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 1, "consecutiveErrorLimit": 2},
            [ERR, OK, ERR],
            Phase.PROGRESSING,
            id="success-breaks-error-row",
        ),
        pytest.param(
            {**ROLLBACK, "inconclusiveLimit": 2, "consecutiveErrorLimit": 2},
            [ERR, INC, ERR],
            Phase.PROGRESSING,
            id="inconclusive-breaks-error-row",
        ),
    ],
)
def test_analysis_limits(analysis: dict[str, object], verdicts: list[Verdict], expected: Phase) -> None:
    sim = analysed(**analysis)
    for verdict in verdicts:
        assert sim.phase == Phase.PROGRESSING
        sim.tick_analysed(60, verdict)
    assert sim.phase == expected
    assert sim.status.current_step == 1  # the step lasts an hour: nothing advanced
    if expected == Phase.ROLLING_BACK:
        assert sim.weight == 0
        sim.run_until(Phase.ROLLED_BACK)
        assert sim.status.history[-1].outcome == RolloutOutcome.ROLLED_BACK
        assert V2 in sim.status.rejected_versions


def test_failed_round_names_the_metric_and_records_the_step_report() -> None:
    sim = analysed()
    failed = AnalysisRound([measurement(Verdict.FAILED, "error-rate").model_copy(update={"value": 0.2})])
    sim.tick(60, analysis=failed)
    assert sim.phase == Phase.ROLLING_BACK
    warnings = [a for a in sim.actions if isinstance(a, EmitEvent) and a.reason == "AnalysisFailed"]
    assert warnings and warnings[0].type == "Warning" and "error-rate=0.2" in warnings[0].message
    assert sim.status.ending is not None and "error-rate" in sim.status.ending.reason
    report = sim.status.steps[0]
    assert (report.step, report.verdict, report.rounds) == (1, Verdict.FAILED, 1)


def test_a_step_needs_a_successful_round_before_it_advances() -> None:
    sim = analysed(step_duration="5m")
    sim.tick(600)
    assert sim.status.current_step == 1
    assert "successful analysis" in (sim.status.message or "")
    sim.tick(0, analysis=analysis_round(INC))
    sim.tick(60)
    assert sim.status.current_step == 1  # the last round was inconclusive: hold
    sim.tick(0, analysis=analysis_round(OK))
    assert sim.status.current_step == 2  # passed and due: advances in the same tick
    assert sim.status.analysis.step_successes == 0  # counters restart with the step


def test_analysis_is_due_an_interval_after_the_step_began_and_after_each_round() -> None:
    sim = analysed(step_duration="5m")
    start = sim.now
    assert not analysis_due(sim.spec, sim.status, start + timedelta(seconds=59))
    assert analysis_due(sim.spec, sim.status, start + timedelta(seconds=60))
    sim.tick(60, analysis=analysis_round(OK))
    assert not analysis_due(sim.spec, sim.status, sim.now + timedelta(seconds=59))
    assert analysis_due(sim.spec, sim.status, sim.now + timedelta(seconds=60))

    healthy = Sim(make_spec(V1, metrics=[ERROR_RATE])).deploy()
    assert not analysis_due(healthy.spec, healthy.status, healthy.now + timedelta(hours=1))
    no_metrics = Sim(make_spec(V1)).to_progressing(V2)
    assert not analysis_due(no_metrics.spec, no_metrics.status, no_metrics.now + timedelta(hours=1))


# ------------------------------------------------------------------------------------ progress deadline


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_a_canary_that_never_becomes_ready_is_rolled_back_at_the_deadline(router: str) -> None:
    sim = Sim(make_spec(V1, router=router, progress_deadline="10m")).deploy()
    sim.broken_versions.add(V2)
    sim.new_version(V2)
    sim.tick()
    assert sim.phase == Phase.PREPARING
    for _ in range(10):
        actions = sim.tick(60)
        assert sim.phase == Phase.PREPARING
        assert traffic(actions).canary_weight == 0 and sim.weight == 0
    actions = sim.tick(1)
    assert sim.phase == Phase.ROLLING_BACK and traffic(actions).canary_weight == 0
    sim.run_until(Phase.ROLLED_BACK)
    assert "progressDeadline" in sim.status.history[-1].reason
    assert sim.status.rejected_versions == [V2]


# ----------------------------------------------------------------------------------- rollback ordering


@pytest.mark.parametrize("router", MESH)
def test_rollback_moves_traffic_first_and_removes_the_canary_after_confirmation_and_delay(
    router: str,
) -> None:
    sim = analysed(router=router, scale_down_delay="30s", step_duration="5m")
    sim.settle = False
    actions = sim.tick_analysed(60, FAIL)
    assert sim.phase == Phase.ROLLING_BACK
    assert traffic(actions) == SetTraffic(r(V1), r(V2), 0)
    assert set(ensured(actions)) == {"stable", "canary"} and removed(actions) == set()

    for _ in range(5):  # however long the router takes, the canary stays
        actions = sim.tick(60)
        assert sim.phase == Phase.ROLLING_BACK and removed(actions) == set()
        assert "canary" in ensured(actions)

    sim.confirm()
    actions = sim.tick(5)
    confirmed_at = sim.now
    assert sim.phase == Phase.ROLLED_BACK and sim.status.canary is None
    assert traffic(actions) == SetTraffic(r(V1), None, 0)
    assert removed(actions) == set()
    assert [(x.revision, x.since) for x in sim.status.retiring] == [(r(V2), confirmed_at)]
    assert removed(sim.tick(29)) == set()
    assert removed(sim.tick(1)) == {r(V2)}
    sim.tick(1)
    assert sim.status.retiring == [] and set(sim.revisions) == {r(V1)}
    assert condition(sim, cond.READY) == ("False", cond.REASON_ROLLED_BACK)


def test_replica_router_rollback_withdraws_canary_pods_at_once_and_stable_never_shrank() -> None:
    sim = Sim(make_spec(V1, replicas=4, steps=[20, 50])).to_progressing(V2)
    sim.pass_step()
    sim.tick(1)
    assert sim.weight == 50
    assert {k: (v.desired, v.ready) for k, v in sim.revisions.items()} == {r(V1): (4, 4), r(V2): (4, 4)}
    sim.settle = False
    sim.annotate("abort", "1")
    actions = sim.tick(1)
    assert sim.phase == Phase.ROLLING_BACK
    # stable kept every pod during the rollout: the canary's pods go at once
    assert (ensured(actions)["stable"].replicas, ensured(actions)["canary"].replicas) == (4, 0)


def test_replica_router_scale_up_between_steps_is_not_a_readiness_loss() -> None:
    sim = Sim(make_spec(V1, replicas=4, steps=[20, 50])).to_progressing(V2)
    sim.settle = False
    actions = sim.pass_step()  # 20% -> 50%: the canary is asked for three more pods
    assert sim.weight == 50 and ensured(actions)["canary"].replicas == 4
    started = sim.status.step_started_at
    actions = sim.tick(1)  # the new pods are not ready yet
    assert sim.phase == Phase.PROGRESSING and sim.weight == 50
    assert "CanaryUnavailable" not in reasons(actions)
    sim.make_ready()
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING and sim.status.step_started_at == started


def test_replica_router_shrinks_the_canary_when_stable_loses_pods_and_holds_the_step() -> None:
    """A hand edit (kubectl scale deploy <stable> --replicas=0) or a stable crash must never hand the
    unjudged canary more than its step: the canary shrinks with stable's ready pods, status reports
    the share actually served, and the rollout holds until the split is back."""
    sim = Sim(make_spec(V1, replicas=4, steps=[20, 50], metrics=[ERROR_RATE])).to_progressing(V2)
    assert sim.weight == 20 and sim.revisions[r(V2)].ready == 1
    sim.settle = False
    sim.revisions[r(V1)].ready = 0  # stable's pods are gone
    actions = sim.tick(1)
    assert sim.status.served_weight == 100.0
    assert "TrafficAboveStep" in reasons(actions)
    assert (ensured(actions)["stable"].replicas, ensured(actions)["canary"].replicas) == (4, 0)
    # The canary's pods go (it is then unavailable: back to weight 0 until stable recovers); however
    # long that takes, the rollout never moves past step 1.
    sim.revisions[r(V2)].ready = 0
    for _ in range(3):
        actions = sim.tick(
            120, analysis=analysis_round("Successful") if sim.phase == Phase.PROGRESSING else None
        )
        assert sim.weight <= 20 and sim.status.current_step == 1
        assert "TrafficAboveStep" not in reasons(actions)  # said once per episode
        assert sim.status.served_weight in (None, 0.0)
    sim.settle = True
    sim.make_ready()
    sim.run_until(Phase.PROGRESSING)
    assert sim.status.current_step == 1 and sim.weight == 20
    assert sim.status.served_weight == 20.0


# -------------------------------------------------------------------------------- changes mid-rollout


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_a_new_version_mid_rollout_supersedes_the_canary_and_restarts_at_step_1(router: str) -> None:
    sim = Sim(make_spec(V1, router=router)).to_progressing(V2)
    sim.pass_step()
    assert sim.status.current_step == 2
    sim.settle = False
    sim.new_version(V3)
    actions = sim.tick(10)
    assert sim.phase == Phase.ROLLING_BACK
    assert traffic(actions) == SetTraffic(r(V1), r(V2), 0)  # traffic back to v1 first
    assert sim.status.ending is not None and sim.status.ending.outcome == RolloutOutcome.SUPERSEDED

    sim.make_ready()
    sim.confirm()
    sim.run_until(Phase.HEALTHY)
    record = sim.status.history[-1]
    assert (record.version, record.outcome) == (V2, RolloutOutcome.SUPERSEDED)
    assert V3 in record.reason
    assert V2 not in sim.status.rejected_versions

    actions = sim.tick(1)
    assert sim.phase == Phase.PREPARING
    assert sim.status.canary is not None and sim.status.canary.revision == r(V3)
    assert sim.status.current_step is None and sim.weight == 0 and sim.status.steps == []
    sim.settle = True
    sim.make_ready()
    sim.confirm()
    sim.run_until(Phase.PROGRESSING)
    assert (sim.status.current_step, sim.weight) == (1, 5)


def test_spec_reverting_to_the_stable_version_ends_the_rollout_without_rejecting() -> None:
    sim = Sim(make_spec(V1)).to_progressing(V2)
    sim.new_version(V1)
    sim.tick(1)
    assert sim.phase == Phase.ROLLING_BACK and sim.weight == 0
    assert sim.status.ending is not None and "stable version" in sim.status.ending.reason
    sim.run_until(Phase.HEALTHY)
    assert sim.status.canary is None
    assert sim.status.stable is not None and sim.status.stable.revision == r(V1)
    assert sim.status.history[-1].outcome == RolloutOutcome.SUPERSEDED
    assert sim.status.rejected_versions == []
    for _ in range(3):
        sim.tick(60)
        assert sim.phase == Phase.HEALTHY and sim.status.canary is None


# ------------------------------------------------------------------------------------------------ pause


def test_pause_holds_the_step_and_resume_restarts_its_timer() -> None:
    sim = Sim(make_spec(V1, step_duration="5m")).to_progressing(V2)
    sim.tick(60)
    sim.set_paused(True)
    actions = sim.tick(1)
    assert sim.phase == Phase.PAUSED and (sim.status.current_step, sim.weight) == (1, 5)
    assert "Paused" in reasons(actions)
    assert condition(sim, cond.READY) == ("False", cond.REASON_PAUSED)
    assert condition(sim, cond.PROGRESSING) == ("Unknown", cond.REASON_PAUSED)

    actions = sim.tick(timedelta(minutes=30))
    assert sim.phase == Phase.PAUSED and sim.status.current_step == 1
    assert traffic(actions).canary_weight == 5

    sim.set_paused(False)
    actions = sim.tick(1)
    resumed = sim.now
    assert sim.phase == Phase.PROGRESSING and sim.status.current_step == 1
    assert sim.status.step_started_at == resumed
    assert "Resumed" in reasons(actions)
    sim.tick(timedelta(minutes=5) - timedelta(seconds=1))
    assert sim.status.current_step == 1
    sim.tick(1)
    assert sim.status.current_step == 2


def test_a_paused_spec_does_not_start_a_canary() -> None:
    sim = Sim(make_spec(V1, paused=True)).deploy()
    sim.new_version(V2)
    actions = sim.tick(1)
    assert sim.phase == Phase.HEALTHY and sim.status.canary is None
    assert set(ensured(actions)) == {"stable"}
    assert "paused" in (sim.status.message or "")
    sim.set_paused(False)
    sim.tick(1)
    assert sim.phase == Phase.PREPARING


def test_pause_while_preparing_keeps_a_ready_canary_at_weight_0() -> None:
    sim = Sim(make_spec(V1)).deploy()
    sim.settle = False
    sim.new_version(V2)
    sim.tick(1)
    sim.set_paused(True)
    sim.make_ready()
    actions = sim.tick(1)
    assert sim.phase == Phase.PREPARING and traffic(actions).canary_weight == 0
    assert "paused" in (sim.status.message or "")
    sim.set_paused(False)
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING and sim.status.current_step == 1


# ---------------------------------------------------------------------------------- manual requests


def test_promote_annotation_acts_once_per_value() -> None:
    sim = Sim(make_spec(V1, router="istio")).to_progressing(V2)
    sim.annotate("promote", "1")
    actions = sim.tick(1)
    assert sim.phase == Phase.PROMOTING and sim.weight == 100
    assert sim.status.current_step == len(sim.spec.rollout.effective_steps())
    assert sim.status.handled_requests == {"promote": "1"}
    assert "Promoting" in reasons(actions)
    sim.run_until(Phase.HEALTHY)
    assert sim.status.stable_version == V2
    assert "mlcanary.io/promote" in sim.status.history[-1].reason

    sim.new_version(V3)
    sim.run_until(Phase.PROGRESSING)
    for _ in range(3):  # the same value again does nothing
        sim.tick(10)
        assert sim.phase == Phase.PROGRESSING and sim.status.current_step == 1
    sim.annotate("promote", "2")
    sim.tick(1)
    assert sim.phase == Phase.PROMOTING
    assert sim.status.handled_requests["promote"] == "2"


def test_abort_annotation_rolls_back_and_rejects_the_version() -> None:
    sim = Sim(make_spec(V1)).to_progressing(V2)
    sim.annotate("abort", "please")
    actions = sim.tick(1)
    assert sim.phase == Phase.ROLLING_BACK and traffic(actions).canary_weight == 0
    sim.run_until(Phase.ROLLED_BACK)
    assert sim.status.rejected_versions == [V2]
    record = sim.status.history[-1]
    assert record.outcome == RolloutOutcome.ROLLED_BACK and "abort" in record.reason


def test_a_rolled_back_version_is_not_started_again_until_retry() -> None:
    sim = Sim(make_spec(V1)).to_progressing(V2)
    sim.annotate("abort", "1")
    sim.tick(1)
    sim.run_until(Phase.ROLLED_BACK)
    for _ in range(5):  # re-syncs of the same spec (each tick is a restart)
        actions = sim.tick(600)
        assert sim.phase == Phase.ROLLED_BACK and sim.status.canary is None
        assert set(ensured(actions)) == {"stable"}

    # back to the stable version, then to the rejected one again: still rejected
    sim.new_version(V1)
    sim.tick(1)
    assert sim.phase == Phase.HEALTHY
    sim.new_version(V2)
    sim.tick(1)
    assert sim.phase == Phase.ROLLED_BACK and sim.status.canary is None

    sim.annotate("retry", "1")
    actions = sim.tick(1)
    assert sim.phase == Phase.PREPARING and sim.status.canary_version == V2
    assert sim.status.rejected_versions == []
    assert {"Retry", "CanaryStarted"} <= set(reasons(actions))

    # rejected again; the retry value already used does not restart it
    sim.annotate("abort", "2")
    sim.tick(1)
    sim.run_until(Phase.ROLLED_BACK)
    sim.tick(60)
    assert sim.phase == Phase.ROLLED_BACK and sim.status.canary is None
    sim.annotate("retry", "2")
    sim.tick(1)
    assert sim.phase == Phase.PREPARING


def test_another_version_may_start_while_one_is_rejected() -> None:
    sim = Sim(make_spec(V1)).to_progressing(V2)
    sim.annotate("abort", "1")
    sim.tick(1)
    sim.run_until(Phase.ROLLED_BACK)
    sim.new_version(V3)
    sim.tick(1)
    assert sim.phase == Phase.PREPARING and sim.status.canary_version == V3
    assert sim.status.rejected_versions == [V2]


def test_requests_with_nothing_to_act_on_are_recorded_and_ignored() -> None:
    sim = Sim(make_spec(V1)).deploy()
    sim.annotate("promote", "a").annotate("abort", "b").annotate("retry", "c")
    actions = sim.tick(1)
    assert sim.phase == Phase.HEALTHY
    assert reasons(actions).count("RequestIgnored") == 2
    assert sim.status.handled_requests == {"promote": "a", "abort": "b", "retry": "c"}
    sim.new_version(V2)
    sim.run_until(Phase.PROGRESSING)
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING  # old values do not act on the new rollout


def test_annotations_present_at_creation_are_not_acted_on_later() -> None:
    sim = Sim(make_spec(V1), annotations={"mlcanary.io/promote": "x", "mlcanary.io/abort": "y"})
    sim.deploy()
    sim.new_version(V2)
    sim.run_until(Phase.PROGRESSING)
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING


def test_retry_during_a_rollout_is_ignored_with_an_event() -> None:
    sim = Sim(make_spec(V1)).to_progressing(V2)
    sim.annotate("retry", "1")
    actions = sim.tick(1)
    assert sim.phase == Phase.PROGRESSING
    assert "RequestIgnored" in reasons(actions)


# ----------------------------------------------------------------------------------------- readiness


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_a_canary_losing_readiness_mid_step_drops_to_0_and_resumes_the_same_step(router: str) -> None:
    sim = Sim(make_spec(V1, router=router)).to_progressing(V2)
    sim.pass_step()
    sim.tick(60)
    assert (sim.status.current_step, sim.weight) == (2, 20)
    sim.break_version(V2)
    actions = sim.tick(1)
    assert sim.phase == Phase.PREPARING and sim.weight == 0
    assert traffic(actions).canary_weight == 0
    assert any(
        a.reason == "CanaryUnavailable" and a.type == "Warning" for a in actions if isinstance(a, EmitEvent)
    )
    assert sim.status.current_step == 2
    sim.tick(60)
    assert sim.phase == Phase.PREPARING
    sim.heal_version(V2)
    sim.make_ready()
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING and (sim.status.current_step, sim.weight) == (2, 20)
    assert sim.status.step_started_at == sim.now


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_a_canary_losing_readiness_while_promoting_goes_back_to_0_then_promotes(router: str) -> None:
    sim = Sim(make_spec(V1, router=router)).to_progressing(V2)
    sim.settle = False
    sim.annotate("promote", "1")
    sim.tick(1)
    assert sim.phase == Phase.PROMOTING
    sim.break_version(V2)
    sim.tick(1)
    assert sim.phase == Phase.PREPARING and sim.weight == 0
    sim.heal_version(V2)
    sim.settle = True
    sim.make_ready()
    sim.tick(1)
    assert sim.phase == Phase.PROMOTING and sim.weight == 100
    sim.run_until(Phase.HEALTHY)
    assert sim.status.stable_version == V2


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_a_canary_losing_readiness_while_paused_drops_to_0(router: str) -> None:
    sim = Sim(make_spec(V1, router=router, progress_deadline="10m")).to_progressing(V2)
    sim.set_paused(True)
    sim.tick(1)
    assert sim.phase == Phase.PAUSED and sim.weight == 5
    sim.break_version(V2)
    actions = sim.tick(1)
    assert sim.weight == 0 and traffic(actions).canary_weight == 0
    assert sim.phase == Phase.PREPARING
    sim.heal_version(V2)
    sim.make_ready()
    sim.tick(1)
    assert sim.phase == Phase.PREPARING and sim.weight == 0  # ready, but still paused
    sim.set_paused(False)
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING and (sim.status.current_step, sim.weight) == (1, 5)


@pytest.mark.parametrize("phase", [Phase.PROGRESSING, Phase.PAUSED])
def test_promote_is_not_applied_to_an_unready_canary(phase: Phase) -> None:
    sim = Sim(make_spec(V1, router="istio")).to_progressing(V2)
    if phase == Phase.PAUSED:
        sim.set_paused(True)
        sim.tick(1)
    assert sim.phase == phase
    sim.break_version(V2)
    sim.annotate("promote", "1")
    actions = sim.tick(1)
    assert sim.weight == 0 and traffic(actions).canary_weight == 0
    assert sim.phase == Phase.PREPARING
    assert "RequestIgnored" in reasons(actions)


def test_mesh_router_needs_every_canary_pod_ready() -> None:
    sim = Sim(make_spec(V1, router="istio", replicas=3)).deploy()
    sim.settle = False
    sim.new_version(V2)
    sim.tick(1)
    sim.revisions[r(V2)].ready = 2
    sim.tick(1)
    assert sim.phase == Phase.PREPARING
    sim.make_ready()
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING


# --------------------------------------------------------------------------------------------- orphans


def test_orphan_revisions_are_removed_and_known_ones_never() -> None:
    sim = Sim(make_spec(V1)).to_progressing(V2)
    orphan = f"{NAME}-v0-9-0-deadbeef"
    sim.revisions[orphan] = FakeRevision(make_spec("0.9.0").revision_template(), 2, 2)
    actions = sim.tick(1)
    assert removed(actions) == {orphan}
    assert orphan not in sim.revisions
    assert sim.phase == Phase.PROGRESSING


# ------------------------------------------------------------------------------------ replica counts


def test_replica_router_sizes_both_revisions_from_the_weight() -> None:
    sim = Sim(make_spec(V1, replicas=4, steps=[20, 50])).deploy()
    sim.settle = False
    sim.new_version(V2)
    actions = sim.tick(1)
    # Preparing: the canary is sized for step 1 (1 pod beside 4 = 20%); stable keeps every pod
    assert (ensured(actions)["stable"].replicas, ensured(actions)["canary"].replicas) == (4, 1)
    sim.make_ready()
    actions = sim.tick(1)
    assert sim.weight == 20
    assert (ensured(actions)["stable"].replicas, ensured(actions)["canary"].replicas) == (4, 1)
    sim.settle = True
    actions = sim.pass_step()
    assert sim.weight == 50
    assert (ensured(actions)["stable"].replicas, ensured(actions)["canary"].replicas) == (4, 4)
    actions = sim.pass_step()
    assert sim.phase == Phase.PROMOTING
    # the canary already runs 4 ready pods from the 50% step, so stable goes at once
    assert (ensured(actions)["stable"].replicas, ensured(actions)["canary"].replicas) == (0, 4)


def test_replica_router_keeps_stable_pods_while_a_paused_canary_waits_at_weight_0() -> None:
    """A promotion interrupted by readiness loss, then paused: Preparing is sized for the promotion
    step, yet stable must keep its pods while the canary's weight is 0."""
    sim = Sim(make_spec(V1, replicas=2, steps=[50])).to_progressing(V2)
    sim.settle = False
    sim.annotate("promote", "1")
    sim.tick(1)
    sim.set_paused(True)
    sim.break_version(V2)
    sim.tick(1)
    assert sim.phase == Phase.PREPARING and sim.weight == 0
    sim.heal_version(V2)
    for _ in range(3):
        sim.make_ready()
        actions = sim.tick(1)
        assert sim.phase == Phase.PREPARING and sim.weight == 0
        assert ensured(actions)["stable"].replicas == 2
    sim.set_paused(False)
    sim.tick(1)
    assert sim.phase == Phase.PROMOTING


@pytest.mark.parametrize("router", MESH)
def test_mesh_routers_run_both_revisions_at_full_size(router: str) -> None:
    sim = Sim(make_spec(V1, router=router, replicas=4)).to_progressing(V2)
    for _ in range(3):
        actions = sim.pass_step()
        assert (ensured(actions)["stable"].replicas, ensured(actions)["canary"].replicas) == (4, 4)


# ------------------------------------------------------------------------------- transitions table


def build(phase: Phase) -> Sim:
    """A simulator in ``phase`` (istio router, so the test controls confirmation), not settling."""
    sim = Sim(make_spec(V1, router="istio"))
    if phase == Phase.INITIALIZING:
        sim.settle = False
        sim.tick()
        return sim
    sim.deploy()
    if phase == Phase.HEALTHY:
        sim.settle = False
        return sim
    if phase == Phase.PREPARING:
        sim.settle = False
        sim.new_version(V2)
        sim.tick()
        return sim
    sim.to_progressing(V2)
    sim.settle = False
    sim.mesh_confirmed = True
    if phase == Phase.PAUSED:
        sim.set_paused(True)
        sim.tick(1)
    elif phase == Phase.PROMOTING:
        sim.annotate("promote", "p1")
        sim.tick(1)
    elif phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        sim.annotate("abort", "a1")
        sim.tick(1)
        if phase == Phase.ROLLED_BACK:
            sim.confirm()
            sim.tick(1)
    assert sim.phase == phase
    return sim


def ev_nothing(sim: Sim) -> None:
    sim.tick(1)


def ev_ready_confirmed(sim: Sim) -> None:
    sim.make_ready()
    sim.confirm()
    sim.tick(1)


def ev_unready(sim: Sim) -> None:
    sim.break_version(V2)
    sim.tick(1)


def ev_step_elapsed(sim: Sim) -> None:
    sim.confirm()
    sim.tick(sim.step_duration())


def ev_step_elapsed_unconfirmed(sim: Sim) -> None:
    sim.mesh_confirmed = False
    sim.tick(sim.step_duration())


def ev_deadline(sim: Sim) -> None:
    sim.tick(timedelta(minutes=11))


def ev_failed_round(sim: Sim) -> None:
    sim.tick(60, analysis=analysis_round(Verdict.FAILED))


def ev_pause(sim: Sim) -> None:
    sim.set_paused(True)
    sim.tick(1)


def ev_resume(sim: Sim) -> None:
    sim.set_paused(False)
    sim.tick(1)


def request(name: str) -> Callable[[Sim], None]:
    def event(sim: Sim) -> None:
        sim.annotate(name, f"{name}-new")
        sim.tick(1)

    event.__name__ = f"ev_{name}"
    return event


def version(v: str) -> Callable[[Sim], None]:
    def event(sim: Sim) -> None:
        sim.new_version(v)
        sim.tick(1)

    event.__name__ = f"ev_version_{v}"
    return event


BOTH = {"stable", "canary"}
STABLE = {"stable"}
P = Phase
TRANSITIONS: list[tuple[Phase, Callable[[Sim], None], Phase, int, set[str], set[str]]] = [
    # start phase, event, expected phase, expected weight, EnsureRevision roles, events expected
    (P.INITIALIZING, ev_nothing, P.INITIALIZING, 0, STABLE, set()),
    (P.INITIALIZING, ev_ready_confirmed, P.HEALTHY, 0, STABLE, {"Ready"}),
    (P.HEALTHY, ev_nothing, P.HEALTHY, 0, STABLE, set()),
    (P.HEALTHY, version(V2), P.PREPARING, 0, BOTH, {"CanaryStarted"}),
    (P.HEALTHY, request("promote"), P.HEALTHY, 0, STABLE, {"RequestIgnored"}),
    (P.PREPARING, ev_nothing, P.PREPARING, 0, BOTH, set()),
    (P.PREPARING, ev_ready_confirmed, P.PROGRESSING, 5, BOTH, {"StepStarted"}),
    (P.PREPARING, ev_deadline, P.ROLLING_BACK, 0, BOTH, {"RollingBack"}),
    (P.PREPARING, request("abort"), P.ROLLING_BACK, 0, BOTH, {"Aborted"}),
    (P.PREPARING, version(V3), P.ROLLING_BACK, 0, BOTH, {"Superseding"}),
    (P.PROGRESSING, ev_nothing, P.PROGRESSING, 5, BOTH, set()),
    (P.PROGRESSING, ev_step_elapsed, P.PROGRESSING, 20, BOTH, {"StepAdvanced"}),
    (P.PROGRESSING, ev_step_elapsed_unconfirmed, P.PROGRESSING, 5, BOTH, set()),
    (P.PROGRESSING, ev_unready, P.PREPARING, 0, BOTH, {"CanaryUnavailable"}),
    (P.PROGRESSING, ev_failed_round, P.ROLLING_BACK, 0, BOTH, {"AnalysisFailed", "RollingBack"}),
    (P.PROGRESSING, ev_pause, P.PAUSED, 5, BOTH, {"Paused"}),
    (P.PROGRESSING, request("promote"), P.PROMOTING, 100, BOTH, {"Promoting"}),
    (P.PROGRESSING, request("abort"), P.ROLLING_BACK, 0, BOTH, {"Aborted"}),
    (P.PROGRESSING, request("retry"), P.PROGRESSING, 5, BOTH, {"RequestIgnored"}),
    (P.PROGRESSING, version(V3), P.ROLLING_BACK, 0, BOTH, {"Superseding"}),
    (P.PROGRESSING, version(V1), P.ROLLING_BACK, 0, BOTH, {"Superseding"}),
    (P.PAUSED, ev_step_elapsed, P.PAUSED, 5, BOTH, set()),
    (P.PAUSED, ev_resume, P.PROGRESSING, 5, BOTH, {"Resumed", "StepStarted"}),
    (P.PAUSED, ev_unready, P.PREPARING, 0, BOTH, {"CanaryUnavailable"}),
    (P.PAUSED, request("promote"), P.PROMOTING, 100, BOTH, {"Promoting"}),
    (P.PAUSED, request("abort"), P.ROLLING_BACK, 0, BOTH, {"Aborted"}),
    (P.PAUSED, version(V3), P.ROLLING_BACK, 0, BOTH, {"Superseding"}),
    (P.PROMOTING, ev_nothing, P.PROMOTING, 100, BOTH, set()),
    (P.PROMOTING, ev_ready_confirmed, P.HEALTHY, 0, STABLE, {"Promoted"}),
    (P.PROMOTING, ev_unready, P.PREPARING, 0, BOTH, {"CanaryUnavailable"}),
    (P.PROMOTING, request("abort"), P.ROLLING_BACK, 0, BOTH, {"Aborted"}),
    (P.PROMOTING, version(V3), P.ROLLING_BACK, 0, BOTH, {"Superseding"}),
    (P.ROLLING_BACK, ev_nothing, P.ROLLING_BACK, 0, BOTH, set()),
    (P.ROLLING_BACK, ev_ready_confirmed, P.ROLLED_BACK, 0, STABLE, {"RolledBack"}),
    (P.ROLLING_BACK, request("promote"), P.ROLLING_BACK, 0, BOTH, {"RequestIgnored"}),
    (P.ROLLED_BACK, ev_nothing, P.ROLLED_BACK, 0, STABLE, set()),
    (P.ROLLED_BACK, request("retry"), P.PREPARING, 0, BOTH, {"Retry", "CanaryStarted"}),
    (P.ROLLED_BACK, version(V1), P.HEALTHY, 0, STABLE, set()),
    (P.ROLLED_BACK, version(V3), P.PREPARING, 0, BOTH, {"CanaryStarted"}),
]


@pytest.mark.parametrize(
    ("start", "event", "phase", "weight", "roles", "events"),
    TRANSITIONS,
    ids=[f"{row[0]}-{row[1].__name__.removeprefix('ev_')}" for row in TRANSITIONS],
)
def test_transition_table(
    start: Phase,
    event: Callable[[Sim], None],
    phase: Phase,
    weight: int,
    roles: set[str],
    events: set[str],
) -> None:
    sim = build(start)
    event(sim)
    assert sim.phase == phase, sim.status.message
    assert sim.weight == weight
    assert traffic(sim.actions).canary_weight == weight
    assert set(ensured(sim.actions)) == roles
    assert events <= set(reasons(sim.actions))
    assert r(V1) not in removed(sim.actions)


# ---------------------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(
    ("phase", "ready", "progressing"),
    [
        (P.INITIALIZING, ("False", cond.REASON_INITIALIZING), ("True", cond.REASON_INITIALIZING)),
        (P.HEALTHY, ("True", cond.REASON_HEALTHY), ("False", cond.REASON_ROLLOUT_COMPLETE)),
        (P.PREPARING, ("False", "Preparing"), ("True", cond.REASON_CANARY_RUNNING)),
        (P.PROGRESSING, ("False", "Progressing"), ("True", cond.REASON_CANARY_RUNNING)),
        (P.PAUSED, ("False", cond.REASON_PAUSED), ("Unknown", cond.REASON_PAUSED)),
        (P.PROMOTING, ("False", "Promoting"), ("True", cond.REASON_CANARY_RUNNING)),
        (P.ROLLING_BACK, ("False", "RollingBack"), ("True", cond.REASON_CANARY_RUNNING)),
        (P.ROLLED_BACK, ("False", cond.REASON_ROLLED_BACK), ("False", cond.REASON_ROLLED_BACK)),
    ],
)
def test_conditions_per_phase(phase: Phase, ready: tuple[str, str], progressing: tuple[str, str]) -> None:
    sim = build(phase)
    assert condition(sim, cond.READY) == ready
    assert condition(sim, cond.PROGRESSING) == progressing
    assert condition(sim, cond.SPEC_VALID) == ("True", cond.REASON_VALID)
    assert {c.type for c in sim.status.conditions} == {cond.READY, cond.PROGRESSING, cond.SPEC_VALID}
    assert all(c.observed_generation == sim.generation for c in sim.status.conditions)
    assert sim.status.observed_generation == sim.generation


def test_condition_transition_time_moves_only_when_its_status_changes() -> None:
    sim = Sim(make_spec(V1)).deploy()
    became_ready = cond.get_condition(sim.status.conditions, cond.READY)
    assert became_ready is not None
    sim.tick(600)
    again = cond.get_condition(sim.status.conditions, cond.READY)
    assert again is not None and again.last_transition_time == became_ready.last_transition_time
    sim.new_version(V2)
    sim.tick(1)
    changed = cond.get_condition(sim.status.conditions, cond.READY)
    assert changed is not None and changed.status == "False" and changed.last_transition_time == sim.now


def test_invalid_spec_names_the_error_and_leaves_the_rollout_alone() -> None:
    sim = Sim(make_spec(V1)).to_progressing(V2)
    before = sim.status.model_copy(deep=True)
    error = "spec.rollout.steps: steps must be strictly increasing (20 then 5)"
    later = sim.now + timedelta(minutes=1)
    status = invalid_spec(sim.status, error, generation=7, now=later)
    assert sim.status == before  # input untouched
    spec_valid = cond.get_condition(status.conditions, cond.SPEC_VALID)
    ready = cond.get_condition(status.conditions, cond.READY)
    assert spec_valid is not None and ready is not None
    assert (spec_valid.status, spec_valid.reason, spec_valid.message) == ("False", "InvalidSpec", error)
    assert spec_valid.observed_generation == 7 and spec_valid.last_transition_time == later
    assert (ready.status, ready.reason) == ("False", cond.REASON_INVALID_SPEC)
    assert status.observed_generation == before.observed_generation  # generation 7 was not acted on
    assert (status.phase, status.canary, status.canary_weight, status.current_step) == (
        before.phase,
        before.canary,
        before.canary_weight,
        before.current_step,
    )
    # fixed spec: valid again
    sim.status = status
    sim.tick(1)
    assert condition(sim, cond.SPEC_VALID) == ("True", cond.REASON_VALID)


def test_observed_generation_follows_the_observations() -> None:
    sim = Sim(make_spec(V1)).deploy()
    assert sim.status.observed_generation == 1
    sim.new_version(V2)
    sim.tick(1)
    assert sim.status.observed_generation == 2
    sim.generation = 9
    sim.tick(1)
    assert sim.status.observed_generation == 9


# ------------------------------------------------------------------------------------ history, purity


def test_history_keeps_only_the_last_rollouts() -> None:
    sim = Sim(make_spec(V1, router="istio")).deploy()
    count = HISTORY_LIMIT + 3
    for i in range(count):
        sim.new_version(f"2.{i}.0")
        sim.tick(1)
        sim.annotate("abort", str(i))
        sim.tick(1)
        sim.run_until(Phase.ROLLED_BACK)
    assert len(sim.status.history) == HISTORY_LIMIT
    assert [h.version for h in sim.status.history] == [f"2.{i}.0" for i in range(3, count)]
    assert all(h.outcome == RolloutOutcome.ROLLED_BACK for h in sim.status.history)


def test_decide_is_pure() -> None:
    sim = Sim(make_spec(V1, metrics=[ERROR_RATE])).to_progressing(V2)
    status = sim.status.model_copy(deep=True)
    obs = sim.observations(analysis_round(Verdict.FAILED))
    at = sim.now + timedelta(minutes=1)
    first = decide(sim.spec, sim.status, obs, at)
    second = decide(sim.spec, sim.status, obs, at)
    assert first == second
    assert sim.status == status
    assert first[0].phase == Phase.ROLLING_BACK


def test_next_wakeup_is_only_for_a_running_step() -> None:
    sim = Sim(make_spec(V1)).deploy()
    assert next_wakeup(sim.spec, sim.status, sim.now) is None
    sim.to_progressing(V2)
    assert next_wakeup(sim.spec, sim.status, sim.now + timedelta(hours=1)) == timedelta(0)


def test_spec_with_an_identical_template_is_not_a_new_version() -> None:
    sim = Sim(make_spec(V1, replicas=20)).deploy()
    sim.spec = make_spec(V1, replicas=27)  # replicas are not part of the revision
    actions = sim.tick(1)
    assert sim.phase == Phase.HEALTHY and sim.status.canary is None
    assert ensured(actions)["stable"].replicas == 27
