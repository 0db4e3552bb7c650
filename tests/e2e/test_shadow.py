"""The shadow phase end to end on the local stack (gatewayAPI router): real serving processes, the
local gateway mirroring real prediction requests to the canary, the canary pod scoring each one with
the stable's model too, Prometheus scraping its agreement metrics, the real operator judging them.
A better model passes the shadow phase and is promoted; a degenerate one is rolled back from it
having answered zero user requests."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import ERROR_RATE, Rollout, record, served_by

pytestmark = pytest.mark.integration

SHADOW = {
    "duration": "8s",
    "mirrorPercent": 100,
    "minSamples": 50,
    "agreement": {"min": 0.9},
    "scoreDifference": {"max": 0.5, "quantile": 0.9},
}


async def test_shadow_passes_a_good_model_and_stops_a_degenerate_one_before_any_user_request(
    rollout_factory,
) -> None:
    rollout: Rollout = await rollout_factory([ERROR_RATE], router="gatewayAPI", shadow=SHADOW, replicas=1)
    await rollout.first_deploy("1.0.0")

    await rollout.apply("2.0.0")
    await rollout.wait(lambda s: s.get("phase") == "Shadowing", 60, "shadowing 2.0.0")
    status = await rollout.wait_finished("2.0.0", within=120)
    history = record(status, "2.0.0")
    assert history is not None and history["outcome"] == "Promoted", history
    shadow = history["steps"][0]
    assert shadow["kind"] == "shadow" and shadow["verdict"] == "Successful", shadow
    agreement = next(m for m in shadow["measurements"] if m["metric"] == "shadow-agreement")
    assert agreement["value"] >= 0.9 and agreement["sampleSize"] >= 50, agreement

    await rollout.apply("3.0.0")  # always the same answer, HTTP 200
    status = await rollout.wait_finished("3.0.0", within=90)
    history = record(status, "3.0.0")
    assert history is not None and history["outcome"] == "RolledBack", history
    assert "shadow phase failed" in history["reason"] and "shadow-agreement" in history["reason"]
    assert [s.get("kind") for s in history["steps"]] == ["shadow"]  # never reached step 1
    assert status["stableVersion"] == "2.0.0"

    await asyncio.sleep(1.5)  # the requests in flight are answered and written
    rollout.stop_load()
    records = rollout.records()
    assert served_by(records, "3.0.0") == 0  # zero user requests answered by the degenerate version
    assert served_by(records, "2.0.0") > 100
    assert not [r for r in records if not r.ok]
