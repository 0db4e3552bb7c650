"""The shadow phase in the pure engine: Preparing -> Shadowing -> (Preparing) -> step 1, judged by
the agreement builtins, with abort, restarts, pause, promote and superseding as in the other phases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from conftest import NAME, Sim, ensured, make_spec, reasons, rev, traffic
from pydantic import ValidationError

from mlcanary.engine import AnalysisRound, analysis_due
from mlcanary.gates import shadow as shadow_gate
from mlcanary.models import (
    BuiltinMetric,
    Measurement,
    ModelDeploymentSpec,
    Phase,
    RolloutOutcome,
    ShadowPhase,
    Verdict,
)
from mlcanary.reconcile import format_validation_error

V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"
SHADOW: dict[str, Any] = {
    "duration": "3m",
    "mirrorPercent": 50,
    "minSamples": 200,
    "agreement": {"min": 0.95, "noiseFloor": 0.01},
    "scoreDifference": {"max": 0.1, "quantile": 0.9},
}


def shadow_spec(version: str = V1, router: str = "gatewayAPI", **shadow: Any) -> ModelDeploymentSpec:
    from conftest import spec_wire

    wire = spec_wire(version, router=router, replicas=2, steps=[10, 50])
    wire["shadow"] = {**SHADOW, **shadow}
    return ModelDeploymentSpec.model_validate(wire)


def shadow_round(verdict: Verdict, value: float = 0.99) -> AnalysisRound:
    return AnalysisRound(
        [
            Measurement(
                metric=shadow_gate.AGREEMENT_METRIC,
                verdict=verdict,
                value=value,
                threshold=">= 0.94",
                sample_size=500,
                time=Sim(make_spec()).now,
            )
        ]
    )


def to_shadowing(router: str = "gatewayAPI", **shadow: Any) -> Sim:
    sim = Sim(shadow_spec(V1, router, **shadow))
    sim.deploy()
    sim.spec = shadow_spec(V2, router, **shadow)
    sim.generation += 1
    sim.tick()
    assert sim.phase == Phase.PREPARING
    sim.run_until(Phase.SHADOWING)
    return sim


def judged(sim: Sim, advance: float, verdict: Verdict, value: float = 0.99) -> list[Any]:
    sim.now += timedelta(seconds=advance)
    assert analysis_due(sim.spec, sim.status, sim.now), "shadow round not due"
    return sim.tick(analysis=shadow_round(verdict, value))


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
def test_shadow_runs_before_step_1_with_zero_user_weight_and_mirroring(router: str) -> None:
    sim = to_shadowing(router)
    v1, v2 = rev(shadow_spec(V1)), rev(shadow_spec(V2))
    assert sim.weight == 0 and sim.status.current_step is None
    assert traffic(sim.actions).canary_weight == 0
    assert traffic(sim.actions).mirror_percent == 50
    assert traffic(sim.actions).canary == v2 and traffic(sim.actions).stable == v1
    # the canary's pods load the stable's model beside their own; the stable's pods do not
    canary = ensured(sim.actions)["canary"]
    assert canary.reference is not None and canary.reference.version == V1
    assert ensured(sim.actions)["stable"].reference is None
    assert "ShadowStarted" in reasons(sim.actions)
    assert sim.status.shadow is not None and sim.status.shadow.revision == v2
    assert sim.status.steps[0].kind == "shadow" and sim.status.steps[0].weight == 0


def test_reference_is_loaded_from_preparing_so_entering_shadow_restarts_nothing() -> None:
    sim = Sim(shadow_spec(V1))
    sim.deploy()
    sim.spec = shadow_spec(V2)
    sim.generation += 1
    actions = sim.tick()
    assert sim.phase == Phase.PREPARING
    reference = ensured(actions)["canary"].reference
    assert reference is not None and reference.version == V1
    assert traffic(actions).mirror_percent == 0  # nothing mirrored before the canary is ready


def test_shadow_passes_after_duration_and_a_successful_round_then_step_1_without_reference() -> None:
    sim = to_shadowing()
    judged(sim, 60, Verdict.SUCCESSFUL)
    assert sim.phase == Phase.SHADOWING  # duration 3m not elapsed
    judged(sim, 60, Verdict.INCONCLUSIVE)
    sim.tick(60)
    assert sim.phase == Phase.SHADOWING  # last round was not successful
    actions = judged(sim, 1, Verdict.SUCCESSFUL)
    assert "ShadowPassed" in reasons(actions)
    assert sim.status.shadow is not None and sim.status.shadow.phase == ShadowPhase.PASSED
    assert sim.phase == Phase.PREPARING  # the canary restarts without the reference model
    assert ensured(actions)["canary"].reference is None
    assert traffic(actions).mirror_percent == 0 and traffic(actions).canary_weight == 0
    sim.run_until(Phase.PROGRESSING)
    assert sim.status.current_step == 1 and sim.weight == 10
    assert [s.kind for s in sim.status.steps] == ["shadow", None]
    assert sim.status.steps[0].rounds == 3


def test_a_failed_shadow_round_rolls_back_having_served_no_user_request() -> None:
    sim = to_shadowing()
    actions = judged(sim, 60, Verdict.FAILED, value=0.5)
    assert "ShadowFailed" in reasons(actions)
    assert sim.phase == Phase.ROLLING_BACK and sim.weight == 0
    assert traffic(actions).mirror_percent == 0
    assert sim.status.ending is not None and "shadow-agreement=0.5 (want >= 0.94)" in sim.status.ending.reason
    sim.run_until(Phase.ROLLED_BACK)
    record = sim.status.history[-1]
    assert record.outcome == RolloutOutcome.ROLLED_BACK and "shadow phase failed" in record.reason
    assert record.steps[0].kind == "shadow" and record.steps[0].verdict == Verdict.FAILED
    assert V2 in sim.status.rejected_versions


def test_thin_mirrored_traffic_never_passes_and_is_rolled_back_after_duration_plus_deadline() -> None:
    sim = to_shadowing()  # progressDeadline 10m, duration 3m
    assert sim.status.shadow is not None
    started = sim.status.shadow.started_at
    for _ in range(13):
        judged(sim, 60, Verdict.INCONCLUSIVE)
        assert sim.phase == Phase.SHADOWING
    assert sim.now - started == timedelta(minutes=13)
    actions = judged(sim, 60, Verdict.INCONCLUSIVE)
    assert sim.phase == Phase.ROLLING_BACK
    assert "ShadowFailed" in reasons(actions)
    assert sim.status.ending is not None and "no successful round" in sim.status.ending.reason


def test_abort_during_shadow_rolls_back() -> None:
    sim = to_shadowing()
    sim.annotate("abort", "now")
    actions = sim.tick(5)
    assert sim.phase == Phase.ROLLING_BACK and "Aborted" in reasons(actions)
    sim.run_until(Phase.ROLLED_BACK)
    assert V2 in sim.status.rejected_versions


def test_a_new_version_during_shadow_supersedes_and_shadows_the_new_one_afresh() -> None:
    sim = to_shadowing()
    sim.spec = shadow_spec(V3)
    sim.generation += 1
    actions = sim.tick(5)
    assert sim.phase == Phase.ROLLING_BACK and "Superseding" in reasons(actions)
    sim.run_until(Phase.HEALTHY, limit=20)
    sim.run_until(Phase.SHADOWING, limit=20)
    assert sim.status.shadow is not None and sim.status.shadow.revision == rev(shadow_spec(V3))


def test_a_restart_mid_shadow_resumes_without_starting_over() -> None:
    sim = to_shadowing()  # Sim feeds the status through its wire form every tick: a restart
    started = sim.status.shadow.started_at if sim.status.shadow else None
    judged(sim, 60, Verdict.SUCCESSFUL)
    sim.tick(30)
    assert sim.status.shadow is not None and sim.status.shadow.started_at == started
    assert sim.status.shadow.rounds == 1
    assert "ShadowStarted" not in reasons(sim.actions)
    # and once passed, a restart (or a canary that loses readiness later) never runs it again
    judged(sim, 120, Verdict.SUCCESSFUL)
    sim.run_until(Phase.PROGRESSING)
    sim.break_version(V2)
    sim.tick(1)
    assert sim.phase == Phase.PREPARING
    sim.heal_version(V2)
    sim.run_until(Phase.PROGRESSING)
    assert sim.status.shadow is not None and sim.status.shadow.phase == ShadowPhase.PASSED
    assert sim.status.shadow.rounds == 2


def test_pause_holds_the_shadow_phase_and_promote_skips_it() -> None:
    sim = to_shadowing()
    sim.spec = sim.spec.model_copy(update={"rollout": sim.spec.rollout.model_copy(update={"paused": True})})
    sim.tick(600)
    assert sim.phase == Phase.SHADOWING and "paused" in (sim.status.message or "")
    sim.annotate("promote", "yes")
    sim.tick(1)
    assert sim.phase == Phase.PROMOTING


def test_an_unready_canary_leaves_shadow_and_is_shadowed_afresh_when_ready() -> None:
    sim = to_shadowing()
    first = sim.status.shadow.started_at if sim.status.shadow else None
    sim.break_version(V2)
    actions = sim.tick(10)
    assert sim.phase == Phase.PREPARING and "CanaryUnavailable" in reasons(actions)
    assert traffic(actions).mirror_percent == 0
    sim.heal_version(V2)
    sim.run_until(Phase.SHADOWING)
    assert sim.status.shadow is not None and sim.status.shadow.started_at != first


def test_an_unconfirmed_mirror_rolls_back_after_the_progress_deadline() -> None:
    sim = to_shadowing()
    sim.settle = False
    sim.mesh_confirmed = False
    sim.tick(1)
    assert sim.phase == Phase.SHADOWING and "router" in (sim.status.message or "")
    sim.tick(601)
    assert sim.phase == Phase.ROLLING_BACK


def test_the_replicas_router_refuses_shadow_naming_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        shadow_spec(V1, "replicas")
    assert format_validation_error(error.value).startswith("spec.shadow: the replicas router cannot mirror")


def test_shadow_builtins_are_refused_in_step_analysis_and_a_bound_is_required() -> None:
    from conftest import spec_wire

    wire = spec_wire(V1, router="gatewayAPI")
    wire["analysis"]["metrics"] = [{"name": "a", "builtin": "agreement", "min": 0.9}]
    with pytest.raises(ValidationError) as error:
        ModelDeploymentSpec.model_validate(wire)
    assert format_validation_error(error.value).startswith("spec.analysis.metrics[0].builtin:")
    with pytest.raises(ValidationError):
        shadow_spec(V1, agreement=None, scoreDifference=None)


def test_shadow_metrics_carry_bounds_noise_floor_and_sample_minimum() -> None:
    spec = shadow_spec(V1)
    assert spec.shadow is not None
    agreement, difference = shadow_gate.shadow_metrics(spec.shadow)
    assert agreement.builtin == BuiltinMetric.AGREEMENT and agreement.min == 0.95
    assert agreement.tolerance == 0.01 and agreement.min_requests == 200
    assert difference.builtin == BuiltinMetric.SCORE_DIFFERENCE and difference.max == 0.1
    assert difference.quantile == 0.9
    assert NAME  # the simulator's object name


def test_mlcanary_report_shows_the_shadow_phase_like_a_step() -> None:
    from mlcanary.analysis.report import build_report, render_text

    sim = to_shadowing()
    judged(sim, 60, Verdict.FAILED, value=0.5)
    sim.run_until(Phase.ROLLED_BACK)
    (report,) = build_report(sim.status.to_wire())
    assert report.outcome == "RolledBack" and report.rows[0].kind == "shadow"
    table = render_text(sim.status.to_wire())
    shadow_line = next(line for line in table.splitlines() if line.startswith("  shadow"))
    assert "0% (mirrored)" in shadow_line and "shadow-agreement" in shadow_line and "Failed" in shadow_line


def test_removing_spec_shadow_mid_phase_goes_on_to_step_1_without_the_reference() -> None:
    sim = to_shadowing()
    wire = sim.spec.to_wire()
    del wire["shadow"]
    sim.spec = ModelDeploymentSpec.model_validate(wire)
    actions = sim.tick(5)
    assert sim.phase == Phase.PREPARING and ensured(actions)["canary"].reference is None
    assert traffic(actions).mirror_percent == 0
    sim.run_until(Phase.PROGRESSING)
    assert sim.status.current_step == 1


def test_kubectl_mlcanary_tree_shows_the_shadow_phase_and_its_round() -> None:
    from mlcanary.kubectl_plugin import tree

    sim = to_shadowing()
    judged(sim, 60, Verdict.SUCCESSFUL)
    obj = {
        "metadata": {"name": NAME, "namespace": "ml"},
        "spec": sim.spec.to_wire(),
        "status": sim.status.to_wire(),
    }
    text = tree(obj)
    assert "Shadowing  shadow phase (requests mirrored, 0% served)" in text
    assert "└── shadow (mirrored, 0% served): 1 analysis round(s), last verdict Successful" in text
    assert "shadow-agreement" in text
