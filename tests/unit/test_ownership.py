"""Every field the operator owns, of every kind it owns, is seen when edited by hand and repaired by
the patch it computes — while what the API server fills in (defaults, allocated IPs, status) is
neither called drift nor touched by a repair."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from conftest import make_spec, spec_wire

from mlcanary import ownership, resources
from mlcanary.engine import RevisionObservation, SetTraffic
from mlcanary.models import ModelDeploymentSpec, RevisionState, revision_name
from mlcanary.resources import Owner
from mlcanary.routers.base import RouteContext
from mlcanary.routers.gateway_api import httproute
from mlcanary.routers.istio import virtualservice

OWNER = Owner(name="fraud-detector", namespace="ml", uid="uid-1")
Edit = Callable[[dict[str, Any]], None]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """What a real API server returns for ``obj``: defaults filled in, zero values omitted
    (omitempty), server-allocated fields and status added."""
    live = copy.deepcopy(obj)
    live["metadata"].update(
        uid="child-uid", resourceVersion="7", generation=1, creationTimestamp="2026-01-01T00:00:00Z"
    )
    spec = live.get("spec", {})
    if obj["kind"] == "Deployment":
        for key in ("paused", "minReadySeconds"):
            if not spec.get(key):
                spec.pop(key, None)
        pod = spec["template"]["spec"]
        pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
        pod["terminationGracePeriodSeconds"] = 30
        for container in pod["containers"]:
            container.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
            container["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
            container["readinessProbe"].update(timeoutSeconds=1, successThreshold=1)
        live["status"] = {"replicas": spec.get("replicas", 1), "readyReplicas": spec.get("replicas", 1)}
    elif obj["kind"] == "Service":
        if not spec.get("publishNotReadyAddresses"):
            spec.pop("publishNotReadyAddresses", None)
        spec.update(
            clusterIP="10.0.0.7", clusterIPs=["10.0.0.7"], ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack"
        )
    elif obj["kind"] == "HorizontalPodAutoscaler":
        behavior = spec.get("behavior")
        if behavior is not None:  # what the API server fills in around a behavior that is set
            behavior.setdefault(
                "scaleUp",
                {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [{"type": "Pods"}]},
            )
            behavior["scaleDown"].update(stabilizationWindowSeconds=300, policies=[{"type": "Percent"}])
        live["status"] = {"currentReplicas": 4, "desiredReplicas": 4}
    elif obj["kind"] == "HTTPRoute":
        for rule in spec["rules"]:
            for match in rule["matches"]:
                match.setdefault("extraDefaultedField", "x")
        live["status"] = {"parents": []}
    return live


def deployment() -> dict[str, Any]:
    spec = make_spec("2.0.0", replicas=20)
    template = spec.revision_template()
    revision = RevisionState(revision=revision_name(OWNER.name, template), template=template)
    return resources.deployment(OWNER, spec, revision, "canary", 3)


AUTOSCALING = {"minReplicas": 20, "maxReplicas": 40, "targetCPUUtilizationPercentage": 70}


def autoscaled_revision() -> tuple[Any, RevisionState]:
    wire = spec_wire("2.0.0", replicas=20)
    wire["serving"]["autoscaling"] = AUTOSCALING
    spec = ModelDeploymentSpec.model_validate(wire)
    template = spec.revision_template()
    return spec, RevisionState(revision=revision_name(OWNER.name, template), template=template)


def autoscaled_deployment() -> dict[str, Any]:
    """A Deployment whose replica count its HPA owns (a canary behind a mesh router)."""
    spec, revision = autoscaled_revision()
    return resources.deployment(OWNER, spec, revision, "canary", None)


def hpa() -> dict[str, Any]:
    spec, revision = autoscaled_revision()
    assert spec.serving.autoscaling is not None
    return resources.horizontal_pod_autoscaler(OWNER, spec.serving.autoscaling, revision, "stable")


def holding_hpa() -> dict[str, Any]:
    """Stable's HPA while a canary's share is counted against stable's pods: scale up only."""
    spec, revision = autoscaled_revision()
    assert spec.serving.autoscaling is not None
    return resources.horizontal_pod_autoscaler(
        OWNER, spec.serving.autoscaling, revision, "stable", hold_scale_down=True
    )


def service() -> dict[str, Any]:
    return resources.entry_service(OWNER, make_spec("2.0.0", router="gatewayAPI"), "fraud-detector-v1-aaaa")


