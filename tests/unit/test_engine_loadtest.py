"""The load test gate (spec.loadTest) in the pure engine: Preparing -> LoadTesting -> step 1.

A fake Job world beside the conftest simulator: the engine's EnsureLoadTestJob creates a Job,
RemoveLoadTestJob deletes it, and the test decides when it ends and what its pod reported.
Every tick round-trips the status through its wire form (a restarted operator), as in test_engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import T0, Sim, make_spec, of_type, reasons, rev, spec_wire, traffic
from pydantic import ValidationError

from mlcanary.engine import Action, EnsureLoadTestJob, Observations, RemoveLoadTestJob
from mlcanary.gates.loadtest import JobObservation, Verdict, job_name, judge, parse_result
from mlcanary.models import LoadTest, LoadTestPhase, ModelDeploymentSpec, Phase, RolloutOutcome
from mlcanary.reconcile import format_validation_error

V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"
LOAD_TEST = {
    "rps": 50,
    "duration": "60s",
    "warmup": "10s",
    "slo": {"maxLatencyP95": "100ms", "maxLatencyP99": "250ms", "maxErrorRate": 0.01},
}


def result(**changes: float) -> dict[str, float]:
    good = {
        "requested_rps": 50.0,
        "achieved_rps": 49.8,
        "requests": 2988.0,
        "errors": 0.0,
        "error_rate": 0.0,
        "latency_p50_seconds": 0.004,
        "latency_p95_seconds": 0.02,
        "latency_p99_seconds": 0.05,
        "latency_max_seconds": 0.09,
        "duration_seconds": 60.0,
    }
    return {**good, **changes}


def load_tested_spec(version: str = V1, router: str = "gatewayAPI", **load_test: Any) -> ModelDeploymentSpec:
    wire = spec_wire(version, router=router)
    wire["loadTest"] = {**LOAD_TEST, **load_test}
    return ModelDeploymentSpec.model_validate(wire)


@dataclass
class JobSim(Sim):
    """The conftest simulator plus the load test Jobs the engine asks for."""

    jobs: dict[str, JobObservation] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def observations(self, analysis: Any = None) -> Observations:
        obs = super().observations(analysis)
        test = self.status.load_test
        job = self.jobs.get(test.job_name) if test is not None else None
        return Observations(**{**obs.__dict__, "load_test_job": job})

    def apply(self, actions: list[Action]) -> None:
        super().apply(actions)
        for action in actions:
            if isinstance(action, EnsureLoadTestJob) and action.job_name not in self.jobs:
                self.jobs[action.job_name] = JobObservation(action.job_name)
                self.created.append(action.job_name)
            if isinstance(action, RemoveLoadTestJob) and self.jobs.pop(action.job_name, None):
                self.deleted.append(action.job_name)

    def finish(
        self, outcome: str = "Complete", reported: dict[str, float] | None = None, reason: str = ""
    ) -> None:
        assert self.status.load_test is not None
        name = self.status.load_test.job_name
        self.jobs[name] = JobObservation(name, outcome, reason, reported)  # type: ignore[arg-type]

    def to_load_testing(self, version: str = V2) -> JobSim:
        if self.status.phase is None:
            self.deploy()
        self.new_version(version)
        self.run_until(Phase.LOAD_TESTING)
        return self


def test_a_ready_canary_is_load_tested_at_weight_0_before_step_1() -> None:
    sim = JobSim(load_tested_spec()).deploy()
    sim.new_version(V2)
    sim.tick(1)
    assert sim.phase == Phase.PREPARING
    actions = sim.run_until(Phase.LOAD_TESTING)
    test = sim.status.load_test
    assert test is not None and test.phase == LoadTestPhase.RUNNING and test.revision == rev(sim.spec)
    assert "LoadTestStarted" in reasons(actions)
    assert traffic(actions).canary_weight == 0 and sim.weight == 0
    assert [a.job_name for a in of_type(actions, EnsureLoadTestJob)] == [test.job_name]

    for _ in range(5):  # the Job runs: every tick (each one a restart) keeps the same Job, weight 0
        actions = sim.tick(10)
        assert sim.phase == Phase.LOAD_TESTING and traffic(actions).canary_weight == 0
        assert "LoadTestStarted" not in reasons(actions)
    assert sim.created == [test.job_name]

    sim.finish(reported=result())
    actions = sim.tick(1)
    assert sim.phase == Phase.PROGRESSING and sim.status.current_step == 1
    assert sim.status.load_test is not None and sim.status.load_test.phase == LoadTestPhase.PASSED
    assert sim.status.load_test.achieved_rps == pytest.approx(49.8)
    passed = [a.message for a in actions if getattr(a, "reason", None) == "LoadTestPassed"]
    assert passed and "49.8 rps" in passed[0] and "p95 20.0ms" in passed[0]
    assert not of_type(actions, EnsureLoadTestJob)


@pytest.mark.parametrize(
    ("reported", "outcome", "phase", "words"),
    [
        (result(latency_p95_seconds=0.4), "Complete", LoadTestPhase.FAILED, ["p95", "400.0ms", "100ms"]),
        (result(latency_p99_seconds=0.3), "Complete", LoadTestPhase.FAILED, ["p99", "300.0ms", "250ms"]),
        (result(errors=300, error_rate=0.1), "Complete", LoadTestPhase.FAILED, ["error rate 0.1", "0.01"]),
        (result(achieved_rps=30.0), "Complete", LoadTestPhase.INCONCLUSIVE, ["30.0 of 50", "0.95"]),
        (result(requests=5.0), "Complete", LoadTestPhase.INCONCLUSIVE, ["5 requests", "minRequests 20"]),
        (None, "Failed", LoadTestPhase.INCONCLUSIVE, ["without reporting a result", "DeadlineExceeded"]),
    ],
)
def test_a_failed_or_inconclusive_load_test_rolls_back_naming_value_and_bound(
    reported: dict[str, float] | None, outcome: str, phase: LoadTestPhase, words: list[str]
) -> None:
    sim = JobSim(load_tested_spec()).to_load_testing()
    sim.finish(outcome, reported, reason="DeadlineExceeded" if reported is None else "")
    actions = sim.tick(1)
    assert sim.phase == Phase.ROLLING_BACK and sim.weight == 0
    assert sim.status.load_test is not None and sim.status.load_test.phase == phase
    reason = sim.status.ending.reason if sim.status.ending else ""
    for word in words:
        assert word in reason, (word, reason)
    expected_event = "LoadTestFailed" if phase == LoadTestPhase.FAILED else "LoadTestInconclusive"
    assert expected_event in reasons(actions) and "RollingBack" in reasons(actions)
    sim.run_until(Phase.ROLLED_BACK)
    record = sim.status.history[-1]
    assert record.outcome == RolloutOutcome.ROLLED_BACK and record.steps == []
    assert record.load_test is not None and record.load_test.phase == phase
    assert sim.status.load_test is None and V2 in sim.status.rejected_versions


def test_a_job_that_never_reports_is_inconclusive_after_its_run_plus_the_progress_deadline() -> None:
    sim = JobSim(load_tested_spec()).to_load_testing()
    sim.tick(60 + 10 + 600 - 5)  # warmup + duration + progressDeadline (10m), not yet over
    assert sim.phase == Phase.LOAD_TESTING
    sim.tick(10)
    assert sim.phase == Phase.ROLLING_BACK
    assert "reported no result within 670s" in (sim.status.ending.reason if sim.status.ending else "")


def test_abort_mid_test_deletes_the_job_and_rolls_back() -> None:
    sim = JobSim(load_tested_spec()).to_load_testing()
    name = sim.status.load_test.job_name if sim.status.load_test else ""
    sim.annotate("abort", "1")
    actions = sim.tick(5)
    assert sim.phase == Phase.ROLLING_BACK and "Aborted" in reasons(actions)
    assert [a.job_name for a in of_type(actions, RemoveLoadTestJob)] == [name]
    assert sim.deleted == [name]
    assert sim.status.load_test is not None and sim.status.load_test.phase == LoadTestPhase.ABORTED
    actions = sim.tick(1)
    assert not of_type(actions, RemoveLoadTestJob) and not of_type(actions, EnsureLoadTestJob)


def test_a_newer_version_mid_test_supersedes_it_and_gets_its_own_job() -> None:
    sim = JobSim(load_tested_spec()).to_load_testing(V2)
    first = sim.status.load_test.job_name if sim.status.load_test else ""
    sim.new_version(V3)
    sim.tick(1)
    assert sim.phase == Phase.ROLLING_BACK and sim.deleted == [first]
    sim.run_until(Phase.LOAD_TESTING, limit=20)
    assert sim.status.load_test is not None and sim.status.load_test.revision == rev(sim.spec)
    assert sim.status.load_test.job_name != first and sim.created[-1] == sim.status.load_test.job_name


def test_a_canary_losing_readiness_after_the_test_resumes_at_its_step_without_a_second_test() -> None:
    sim = JobSim(load_tested_spec()).to_load_testing()
    sim.finish(reported=result())
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING
    sim.settle = False
    sim.break_version(V2)
    sim.tick(1)
    assert sim.phase == Phase.PREPARING
    sim.heal_version(V2)
    sim.make_ready()
    sim.confirm()
    actions = sim.tick(1)
    assert sim.phase == Phase.PROGRESSING and sim.status.current_step == 1
    assert "LoadTestStarted" not in reasons(actions) and len(sim.created) == 1


def test_pause_lets_the_test_finish_and_holds_before_step_1() -> None:
    sim = JobSim(load_tested_spec()).to_load_testing()
    sim.set_paused(True)
    sim.finish(reported=result())
    actions = sim.tick(1)
    assert sim.phase == Phase.LOAD_TESTING and "LoadTestPassed" in reasons(actions)
    assert "paused" in (sim.status.message or "") and traffic(actions).canary_weight == 0
    sim.set_paused(False)
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING and sim.status.current_step == 1


def test_an_invalid_spec_holds_a_passed_test_but_still_rolls_back_a_failed_one() -> None:
    from mlcanary.engine import decide

    sim = JobSim(load_tested_spec()).to_load_testing()
    sim.finish(reported=result())
    status, _ = decide(sim.spec, sim.status, sim.observations(), sim.now, invalid_spec="spec.x: bad")
    assert status.phase == Phase.LOAD_TESTING and "holding" in (status.message or "")
    sim.finish(reported=result(error_rate=0.5, errors=1500))
    status, _ = decide(sim.spec, sim.status, sim.observations(), sim.now, invalid_spec="spec.x: bad")
    assert status.phase == Phase.ROLLING_BACK


def test_promote_during_the_test_skips_it_and_removes_the_job() -> None:
    sim = JobSim(load_tested_spec()).to_load_testing()
    sim.annotate("promote", "1")
    actions = sim.tick(1)
    assert sim.phase == Phase.PROMOTING and len(of_type(actions, RemoveLoadTestJob)) == 1
    assert sim.status.load_test is not None and sim.status.load_test.phase == LoadTestPhase.ABORTED


def test_a_retried_version_is_load_tested_afresh_with_a_new_job() -> None:
    sim = JobSim(load_tested_spec()).to_load_testing()
    sim.finish(reported=result(latency_p95_seconds=2.0))
    sim.tick(1)
    sim.run_until(Phase.ROLLED_BACK)
    sim.annotate("retry", "1")
    sim.run_until(Phase.LOAD_TESTING)
    assert len(set(sim.created)) == 2 and sim.status.load_test is not None
    assert sim.status.load_test.phase == LoadTestPhase.RUNNING


def test_a_user_job_template_passes_on_exit_0_and_fails_otherwise() -> None:
    template = {"spec": {"containers": [{"name": "k6", "image": "grafana/k6", "args": ["run", "t.js"]}]}}
    for outcome, phase in (("Complete", Phase.PROGRESSING), ("Failed", Phase.ROLLING_BACK)):
        wire = spec_wire(V1, router="istio")
        wire["loadTest"] = {"jobTemplate": template}
        sim = JobSim(ModelDeploymentSpec.model_validate(wire)).to_load_testing()
        sim.finish(outcome, None, reason="BackoffLimitExceeded")
        sim.tick(1)
        assert sim.phase == phase


def test_without_a_load_test_the_canary_goes_straight_to_step_1() -> None:
    sim = JobSim(make_spec(V1, router="gatewayAPI")).deploy()
    sim.new_version(V2)
    sim.run_until(Phase.PROGRESSING)
    assert sim.created == [] and sim.status.load_test is None


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("load_test", "router", "field_and_words"),
    [
        (LOAD_TEST, "replicas", "spec.loadTest: loadTest needs the gatewayAPI or istio router"),
        ({}, "istio", "spec.loadTest: give exactly one of rps, rpsFromStable and jobTemplate"),
        ({"rps": 5, "rpsFromStable": {}}, "istio", "give exactly one of rps, rpsFromStable"),
        ({"rpsFromStable": {"minRps": 9, "maxRps": 3}}, "istio", "spec.loadTest.rpsFromStable: minRps"),
        ({"rpsFromStable": {"window": "10s"}}, "istio", "spec.loadTest.rpsFromStable.window"),
        ({"rpsFromStable": {"headroom": 0.5}}, "istio", "spec.loadTest.rpsFromStable.headroom"),
        ({**LOAD_TEST, "jobTemplate": {"spec": {"containers": [{}]}}}, "istio", "exactly one of rps"),
        ({"jobTemplate": {"spec": {}}}, "istio", "jobTemplate.spec.containers must list"),
        ({**LOAD_TEST, "duration": "2h"}, "istio", "spec.loadTest.duration: 2h is outside 1s-1h"),
        ({**LOAD_TEST, "warmup": "11m"}, "istio", "spec.loadTest.warmup"),
        ({**LOAD_TEST, "rps": 20000}, "istio", "spec.loadTest.rps"),
        ({**LOAD_TEST, "concurrency": 0}, "istio", "spec.loadTest.concurrency"),
        ({**LOAD_TEST, "slo": {"minAchievedRatio": 0}}, "istio", "spec.loadTest.slo.minAchievedRatio"),
        ({**LOAD_TEST, "slo": {"maxLatencyP95": "2m"}}, "istio", "spec.loadTest.slo.maxLatencyP95"),
    ],
)
def test_bad_load_tests_are_refused_naming_the_field(
    load_test: dict[str, Any], router: str, field_and_words: str
) -> None:
    wire = spec_wire(V1, router=router)
    wire["loadTest"] = load_test
    with pytest.raises(ValidationError) as error:
        ModelDeploymentSpec.model_validate(wire)
    assert field_and_words in format_validation_error(error.value)


# ---------------------------------------------------------------------------------------- judge


def test_judge_waits_for_a_result_and_prefers_measured_violations_over_a_short_rate() -> None:
    spec = LoadTest.model_validate(LOAD_TEST)
    assert judge(spec, JobObservation("j")) is None
    slow_and_short = result(achieved_rps=10.0, latency_p95_seconds=1.5)
    verdict = judge(spec, JobObservation("j", "Complete", "", slow_and_short))
    assert verdict is not None and verdict.phase == LoadTestPhase.FAILED
    # a result reported while the Job is still finishing is judged at once
    assert judge(spec, JobObservation("j", None, "", result())) == Verdict(
        LoadTestPhase.PASSED, "49.8 rps, p95 20.0ms, p99 50.0ms, error rate 0"
    )


def test_parse_result_takes_the_last_complete_json_line_and_refuses_non_finite_values() -> None:
    line = '{"requested_rps": 5, "achieved_rps": 5, "requests": 50, "errors": 0, "error_rate": 0, '
    line += '"latency_p50_seconds": 0.1, "latency_p95_seconds": 0.2, "latency_p99_seconds": 0.3, '
    line += '"latency_max_seconds": 0.4, "duration_seconds": 10}'
    parsed = parse_result(f"warming up\n{line}\n")
    assert parsed is not None and parsed["latency_p99_seconds"] == 0.3
    assert parse_result(line.replace('"errors": 0', '"errors": NaN')) is None
    assert parse_result(line.replace('"errors": 0', '"errors": true')) is None
    assert parse_result("Traceback ...\nKeyError: x") is None


def test_job_names_are_dns_labels_unique_per_rollout() -> None:
    from datetime import UTC, datetime

    revision = "a" * 40 + "-v2-0-0-" + "1234abcd"
    one = job_name(revision, datetime(2026, 1, 1, tzinfo=UTC))
    two = job_name(revision, datetime(2026, 1, 2, tzinfo=UTC))
    assert one != two and len(one) <= 63 and one.replace("-", "").isalnum() and one[0].isalpha()


# ------------------------------------------------------------------------------------- the Job


def test_the_job_runs_the_users_template_with_the_target_and_never_restarts() -> None:
    from mlcanary.resources import Owner, load_test_job
    from mlcanary.settings import Settings

    wire = spec_wire(V2, router="gatewayAPI")
    container = {"name": "k6", "image": "grafana/k6", "env": [{"name": "MLCANARY_TARGET_URL", "value": "x"}]}
    wire["loadTest"] = {
        "jobTemplate": {"metadata": {"labels": {"team": "ml"}}, "spec": {"containers": [container]}}
    }
    spec = ModelDeploymentSpec.model_validate(wire)
    revision = rev(spec)
    from mlcanary.models import RevisionState

    state = RevisionState(revision=revision, template=spec.revision_template())
    target = Settings().load_test_target(revision, "ml", 8080)
    assert target == f"http://{revision}.ml.svc:8080"
    job = load_test_job(Owner("fraud", "ml", "uid-1"), spec, state, "j", target, 130)
    pod = job["spec"]["template"]
    assert pod["spec"]["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert pod["spec"]["containers"][0]["env"] == [{"name": "MLCANARY_TARGET_URL", "value": target}]
    assert pod["metadata"]["labels"] == {
        "team": "ml",
        "mlcanary.io/load-test-of": "fraud",
        "mlcanary.io/revision": revision,
    }
    assert spec.load_test is not None and spec.load_test.job_template is not None
    assert "env" not in spec.load_test.job_template["spec"]["containers"][0] or spec.load_test.job_template[
        "spec"
    ]["containers"][0]["env"] == [{"name": "MLCANARY_TARGET_URL", "value": "x"}]  # the spec is not mutated


def test_bodies_from_a_config_map_are_mounted_into_the_generator_and_never_read_by_the_operator() -> None:
    from mlcanary.models import RevisionState
    from mlcanary.resources import LOAD_TEST_BODIES_DIR, Owner, load_test_job

    spec = load_tested_spec(V2, bodiesConfigMap={"name": "fraud-bodies", "key": "requests.json"})
    state = RevisionState(revision=rev(spec), template=spec.revision_template())
    job = load_test_job(Owner("fraud", "ml", "uid-1"), spec, state, "j", "http://t:8080", 130, rps=50)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[args.index("--bodies") + 1] == f"{LOAD_TEST_BODIES_DIR}/bodies.json"
    assert "--bundle" not in args and "--sha256" not in args  # the bundle's rows are not used
    assert container["volumeMounts"] == [
        {"name": "bodies", "mountPath": LOAD_TEST_BODIES_DIR, "readOnly": True}
    ]
    assert pod["volumes"] == [
        {
            "name": "bodies",
            "configMap": {"name": "fraud-bodies", "items": [{"key": "requests.json", "path": "bodies.json"}]},
        }
    ]
    plain = load_test_job(
        Owner("fraud", "ml", "uid-1"), load_tested_spec(V2), state, "j", "http://t:8080", 130, rps=50
    )
    assert (
        "volumes" not in plain["spec"]["template"]["spec"]
        and "--bundle" in plain["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_bodies_from_a_config_map_are_refused_beside_a_job_template_naming_the_field() -> None:
    wire = spec_wire(V2, router="gatewayAPI")
    wire["loadTest"] = {
        "jobTemplate": {"spec": {"containers": [{"name": "k6", "image": "grafana/k6"}]}},
        "bodiesConfigMap": {"name": "b", "key": "k"},
    }
    with pytest.raises(ValidationError) as error:
        ModelDeploymentSpec.model_validate(wire)
    message = format_validation_error(error.value)
    assert "spec.loadTest" in message and "bodiesConfigMap is for the built-in generator" in message


def test_the_target_url_setting_must_name_the_service() -> None:
    from mlcanary.settings import Settings

    local = Settings.from_env(
        {"MLCANARY_LOAD_TEST_TARGET_URL": "http://127.0.0.1:8000/{namespace}/{service}"}
    )
    assert local.load_test_target("fraud-v2", "ml", 8080) == "http://127.0.0.1:8000/ml/fraud-v2"
    with pytest.raises(ValueError, match="MLCANARY_LOAD_TEST_TARGET_URL"):
        Settings.from_env({"MLCANARY_LOAD_TEST_TARGET_URL": "http://canary.example.com"})


# ------------------------------------------------------------------------------- rpsFromStable


def stable_rate_round(requests: int | None, verdict: str = "Successful") -> Any:
    from mlcanary.engine import AnalysisRound
    from mlcanary.gates.loadtest import STABLE_RATE_METRIC
    from mlcanary.models import Measurement
    from mlcanary.models import Verdict as MetricVerdict

    measurement = Measurement(
        metric=STABLE_RATE_METRIC, verdict=MetricVerdict(verdict), sample_size=requests, time=T0
    )
    return AnalysisRound([measurement])


def test_rps_from_stable_waits_for_the_stables_rate_then_tests_it_times_the_headroom() -> None:
    from mlcanary.engine import stable_rate_due

    spec = load_tested_spec(rps=None, rpsFromStable={"headroom": 1.5, "window": "1h", "maxRps": 100})
    sim = JobSim(spec).to_load_testing()
    assert sim.status.load_test is not None and sim.status.load_test.requested_rps is None
    assert stable_rate_due(sim.spec, sim.status, sim.now)
    actions = sim.tick(1)  # no rate yet: no Job
    assert not of_type(actions, EnsureLoadTestJob) and "waiting for the stable" in (sim.status.message or "")
    assert stable_rate_due(sim.spec, sim.status, sim.now)  # no round ran yet: still due

    actions = sim.tick(1, analysis=stable_rate_round(None, "Error"))  # Prometheus down: ask again later
    assert not of_type(actions, EnsureLoadTestJob) and "waiting for the stable's request rate" in (
        sim.status.message or ""
    )
    assert not stable_rate_due(sim.spec, sim.status, sim.now)
    sim.tick(11)
    assert stable_rate_due(sim.spec, sim.status, sim.now)

    actions = sim.tick(1, analysis=stable_rate_round(3600 * 30))  # 30 rps over the hour
    [job] = of_type(actions, EnsureLoadTestJob)
    assert job.rps == 45 and sim.status.load_test.requested_rps == 45
    assert "the stable served 30.00 rps over 1h; testing 45 rps" in (sim.status.message or "")
    assert not stable_rate_due(sim.spec, sim.status, sim.now)
    sim.finish(reported=result(requested_rps=45.0, achieved_rps=44.9))
    sim.tick(1)
    assert sim.phase == Phase.PROGRESSING


@pytest.mark.parametrize(("requests", "expected"), [(None, 1.0), (0, 1.0), (3600 * 1000, 100.0)])
def test_rps_from_stable_stays_within_its_bounds(requests: int | None, expected: float) -> None:
    spec = load_tested_spec(rps=None, rpsFromStable={"window": "1h", "minRps": 1, "maxRps": 100})
    sim = JobSim(spec).to_load_testing()
    actions = sim.tick(1, analysis=stable_rate_round(requests, "Inconclusive"))
    [job] = of_type(actions, EnsureLoadTestJob)
    assert job.rps == expected
