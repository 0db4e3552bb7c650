"""Guards added after review: a router that never confirms, a bounded history, router switches."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import Sim, make_spec, measurement, of_type, reasons, spec_wire

from mlcanary.engine import HISTORY_BYTES, RemoveRouterObjects, _trim_history
from mlcanary.models import (
    ModelDeploymentSpec,
    Phase,
    RolloutOutcome,
    RolloutRecord,
    StepReport,
    Verdict,
)

T = datetime(2026, 1, 1, tzinfo=UTC)


def mesh_spec(**rollout) -> ModelDeploymentSpec:
    wire = spec_wire()
    wire["traffic"] = {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    wire["rollout"].update(rollout)
    return ModelDeploymentSpec.model_validate(wire)


def test_weight_the_router_never_confirms_rolls_back_after_the_progress_deadline() -> None:
    sim = Sim(mesh_spec(progressDeadline="30s"))
    sim.to_progressing()
    sim.settle = False
    sim.mesh_confirmed = False  # from now on the gateway never accepts the route
    sim.tick(10)
    assert sim.phase == Phase.PROGRESSING, "a short wait is not a failure"
    sim.tick(25)
    assert sim.phase == Phase.PROGRESSING, "the wait counts from the first unconfirmed observation"
    sim.tick(10)
    assert sim.phase == Phase.ROLLING_BACK
    assert "router did not confirm" in (sim.status.ending.reason if sim.status.ending else "")
    assert sim.weight == 0


def record(version: str, steps: int, metrics: int) -> RolloutRecord:
    measured = [
        measurement(Verdict.SUCCESSFUL, f"m{i}").model_copy(
            update={"value": 0.01, "threshold": "<= 0.05", "message": "within bounds"}
        )
        for i in range(metrics)
    ]
    return RolloutRecord(
        version=version,
        outcome=RolloutOutcome.PROMOTED,
        reason="every step passed",
        finished_at=T,
        steps=[StepReport(step=s, weight=s, measurements=measured) for s in range(1, steps + 1)],
    )


def size(records: list[RolloutRecord]) -> int:
    return sum(len(r.model_dump_json(by_alias=True, exclude_none=True)) for r in records)


def test_history_stays_within_its_byte_budget_and_keeps_the_newest() -> None:
    records = [record(f"{i}.0.0", steps=20, metrics=32) for i in range(10)]
    assert size(records) > HISTORY_BYTES
    trimmed = _trim_history(records)
    assert size(trimmed) <= HISTORY_BYTES
    assert trimmed[-1].version == "9.0.0"
    assert [r.version for r in trimmed] == [r.version for r in records[-len(trimmed) :]]


def test_small_history_is_untouched() -> None:
    records = [record(f"{i}.0.0", steps=3, metrics=2) for i in range(10)]
    assert _trim_history(records) == records


def test_switching_router_removes_the_old_objects_only_after_the_new_router_confirms() -> None:
    sim = Sim(mesh_spec())
    sim.deploy()
    assert sim.status.router_kind == "gatewayAPI"
    wire = sim.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    wire["traffic"] = {"istio": {"hosts": ["fraud.example.com"]}}
    sim.spec = ModelDeploymentSpec.model_validate(wire)
    sim.settle = False
    sim.mesh_confirmed = False  # the new router has not created (or had accepted) its object yet
    actions = sim.tick(1)
    assert not of_type(actions, RemoveRouterObjects), "old route removed before the new one carries traffic"
    assert sim.status.router_kind == "gatewayAPI"
    sim.confirm()
    actions = sim.tick(1)
    assert of_type(actions, RemoveRouterObjects) == [RemoveRouterObjects("gatewayAPI")]
    assert "RouterChanged" in reasons(actions)
    assert sim.status.router_kind == "istio"
    assert not of_type(sim.tick(1), RemoveRouterObjects)


def test_first_deploy_records_the_router_without_removing_anything() -> None:
    sim = Sim(make_spec())
    actions = sim.tick()
    assert sim.status.router_kind == "replicas"
    assert not of_type(actions, RemoveRouterObjects)