def route_context(router: str) -> RouteContext:
    revisions = {name: RevisionObservation(name, 2, 2) for name in ("stable-rev", "canary-rev")}
    return RouteContext(owner=OWNER, spec=make_spec("2.0.0", router=router), revisions=revisions)


def route() -> dict[str, Any]:
    return httproute(route_context("gatewayAPI"), SetTraffic("stable-rev", "canary-rev", 20))


def vs() -> dict[str, Any]:
    return virtualservice(route_context("istio"), SetTraffic("stable-rev", "canary-rev", 20))


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


DEPLOYMENT_EDITS: dict[str, Edit] = {
    "kubectl scale --replicas=0": lambda d: d["spec"].update(replicas=0),
    "paused": lambda d: d["spec"].update(paused=True),
    "minReadySeconds": lambda d: d["spec"].update(minReadySeconds=600),
    "progressDeadlineSeconds": lambda d: d["spec"].update(progressDeadlineSeconds=5),
    "revisionHistoryLimit": lambda d: d["spec"].update(revisionHistoryLimit=50),
    "strategy": lambda d: d["spec"].update(strategy={"type": "Recreate"}),
    "image": lambda d: container(d).update(image="evil:latest"),
    "env value": lambda d: container(d)["env"][0].update(value="s3://elsewhere/"),
    "env added": lambda d: container(d)["env"].append({"name": "X", "value": "1"}),
    "sidecar": lambda d: d["spec"]["template"]["spec"]["containers"].append({"name": "x", "image": "y"}),
    "probe": lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/"),
    "security": lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
    "pod label": lambda d: d["spec"]["template"]["metadata"]["labels"].update({"mlcanary.io/revision": "x"}),
    "scrape annotation": lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
        {"prometheus.io/scrape": "false"}
    ),
    "role label": lambda d: d["metadata"]["labels"].update({"mlcanary.io/role": "stable"}),
    "managed-by label removed": lambda d: d["metadata"]["labels"].pop("app.kubernetes.io/managed-by"),
    "owner reference removed": lambda d: d["metadata"].update(ownerReferences=[]),
}
SERVICE_EDITS: dict[str, Edit] = {
    "selector value": lambda s: s["spec"]["selector"].update({"mlcanary.io/revision": "canary-rev"}),
    "selector key removed": lambda s: s["spec"]["selector"].pop("mlcanary.io/revision"),
    "selector key added": lambda s: s["spec"]["selector"].update({"extra": "x"}),
    "port": lambda s: s["spec"]["ports"][0].update(port=9999),
    "type": lambda s: s["spec"].update(type="NodePort"),
    "sessionAffinity": lambda s: s["spec"].update(sessionAffinity="ClientIP"),
    "publishNotReadyAddresses": lambda s: s["spec"].update(publishNotReadyAddresses=True),
    "internalTrafficPolicy": lambda s: s["spec"].update(internalTrafficPolicy="Local"),
    "externalIPs": lambda s: s["spec"].update(externalIPs=["1.2.3.4"]),
    "trafficDistribution": lambda s: s["spec"].update(trafficDistribution="PreferClose"),
    "label": lambda s: s["metadata"]["labels"].update({"mlcanary.io/model-deployment": "other"}),
}
ROUTE_EDITS: dict[str, Edit] = {
    "weight": lambda r: r["spec"]["rules"][-1]["backendRefs"][1].update(weight=100),
    "backend removed": lambda r: r["spec"]["rules"][-1]["backendRefs"].pop(0),
    "hostnames added": lambda r: r["spec"].update(hostnames=["evil.example.com"]),
    "parentRef": lambda r: r["spec"]["parentRefs"][0].update(name="other"),
    "rule added": lambda r: r["spec"]["rules"].insert(0, copy.deepcopy(r["spec"]["rules"][-1])),
    "filter added": lambda r: r["spec"]["rules"][-1].update(
        filters=[{"type": "RequestRedirect", "requestRedirect": {"hostname": "evil.example.com"}}]
    ),
    "label": lambda r: r["metadata"]["labels"].update({"app.kubernetes.io/managed-by": "someone"}),
}
VS_EDITS: dict[str, Edit] = {
    "weight": lambda v: v["spec"]["http"][-1]["route"][1].update(weight=100),
    "hosts": lambda v: v["spec"].update(hosts=["*"]),
    "gateways added": lambda v: v["spec"].update(gateways=["public"]),
    "tcp added": lambda v: v["spec"].update(tcp=[{"route": []}]),
    "mirror": lambda v: v["spec"]["http"][-1].update(mirror={"host": "x"}),
    "fault": lambda v: v["spec"]["http"][-1].update(
        fault={"abort": {"httpStatus": 500, "percentage": {"value": 100}}}
    ),
}
HPA_EDITS: dict[str, Edit] = {
    "minReplicas": lambda h: h["spec"].update(minReplicas=1),
    "maxReplicas": lambda h: h["spec"].update(maxReplicas=100),
    "target": lambda h: h["spec"]["metrics"][0]["resource"]["target"].update(averageUtilization=20),
    "metric added": lambda h: h["spec"]["metrics"].append(
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization"}}}
    ),
    "scaleTargetRef": lambda h: h["spec"]["scaleTargetRef"].update(name="other"),
    "behavior added": lambda h: h["spec"].update(behavior={"scaleDown": {"selectPolicy": "Disabled"}}),
    "label": lambda h: h["metadata"]["labels"].update({"mlcanary.io/role": "canary"}),
    "owner reference removed": lambda h: h["metadata"].update(ownerReferences=[]),
}
HOLDING_HPA_EDITS: dict[str, Edit] = {
    "scale-down released": lambda h: h["spec"]["behavior"]["scaleDown"].update(selectPolicy="Max"),
    "behavior removed": lambda h: h["spec"].pop("behavior"),
}
# Of an autoscaled Deployment, the operator still owns everything but the replica count.
AUTOSCALED_DEPLOYMENT_EDITS = {k: v for k, v in DEPLOYMENT_EDITS.items() if "replicas" not in k}
CASES = [
    *[(hpa, name, edit) for name, edit in HPA_EDITS.items()],
    *[(holding_hpa, name, edit) for name, edit in HOLDING_HPA_EDITS.items()],
    *[(autoscaled_deployment, name, edit) for name, edit in AUTOSCALED_DEPLOYMENT_EDITS.items()],
    *[(deployment, name, edit) for name, edit in DEPLOYMENT_EDITS.items()],
    *[(service, name, edit) for name, edit in SERVICE_EDITS.items()],
    *[(route, name, edit) for name, edit in ROUTE_EDITS.items()],
    *[(vs, name, edit) for name, edit in VS_EDITS.items()],
]


