"""End-to-end rollouts judged by real metrics: one good canary promoted, three bad ones rolled back
(error spike, latency regression, degenerate predictions that only prediction drift sees).

Everything is real except the cluster: the operator, serving processes behind a gateway that splits
real HTTP traffic, Prometheus scraping them, a load generator sending breast_cancer rows.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import ERROR_RATE, Rollout, record, served_by

pytestmark = pytest.mark.integration

ALL_METRICS = [
    ERROR_RATE,
    {"name": "latency-p99", "builtin": "latencyP99", "max": 0.25, "minRequests": 20},
    {"name": "input-drift", "builtin": "inputDrift", "max": 0.3},
    {"name": "prediction-drift", "builtin": "predictionDrift", "max": 2.0, "minRequests": 50},
]


async def test_good_canary_is_promoted_without_failed_requests(rollout_factory) -> None:
    rollout: Rollout = await rollout_factory(ALL_METRICS)
    await rollout.first_deploy("1.0.0")
    await rollout.apply("2.0.0")
    status = await rollout.wait_finished("2.0.0", within=75)
    promoted_at = time.time()

    history = record(status, "2.0.0")
    assert history is not None and history["outcome"] == "Promoted", history
    assert status["stableVersion"] == "2.0.0"
    assert [s["step"] for s in history["steps"]] == [1, 2]
    assert all(s["verdict"] == "Successful" for s in history["steps"]), history["steps"]
    assert rollout.steps_seen("2.0.0") == [1, 2]
    # The old revision goes once scaleDownDelay has passed: one Deployment remains.
    await rollout.wait(lambda s: not s.get("retiring"), 20, "done retiring 1.0.0")
    assert len(await rollout.deployments()) == 1

    await asyncio.sleep(1.5)  # the requests in flight are answered and written
    rollout.stop_load()
    records = rollout.records()
    failed = [r for r in records if not r.ok]
    assert records and not failed, f"{len(failed)} failed requests during a good promotion: {failed[:5]}"
    # Real traffic reached the canary at every step and all of it moved over at the end.
    assert served_by(records, "2.0.0", until=promoted_at) > 100
    tail = [r for r in records if r.t > promoted_at - 0.5]
    assert tail and all(r.version == "2.0.0" for r in tail)


async def test_error_spike_is_rolled_back(rollout_factory) -> None:
    rollout: Rollout = await rollout_factory([ERROR_RATE])
    await rollout.first_deploy("1.0.0")
    await rollout.apply("2.0.0", env={"MLCANARY_FAULT_ERROR_RATE": "0.3", "MLCANARY_FAULT_SEED": "1"})
    status = await rollout.wait_finished("2.0.0")

    history = record(status, "2.0.0")
    assert history is not None and history["outcome"] == "RolledBack", history
    assert "error-rate" in history["reason"]
    assert status["phase"] == "RolledBack" and status["stableVersion"] == "1.0.0"
    assert "2.0.0" in status["rejectedVersions"]
    assert rollout.steps_seen("2.0.0") == [1]  # rolled back at the first step
    await _traffic_all_on(rollout, "1.0.0")


async def test_latency_regression_is_rolled_back(rollout_factory) -> None:
    latency = {"name": "latency-p99", "builtin": "latencyP99", "max": 0.15, "minRequests": 20}
    rollout: Rollout = await rollout_factory([ERROR_RATE, latency])
    await rollout.first_deploy("1.0.0")
    await rollout.apply("2.0.0", env={"MLCANARY_FAULT_LATENCY_MS": "300"})
    status = await rollout.wait_finished("2.0.0")

    history = record(status, "2.0.0")
    assert history is not None and history["outcome"] == "RolledBack", history
    assert "latency-p99" in history["reason"] and "error-rate" not in history["reason"], history["reason"]
    await _traffic_all_on(rollout, "1.0.0")


async def test_degenerate_predictions_are_rolled_back_by_prediction_drift(rollout_factory) -> None:
    drift = {"name": "prediction-drift", "builtin": "predictionDrift", "max": 2.0, "minRequests": 50}
    rollout: Rollout = await rollout_factory([ERROR_RATE, drift])
    await rollout.first_deploy("1.0.0")
    await rollout.apply("3.0.0")  # always the same answer, HTTP 200
    status = await rollout.wait_finished("3.0.0")

    history = record(status, "3.0.0")
    assert history is not None and history["outcome"] == "RolledBack", history
    assert "prediction-drift" in history["reason"] and "error-rate" not in history["reason"]
    judged = {m["metric"]: m for m in history["steps"][-1]["measurements"]}
    # Invisible to the HTTP-level check: no errors at all; only the ML-aware check failed.
    assert judged["error-rate"]["verdict"] == "Successful" and judged["error-rate"]["value"] == 0
    assert judged["prediction-drift"]["verdict"] == "Failed"
    assert judged["prediction-drift"]["value"] > 2.0
    await _traffic_all_on(rollout, "1.0.0")
    assert not [r for r in rollout.records() if not r.ok]


async def _traffic_all_on(rollout: Rollout, version: str) -> None:
    """After a rollback, the requests answered in the last second all came from ``version``."""
    await rollout.wait(lambda s: not s.get("retiring"), 20, "done removing the canary")
    await asyncio.sleep(1.5)
    now = time.time()
    recent = [r for r in rollout.records() if now - 2.5 <= r.t <= now - 1.0]
    assert recent, "no requests answered recently"
    assert {r.version for r in recent} == {version}
