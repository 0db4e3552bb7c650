"""spec.loadTest end to end on the local stack: the real operator creates the load test Job, the
local kubelet runs ``python -m mlcanary_serving.loadtest`` as its pod against the canary's own
Service (through the local gateway), the operator reads the result from the pod's termination
message. A user load generator sends real rows through the public route meanwhile, and its request
log shows which version answered each request.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from .conftest import ERROR_RATE, TIMING, Rollout, record, served_by

pytestmark = pytest.mark.integration

LOAD_TEST = {
    "rps": 20,
    "concurrency": 8,
    "warmup": "1s",
    "duration": "4s",
    "slo": {"maxLatencyP95": "150ms", "maxErrorRate": 0.01},
}


async def test_a_slow_version_is_stopped_by_its_load_test_having_answered_no_user_request(
    rollout_factory,
) -> None:
    # One pod per revision: behind the gatewayAPI router both revisions run every replica.
    rollout: Rollout = await rollout_factory(
        [ERROR_RATE], router="gatewayAPI", load_test=LOAD_TEST, steps=[50], timing=replace(TIMING, replicas=1)
    )
    await rollout.first_deploy("1.0.0")

    await rollout.apply("2.0.0")  # sound: passes its load test, then its step, then promotes
    status = await rollout.wait_finished("2.0.0", within=75)
    passed = record(status, "2.0.0")
    assert passed is not None and passed["outcome"] == "Promoted", passed
    assert passed["loadTest"]["phase"] == "Passed" and passed["loadTest"]["achievedRps"] >= 19, passed

    await rollout.apply("5.0.0", env={"MLCANARY_FAULT_LATENCY_MS": "300"})  # sound, but slow
    status = await rollout.wait_finished("5.0.0", within=75)
    failed = record(status, "5.0.0")
    assert failed is not None and failed["outcome"] == "RolledBack", failed
    assert "load test failed: p95 latency" in failed["reason"] and "150ms" in failed["reason"], failed
    assert failed["loadTest"]["latencyP95Seconds"] >= 0.3 and failed["steps"] == []
    assert rollout.steps_seen("5.0.0") == []
    rollout.stop_load()
    records = rollout.records()
    assert served_by(records, "2.0.0") > 0
    assert served_by(records, "5.0.0") == 0  # zero user requests answered by the slow version
