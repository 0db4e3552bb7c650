"""End-to-end resilience: the metrics backend going away mid-rollout, the operator process killed at
a step, and a new version applied while a canary is in flight."""

from __future__ import annotations

import asyncio
import time

import pytest

from mlcanary_local.stack import LocalStack

from .conftest import ERROR_RATE, STEPS, Rollout, record

pytestmark = pytest.mark.integration


async def test_prometheus_stopped_mid_rollout_holds_then_follows_on_inconclusive(
    rollout_factory, stack: LocalStack
) -> None:
    rollout: Rollout = await rollout_factory([ERROR_RATE], on_inconclusive="Rollback")
    await rollout.first_deploy("1.0.0")
    await rollout.apply("2.0.0")
    await rollout.wait_step("2.0.0", 1)
    stopped_at = time.time()
    stack.stop_prometheus()
    try:
        # consecutiveErrorLimit 3, inconclusiveLimit 3: errored rounds hold the step first, then
        # count as inconclusive, then onInconclusive (Rollback) applies.
        status = await rollout.wait_finished("2.0.0", within=60)
    finally:
        stack.start_prometheus()

    history = record(status, "2.0.0")
    assert history is not None and history["outcome"] == "RolledBack", history
    assert "inconclusive" in history["reason"], history["reason"]
    during = [s for s in rollout.snapshots if s.t >= stopped_at and s.canary == "2.0.0"]
    progressing = [s for s in during if s.phase == "Progressing"]
    # It held: never left step 1 although stepDuration passed many times over, and it saw errors.
    assert progressing and {s.step for s in progressing} == {1}
    assert {s.weight for s in progressing} == {STEPS[0]}
    assert progressing[-1].t - progressing[0].t > 3 * 4, "held for less than three intervals"
    assert "Error" in {s.verdict for s in progressing}
    assert status["stableVersion"] == "1.0.0"


async def test_operator_killed_at_a_step_resumes_without_duplicates_or_skips(
    rollout_factory, stack: LocalStack
) -> None:
    rollout: Rollout = await rollout_factory([ERROR_RATE])
    await rollout.first_deploy("1.0.0")
    await rollout.apply("2.0.0")
    before = await rollout.wait_step("2.0.0", 1)
    stack.kill_operator()  # SIGKILL: no clean-up, no last status write
    await asyncio.sleep(3)  # a few ticks' worth of nothing: nobody reconciles
    frozen = await rollout.snapshot()
    assert frozen.get("currentStep") == 1 and frozen.get("stepStartedAt") == before.get("stepStartedAt")
    stack.start_operator()
    status = await rollout.wait_finished("2.0.0", within=60)

    history = record(status, "2.0.0")
    assert history is not None and history["outcome"] == "Promoted", history
    assert [s["step"] for s in history["steps"]] == [1, 2], "a step was skipped or repeated"
    assert all(s["verdict"] == "Successful" and s["rounds"] >= 1 for s in history["steps"])
    assert rollout.steps_seen("2.0.0") == [1, 2]
    # Never more than the two revisions' Deployments, and never two for one version.
    for snapshot in rollout.snapshots:
        assert len(snapshot.deployments) <= 2, snapshot
        assert len(snapshot.deployments) == len(set(snapshot.deployments)), snapshot
    await rollout.wait(lambda s: not s.get("retiring"), 20, "done retiring 1.0.0")
    assert len(await rollout.deployments()) == 1


async def test_new_version_mid_rollout_restarts_from_step_1_after_traffic_returns_to_stable(
    rollout_factory,
) -> None:
    rollout: Rollout = await rollout_factory([ERROR_RATE])
    await rollout.first_deploy("1.0.0")
    await rollout.apply("2.0.0")
    await rollout.wait_step("2.0.0", 2)
    await rollout.apply("4.0.0")  # a good model (its server faults are only on in the demo)
    status = await rollout.wait_step("4.0.0", 1)
    at_step_1 = time.time()

    superseded = record(status, "2.0.0")
    assert superseded is not None and superseded["outcome"] == "Superseded", superseded
    after = [s for s in rollout.snapshots if s.t >= rollout.applied["4.0.0"]]
    first_new = next(i for i, s in enumerate(after) if s.canary == "4.0.0")
    # Traffic went back to stable before the new canary existed...
    assert any(s.canary == "2.0.0" and s.phase == "RollingBack" and s.weight == 0 for s in after[:first_new])
    # ...and the new version starts from the first step.
    assert rollout.steps_seen("4.0.0")[0] == 1
    assert status["canaryWeight"] == STEPS[0]

    await asyncio.sleep(1.5)
    records = rollout.records()
    last_v2 = max(r.t for r in records if r.version == "2.0.0")
    first_v4 = min((r.t for r in records if r.version == "4.0.0"), default=at_step_1)
    assert last_v2 < first_v4, "the new canary served while the old canary still did"
    between = [r for r in records if last_v2 < r.t < first_v4]
    assert between and {r.version for r in between} == {"1.0.0"}
    assert not [r for r in records if not r.ok]
