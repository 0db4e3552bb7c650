"""The fake Deployment controller: readiness modes, rules, annotations, scaling and the control endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from emulator_kit import DEPLOYS, Http, deployment, wait_for

from kube_emulator import KubernetesEmulator
from kube_emulator.deployments import READINESS_ANNOTATION, ReadinessMode


def status_of(emu: KubernetesEmulator, name: str) -> dict[str, Any]:
    obj = emu.get_object("deployments", name)
    assert obj is not None
    return dict(obj.get("status") or {})


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def settled(emu: KubernetesEmulator, name: str) -> dict[str, Any] | None:
    obj = emu.get_object("deployments", name)
    assert obj is not None
    status = obj.get("status") or {}
    return status if status.get("observedGeneration") == obj["metadata"]["generation"] else None


async def test_ready_mode_reports_every_replica(emu: KubernetesEmulator, http: Http) -> None:
    created = await http.ok("POST", DEPLOYS, deployment("web", replicas=3))
    assert "status" not in created, "the controller writes status asynchronously"
    status = await wait_for(lambda: settled(emu, "web"))
    assert (
        status["replicas"]
        == status["readyReplicas"]
        == status["availableReplicas"]
        == status["updatedReplicas"]
        == 3
    )
    assert conditions(status) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    fetched = await http.ok("GET", f"{DEPLOYS}/web/status")
    assert fetched["status"]["observedGeneration"] == fetched["metadata"]["generation"] == 1


async def test_never_mode_via_annotation_and_deadline(emu: KubernetesEmulator, http: Http) -> None:
    dep = deployment("stuck", replicas=2, annotations={READINESS_ANNOTATION: "never"})
    dep["spec"]["progressDeadlineSeconds"] = 1
    await http.ok("POST", DEPLOYS, dep)
    status = await wait_for(lambda: settled(emu, "stuck"))
    assert status.get("readyReplicas", 0) == 0 and "availableReplicas" not in status
    assert status["unavailableReplicas"] == 2 and status["updatedReplicas"] == 2
    assert conditions(status)["Available"] == ("False", "MinimumReplicasUnavailable")
    assert conditions(status)["Progressing"] == ("True", "ReplicaSetUpdated")
    await wait_for(
        lambda: conditions(status_of(emu, "stuck"))["Progressing"] == ("False", "ProgressDeadlineExceeded"),
        within=4,
    )


async def test_slow_mode_becomes_ready_after_the_delay(emu: KubernetesEmulator, http: Http) -> None:
    loop = asyncio.get_running_loop()
    emu.set_readiness("default", "slow-web", "slow:0.6")
    started = loop.time()
    await http.ok("POST", DEPLOYS, deployment("slow-web", replicas=2))
    first = await wait_for(lambda: settled(emu, "slow-web"))
    assert first.get("readyReplicas", 0) == 0
    await wait_for(lambda: status_of(emu, "slow-web").get("readyReplicas") == 2, within=5)
    assert loop.time() - started >= 0.55


async def test_template_annotation_and_partial_mode(emu: KubernetesEmulator, http: Http) -> None:
    await http.ok(
        "POST",
        DEPLOYS,
        deployment("half", replicas=4, template_annotations={READINESS_ANNOTATION: "partial:1"}),
    )
    status = await wait_for(lambda: settled(emu, "half"))
    assert status["readyReplicas"] == 1 and status["unavailableReplicas"] == 3


async def test_crash_mode_posts_a_warning_event(emu: KubernetesEmulator, http: Http) -> None:
    await http.ok("POST", DEPLOYS, deployment("crashy", annotations={READINESS_ANNOTATION: "crash"}))
    await wait_for(lambda: settled(emu, "crashy"))
    events = await wait_for(lambda: emu.objects("events", "default"))
    assert events[0]["reason"] == "BackOff" and events[0]["type"] == "Warning"
    assert events[0]["involvedObject"]["name"] == "crashy"


async def test_rules_by_prefix_and_selector_win_over_annotations(emu: KubernetesEmulator, http: Http) -> None:
    rule = emu.set_readiness("default", "model-canary*", "never")
    emu.set_readiness(None, "track=shadow", "never")
    await http.ok("POST", DEPLOYS, deployment("model-canary-v2", annotations={READINESS_ANNOTATION: "ready"}))
    await http.ok("POST", DEPLOYS, deployment("model-stable"))
    await http.ok("POST", DEPLOYS, deployment("model-shadow", labels={"track": "shadow"}))
    await wait_for(lambda: all(settled(emu, n) for n in ("model-canary-v2", "model-stable", "model-shadow")))
    assert status_of(emu, "model-canary-v2").get("readyReplicas", 0) == 0
    assert status_of(emu, "model-stable")["readyReplicas"] == 1
    assert status_of(emu, "model-shadow").get("readyReplicas", 0) == 0

    emu.clear_readiness(rule.id)
    await wait_for(lambda: status_of(emu, "model-canary-v2").get("readyReplicas") == 1)
    emu.set_readiness("default", "model-stable", "never")
    await wait_for(lambda: status_of(emu, "model-stable").get("readyReplicas", 0) == 0)


async def test_scaling_updates_the_status(emu: KubernetesEmulator, http: Http) -> None:
    await http.ok("POST", DEPLOYS, deployment("scaled", replicas=2))
    await wait_for(lambda: status_of(emu, "scaled").get("readyReplicas") == 2)
    await http.ok("PATCH", f"{DEPLOYS}/scaled", {"spec": {"replicas": 5}})
    await wait_for(lambda: status_of(emu, "scaled").get("readyReplicas") == 5)
    scale = await http.ok("GET", f"{DEPLOYS}/scaled/scale")
    assert (
        scale["kind"] == "Scale"
        and scale["spec"]["replicas"] == 5
        and scale["status"]["selector"] == "app=scaled"
    )
    await http.ok("PATCH", f"{DEPLOYS}/scaled/scale", {"spec": {"replicas": 0}})
    status = await wait_for(lambda: settled(emu, "scaled"))
    assert "readyReplicas" not in status and "replicas" not in status, (
        "zero counters are omitted like the real API"
    )
    assert conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")
    assert (await http.ok("GET", f"{DEPLOYS}/scaled"))["spec"]["replicas"] == 0


async def test_rolling_update_keeps_old_replicas_serving_until_new_ones_are_ready(
    emu: KubernetesEmulator, http: Http
) -> None:
    await http.ok("POST", DEPLOYS, deployment("roll", replicas=2))
    await wait_for(lambda: status_of(emu, "roll").get("availableReplicas") == 2)
    updated = deployment("roll", replicas=2, template_annotations={READINESS_ANNOTATION: "never"})
    await http.ok("PATCH", f"{DEPLOYS}/roll", {"spec": updated["spec"]})
    status = await wait_for(lambda: settled(emu, "roll"))
    assert status["availableReplicas"] == 2, "the old replicas keep serving"
    assert status["replicas"] == 4 and status["updatedReplicas"] == 2
    assert conditions(status)["Progressing"] == ("True", "ReplicaSetUpdated")


async def test_http_control_endpoint(emu: KubernetesEmulator, http: Http) -> None:
    status, body = await http.post(
        "/emulator/v1/readiness", {"namespace": "default", "target": "ctl", "mode": "never"}
    )
    assert status == 201 and body["mode"] == "never"
    await http.ok("POST", DEPLOYS, deployment("ctl"))
    await wait_for(lambda: settled(emu, "ctl"))
    assert status_of(emu, "ctl").get("readyReplicas", 0) == 0
    rules = await http.ok("GET", "/emulator/v1/readiness")
    assert [r["target"] for r in rules["rules"]] == ["ctl"]
    assert (await http.ok("DELETE", "/emulator/v1/readiness"))["removed"] == 1
    await wait_for(lambda: status_of(emu, "ctl").get("readyReplicas") == 1)
    status, body = await http.post("/emulator/v1/readiness", {"target": "x", "mode": "sometimes"})
    assert (status, body["reason"]) == (400, "BadRequest")


async def test_controller_can_be_disabled() -> None:
    async with KubernetesEmulator(deployment_controller=False) as emu:
        emu.apply(deployment("quiet"))
        await asyncio.sleep(0.1)
        assert "status" not in (emu.get_object("deployments", "quiet") or {})
        with pytest.raises(RuntimeError):
            emu.set_readiness(None, None, "ready")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ready", ReadinessMode("ready")),
        ("slow:2.5", ReadinessMode("slow", seconds=2.5)),
        ("never", ReadinessMode("never")),
        ("crash", ReadinessMode("crash")),
        ("partial:2", ReadinessMode("partial", count=2)),
    ],
)
def test_readiness_mode_parsing(text: str, expected: ReadinessMode) -> None:
    assert ReadinessMode.parse(text) == expected
    assert str(ReadinessMode.parse(text)) == text


@pytest.mark.parametrize("text", ["slow", "slow:x", "slow:-1", "partial:a", "sometimes", "ready:1"])
def test_invalid_readiness_modes(text: str) -> None:
    with pytest.raises(ValueError):
        ReadinessMode.parse(text)
