"""serving.autoscaling: the model's bounds, the engine never writing a count an HPA owns, the replicas
router's canary following stable's live count without ever exceeding its step, and the HPAs the
renderer produces validated strictly as Kubernetes 1.29 and 1.37 would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Sim, ensured, spec_wire

from mlcanary import engine
from mlcanary.models import ModelDeploymentSpec, Phase, revision_name
from mlcanary.render import render_objects
from mlcanary.weights import served_share

V1, V2 = "1.0.0", "2.0.0"
CPU = {"minReplicas": 4, "maxReplicas": 20, "targetCPUUtilizationPercentage": 70}
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
REPO = Path(__file__).resolve().parents[2]


def autoscaled(version: str = V1, router: str = "replicas", **scaling: Any) -> ModelDeploymentSpec:
    wire = spec_wire(version, router=router, steps=[20, 50], metrics=[])
    wire["serving"]["autoscaling"] = {**CPU, **scaling}
    return ModelDeploymentSpec.model_validate(wire)


def rev(spec: ModelDeploymentSpec) -> str:
    return revision_name("fraud-detector", spec.revision_template())


# ------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ({"minReplicas": 30}, "minReplicas cannot be above maxReplicas (30 > 20)"),
        ({"maxReplicas": 1001}, "less than or equal to 1000"),
        ({"targetCPUUtilizationPercentage": 0}, "greater than or equal to 1"),
        (
            {"metric": {"type": "External", "name": "queue", "targetValue": "5"}},
            "give exactly one of targetCPUUtilizationPercentage and metric",
        ),
        (
            {
                "targetCPUUtilizationPercentage": None,
                "metric": {"type": "Pods", "name": "rps", "targetValue": "5"},
            },
            "a Pods metric takes targetAverageValue",
        ),
        (
            {
                "targetCPUUtilizationPercentage": None,
                "metric": {"type": "Object", "name": "rps", "targetValue": "5"},
            },
            "describedObject is required for, and only for, an Object metric",
        ),
        (
            {
                "targetCPUUtilizationPercentage": None,
                "metric": {"type": "Pods", "name": "rps", "targetAverageValue": "lots"},
            },
            "should match pattern",
        ),
    ],
)
def test_autoscaling_bounds_are_refused_naming_the_rule(scaling: dict[str, Any], message: str) -> None:
    wire = spec_wire(V1, router="gatewayAPI")
    wire["serving"]["autoscaling"] = {k: v for k, v in {**CPU, **scaling}.items() if v is not None}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelDeploymentSpec.model_validate(wire)


def test_the_replicas_routers_steps_are_checked_against_the_hpas_floor() -> None:
    with pytest.raises(ValueError, match=r"serving.autoscaling.minReplicas 2: one canary pod"):
        autoscaled(minReplicas=2)  # 20% needs 4 stable pods for one canary pod


def test_changing_autoscaling_starts_no_canary() -> None:
    assert rev(autoscaled()) == rev(autoscaled(maxReplicas=50))
    without = ModelDeploymentSpec.model_validate(spec_wire(V1, replicas=4, steps=[20, 50]))
    assert rev(autoscaled()) == rev(without)  # and existing revisions keep their names


# ------------------------------------------------------------------------------------------ engine


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
def test_behind_a_mesh_each_revision_scales_on_its_own_and_no_count_is_ever_written(router: str) -> None:
    sim = Sim(autoscaled(router=router)).deploy()
    assert ensured(sim.actions)["stable"].replicas is None
    sim.revisions[rev(sim.spec)].desired = sim.revisions[rev(sim.spec)].ready = 9  # the stable's HPA
    sim.new_version(V2)
    for _ in range(12):
        actions = sim.tick(300)
        for action in ensured(actions).values():
            assert action.replicas is None and not action.hold_scale_down
        if sim.phase == Phase.HEALTHY:
            break
    assert sim.status.stable_version == V2
    assert sim.revisions[rev(sim.spec)].desired == 4  # created at the floor; its HPA decides next


def test_replicas_router_canary_follows_stables_live_count_and_never_exceeds_its_step() -> None:
    sim = Sim(autoscaled()).deploy()
    stable = rev(sim.spec)
    assert ensured(sim.actions)["stable"].replicas is None
    assert not ensured(sim.actions)["stable"].hold_scale_down  # no canary: the HPA scales freely
    sim.new_version(V2)
    canary = rev(sim.spec)
    sim.tick()
    sim.run_until(Phase.PROGRESSING)
    assert sim.weight == 20 and sim.revisions[canary].desired == 1  # 1 beside 4: 20%
    assert ensured(sim.actions)["stable"].hold_scale_down  # stable may grow, not shrink
    sim.settle = False
    for stable_pods in (9, 13, 20):  # the HPA scales stable up under load
        sim.revisions[stable].desired = sim.revisions[stable].ready = stable_pods
        actions = sim.tick(1)
        assert ensured(actions)["stable"].replicas is None
        sim.make_ready()
        share = served_share(sim.revisions[stable].ready, sim.revisions[canary].ready)
        assert share is not None and share <= sim.weight
        assert sim.revisions[canary].desired == stable_pods * 20 // 80
    # An HPA write that lowers stable's count (by hand, or before the hold reached it) shrinks the
    # canary on the next tick, before the pods are gone: the count decided is taken, not the ready.
    sim.revisions[stable].desired = 8
    actions = sim.tick(1)
    assert ensured(actions)["canary"].replicas == 2


def test_replicas_router_promotion_takes_the_count_back_then_hands_it_to_the_new_stables_hpa() -> None:
    sim = Sim(autoscaled()).deploy()
    stable = rev(sim.spec)
    sim.revisions[stable].desired = sim.revisions[stable].ready = 12
    sim.new_version(V2)
    canary = rev(sim.spec)
    seen_promotion = False
    for _ in range(20):
        actions = sim.tick(300)
        plan = ensured(actions)
        if sim.weight == 100 and "canary" in plan:
            seen_promotion = True
            assert plan["canary"].replicas == 12  # as many as stable runs, stable going once ready
            assert plan["stable"].replicas in (12, 0) and not plan["stable"].hold_scale_down
        if sim.phase == Phase.HEALTHY:
            break
    assert seen_promotion and sim.status.stable_version == V2
    final = ensured(sim.actions)["stable"]
    assert final.revision.revision == canary and final.replicas is None and not final.hold_scale_down


def test_an_abort_while_ticks_fail_leaves_the_stables_hpa_in_charge() -> None:
    sim = Sim(autoscaled()).deploy()
    sim.new_version(V2)
    sim.tick()
    sim.run_until(Phase.PROGRESSING)
    _, actions = engine.abort_while_failing(sim.spec, sim.status, "1", sim.spec.traffic.router_kind, sim.now)
    plan = ensured(actions)
    assert (plan["stable"].replicas, plan["canary"].replicas) == (None, 0)


# ------------------------------------------------------------------------------ objects and schema


def manifest(router: str, scaling: dict[str, Any]) -> dict[str, Any]:
    wire = spec_wire(V2, router=router, steps=[20, 50], metrics=[])
    wire["serving"]["autoscaling"] = scaling
    return {"metadata": {"name": "fraud-detector", "namespace": "ml"}, "spec": wire}


METRICS = {
    "cpu": CPU,
    "pods": {
        "minReplicas": 4,
        "maxReplicas": 8,
        "metric": {"type": "Pods", "name": "rps", "targetAverageValue": "50"},
    },
    "object": {
        "minReplicas": 4,
        "maxReplicas": 8,
        "metric": {
            "type": "Object",
            "name": "requests_per_second",
            "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
            "targetValue": "2k",
        },
    },
    "external": {
        "minReplicas": 4,
        "maxReplicas": 8,
        "metric": {
            "type": "External",
            "name": "queue_messages_ready",
            "selector": {"queue": "fraud"},
            "targetAverageValue": "30",
        },
    },
}


def rendered_hpas() -> list[dict[str, Any]]:
    hpas = []
    for router in ("replicas", "gatewayAPI"):
        for scaling in METRICS.values():
            for stable_version in (None, V1):
                objects = render_objects(manifest(router, scaling), stable_version=stable_version, step=1)
                hpas += [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    return hpas


def test_render_makes_one_hpa_per_scaled_revision_and_deployments_without_a_count() -> None:
    canary_objects = render_objects(manifest("replicas", CPU), stable_version=V1, step=1)
    hpas = [o for o in canary_objects if o["kind"] == "HorizontalPodAutoscaler"]
    deployments = {
        o["metadata"]["labels"]["mlcanary.io/role"]: o for o in canary_objects if o["kind"] == "Deployment"
    }
    assert [h["metadata"]["labels"]["mlcanary.io/role"] for h in hpas] == ["stable"]  # the canary follows
    assert hpas[0]["spec"]["behavior"] == {"scaleDown": {"selectPolicy": "Disabled"}}
    assert hpas[0]["spec"]["scaleTargetRef"]["name"] == deployments["stable"]["metadata"]["name"]
    assert "replicas" not in deployments["stable"]["spec"] and deployments["canary"]["spec"]["replicas"] == 1
    mesh = render_objects(manifest("gatewayAPI", CPU), stable_version=V1, step=1)
    assert sorted(
        o["metadata"]["labels"]["mlcanary.io/role"] for o in mesh if o["kind"] == "HorizontalPodAutoscaler"
    ) == [
        "canary",
        "stable",
    ]
    assert all("replicas" not in o["spec"] for o in mesh if o["kind"] == "Deployment")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_hpas_validate_strictly(version: str) -> None:
    """Strict schema validation in process, as tests/chart does: a missing schema raises, so every
    HPA is really checked."""
    import kubernetes_validate
    import kubernetes_validate.utils

    assert version in kubernetes_validate.utils.all_versions()
    objects = rendered_hpas()
    assert {h["spec"]["metrics"][0]["type"] for h in objects} == {"Resource", "Pods", "Object", "External"}
    assert any("behavior" in h["spec"] for h in objects)
    for hpa in objects:
        kubernetes_validate.validate(hpa, version, strict=True)


def test_the_autoscaling_example_renders() -> None:
    doc = yaml.safe_load((REPO / "examples" / "autoscaling.yaml").read_text())
    objects = render_objects(doc, stable_version=V1, step=1)
    (hpa,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "mlcanary_requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": "50"},
            },
        }
    ]
