"""Both zero-exposure gates on one rollout: Preparing -> LoadTesting -> Shadowing -> Preparing -> step 1.

The load test comes first (a slow model is stopped before the shadow phase spends its duration),
the shadow phase second; each runs once per revision, and no user weight reaches the canary until
step 1. Uses the Job world of test_engine_loadtest and the rounds of test_engine_shadow.
"""

from __future__ import annotations

from typing import Any

from conftest import reasons, rev, spec_wire, traffic
from test_engine_loadtest import LOAD_TEST, JobSim, result
from test_engine_shadow import SHADOW, judged

from mlcanary.engine import EnsureLoadTestJob
from mlcanary.models import LoadTestPhase, ModelDeploymentSpec, Phase, ShadowPhase, Verdict

V1, V2 = "1.0.0", "2.0.0"


def gated_spec(version: str, **shadow: Any) -> ModelDeploymentSpec:
    wire = spec_wire(version, router="gatewayAPI", replicas=2, steps=[10, 50])
    wire["loadTest"] = dict(LOAD_TEST)
    wire["shadow"] = {**SHADOW, **shadow}
    return ModelDeploymentSpec.model_validate(wire)


def to_load_testing() -> JobSim:
    sim = JobSim(gated_spec(V1))
    sim.deploy()
    sim.spec = gated_spec(V2)
    sim.generation += 1
    sim.tick()
    assert sim.phase == Phase.PREPARING
    sim.run_until(Phase.LOAD_TESTING)
    return sim


def test_the_load_test_then_the_shadow_phase_then_step_1_each_once() -> None:
    sim = to_load_testing()
    assert sim.weight == 0 and traffic(sim.actions).mirror_percent == 0  # nothing mirrored yet
    sim.finish(reported=result())
    actions = sim.tick(1)
    assert "LoadTestPassed" in reasons(actions) and "ShadowStarted" in reasons(actions)
    assert sim.phase == Phase.SHADOWING and sim.weight == 0 and sim.status.current_step is None
    assert traffic(actions).mirror_percent == SHADOW["mirrorPercent"]
    assert sim.status.shadow is not None and sim.status.shadow.revision == rev(sim.spec)

    judged(sim, 120, Verdict.SUCCESSFUL)
    actions = judged(sim, 61, Verdict.SUCCESSFUL)
    assert "ShadowPassed" in reasons(actions)
    assert sim.status.shadow is not None and sim.status.shadow.phase == ShadowPhase.PASSED
    sim.run_until(Phase.PROGRESSING)  # via Preparing: the canary drops the reference model
    assert sim.status.current_step == 1 and sim.weight == 10
    assert sim.status.load_test is not None and sim.status.load_test.phase == LoadTestPhase.PASSED
    assert len(sim.created) == 1  # the restart after the shadow phase ran no second load test
    assert not any(isinstance(a, EnsureLoadTestJob) for a in sim.actions)


def test_a_failed_load_test_rolls_back_before_any_mirroring() -> None:
    sim = to_load_testing()
    sim.finish(reported=result(latency_p95_seconds=0.4))
    actions = sim.tick(1)
    assert sim.phase == Phase.ROLLING_BACK and "ShadowStarted" not in reasons(actions)
    assert sim.status.shadow is None and traffic(actions).mirror_percent == 0