@pytest.mark.parametrize("build", [deployment, autoscaled_deployment, hpa, holding_hpa, service, route, vs])
def test_what_the_server_fills_in_is_not_drift(build: Callable[[], dict[str, Any]]) -> None:
    desired = build()
    assert ownership.drift(desired, as_served(desired)) is None


@pytest.mark.parametrize(("build", "name", "edit"), CASES, ids=[f"{b.__name__}-{n}" for b, n, _ in CASES])
def test_a_hand_edit_of_an_owned_field_is_seen_and_repaired(
    build: Callable[[], dict[str, Any]], name: str, edit: Edit
) -> None:
    desired = build()
    live = as_served(desired)
    edit(live)
    assert ownership.drift(desired, live) is not None, f"{name} went unseen"
    repaired = merge_patch(live, ownership.repair_patch(desired, live))
    assert ownership.drift(desired, repaired) is None, f"{name} not repaired"
    # The repair never touches what the server owns.
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        assert repaired["spec"].get(key) == live["spec"].get(key)
    assert repaired.get("status") == live.get("status")
    assert repaired["metadata"]["uid"] == live["metadata"]["uid"]


def test_the_hpas_scaling_of_an_autoscaled_deployment_is_not_drift() -> None:
    """The HPA writes the count (and the API server had defaulted it to 1): never reverted."""
    desired = autoscaled_deployment()
    assert "replicas" not in desired["spec"]
    live = as_served(desired)
    for count in (1, 7, 0):
        live["spec"]["replicas"] = count
        assert ownership.drift(desired, live) is None
    # ... while a Deployment whose count the operator sets is repaired to it.
    fixed = deployment()
    live = as_served(fixed)
    live["spec"]["replicas"] = 7
    assert ownership.drift(fixed, live) == "spec.replicas: 7, want 3"


def test_an_autoscaled_deployments_repair_never_writes_its_count() -> None:
    desired = autoscaled_deployment()
    live = as_served(desired)
    live["spec"].update(replicas=7, paused=True)
    patch = ownership.repair_patch(desired, live)
    assert "replicas" not in patch["spec"]
    assert merge_patch(live, patch)["spec"]["replicas"] == 7
