"""CEL rules (x-kubernetes-validations) evaluated as a real API server evaluates them.

The project's own rules come from crds/ (generated from operator/mlcanary/models.py): every rule there
has a case below that breaks it, the emulator refuses the broken object naming the field and the rule's
message, and accepts the example it was made from. The upstream Gateway API HTTPRoute CRD (from
../shared/upstream-crds, skipped when absent) shows its rules run too.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from emulator_kit import CRDS, Http, widget, widget_crd

from kube_emulator import KubernetesEmulator
from kube_emulator.cel import CelValidator, compile_rule

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modeldeployments.mlcanary.io.yaml"
EXAMPLES = REPO / "examples"
UPSTREAM = REPO.parent / "shared" / "upstream-crds"
MDEPS = "/apis/mlcanary.io/v1alpha1/namespaces/default/modeldeployments"

Obj = dict[str, Any]


def _example(name: str) -> Obj:
    obj: Obj = yaml.safe_load((EXAMPLES / name).read_text())
    obj["metadata"]["namespace"] = "default"
    return obj


def _rules(schema: Any, path: str = "") -> list[tuple[str, str]]:
    """(schema path, message) of every rule, e.g. ("spec.traffic", "give exactly one router ...")."""
    if not isinstance(schema, dict):
        return []
    found = [(path, str(v.get("message"))) for v in schema.get("x-kubernetes-validations") or []]
    for key, sub in (schema.get("properties") or {}).items():
        found += _rules(sub, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        found += _rules(schema["items"], f"{path}[]")
    return found


def _set(obj: Obj, path: str, value: Any) -> Obj:
    node = obj
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return obj


Mutation = Callable[[Obj], tuple[Obj, str]]  # -> (broken object, the field the refusal names)


def _on(example: str, path: str, value: Any, field: str | None = None) -> tuple[str, Mutation]:
    def mutate(_: Obj) -> tuple[Obj, str]:
        return _set(_example(example), path, value), field or path

    return example, mutate


def _metric(change: Callable[[Obj], None]) -> tuple[str, Mutation]:
    def mutate(_: Obj) -> tuple[Obj, str]:
        obj = _example("replicas.yaml")
        change(obj["spec"]["analysis"]["metrics"][0])
        return obj, "spec.analysis.metrics[0]"

    return "replicas.yaml", mutate


def _extra_rules_duplicate(router: str) -> tuple[str, Mutation]:
    example = "gateway-api.yaml" if router == "gatewayAPI" else "istio.yaml"

    def mutate(_: Obj) -> tuple[Obj, str]:
        obj = _example(example)
        rules = obj["spec"]["traffic"][router]["extraRules"]
        rules.append(copy.deepcopy(rules[0]))
        return obj, f"spec.traffic.{router}"

    return example, mutate


def _extra_rule_path(router: str) -> tuple[str, Mutation]:
    example = "gateway-api.yaml" if router == "gatewayAPI" else "istio.yaml"

    def mutate(_: Obj) -> tuple[Obj, str]:
        obj = _example(example)
        obj["spec"]["traffic"][router]["extraRules"][0]["matches"][0]["path"] = {
            "type": "Exact",
            "value": "x",
        }
        return obj, f"spec.traffic.{router}.extraRules[0].matches[0].path"

    return example, mutate


def _two_routers() -> tuple[str, Mutation]:
    def mutate(_: Obj) -> tuple[Obj, str]:
        obj = _example("replicas.yaml")
        obj["spec"]["traffic"]["istio"] = _example("istio.yaml")["spec"]["traffic"]["istio"]
        return obj, "spec.traffic"

    return "replicas.yaml", mutate


def _bad_name() -> tuple[str, Mutation]:
    def mutate(_: Obj) -> tuple[Obj, str]:
        obj = _example("replicas.yaml")
        obj["metadata"]["name"] = "1fraud"  # a valid object name, but not a DNS-1035 Service name
        return obj, ""

    return "replicas.yaml", mutate


def _retraining(change: Callable[[Obj], None]) -> tuple[str, Mutation]:
    def mutate(_: Obj) -> tuple[Obj, str]:
        obj = _example("retraining.yaml")
        change(obj["spec"]["retraining"])
        return obj, "spec.retraining"

    return "retraining.yaml", mutate


TOO_LONG = "1000h"
REGISTRY = {"trackingUri": "http://mlflow:5000", "registeredModel": "fraud", "alias": "champion"}
CASES: dict[tuple[str, str], tuple[str, Mutation]] = {
    ("", "metadata.name must be a DNS-1035 label"): _bad_name(),
    ("spec", "shadow: the replicas router cannot mirror requests"): _on(
        "replicas.yaml", "spec.shadow", {"agreement": {"min": 0.9}}, "spec"
    ),
    ("spec.shadow", "give agreement, scoreDifference or both"): _on(
        "gateway-api.yaml", "spec.shadow", {"duration": "1m"}
    ),
    ("spec.shadow.duration", "must be between"): _on(
        "gateway-api.yaml",
        "spec.shadow",
        {"duration": "25h", "agreement": {"min": 0.9}},
        "spec.shadow.duration",
    ),
    ("spec.rollout.stepDuration", "must be between"): _on(
        "replicas.yaml", "spec.rollout.stepDuration", TOO_LONG
    ),
    ("spec.rollout.progressDeadline", "must be between"): _on(
        "replicas.yaml", "spec.rollout.progressDeadline", TOO_LONG
    ),
    ("spec.rollout.scaleDownDelay", "must be between"): _on(
        "replicas.yaml", "spec.rollout.scaleDownDelay", TOO_LONG
    ),
    ("spec.analysis.interval", "must be between"): _on("replicas.yaml", "spec.analysis.interval", "500ms"),
    ("spec.analysis.prometheus.timeout", "must be between"): _on(
        "replicas.yaml",
        "spec.analysis.prometheus",
        {"address": "http://prometheus:9090", "timeout": "10m"},
        "spec.analysis.prometheus.timeout",
    ),
    ("spec.analysis.metrics[]", "give exactly one of builtin and query"): _metric(
        lambda m: m.update(query="sum(rate(x[1m]))")
    ),
    ("spec.analysis.metrics[]", "give min, max or compareTo"): _metric(
        lambda m: [m.pop(k, None) for k in ("min", "max", "compareTo")]
    ),
    ("spec.traffic", "give exactly one router"): _two_routers(),
    ("spec.traffic.gatewayAPI", "extraRules names must be unique"): _extra_rules_duplicate("gatewayAPI"),
    ("spec.traffic.gatewayAPI.path", "an Exact or PathPrefix path must start with '/'"): _on(
        "gateway-api.yaml", "spec.traffic.gatewayAPI.path", {"type": "PathPrefix", "value": "api"}
    ),
    ("spec.traffic.gatewayAPI.timeouts", "backendRequest cannot be longer than request"): _on(
        "gateway-api.yaml", "spec.traffic.gatewayAPI.timeouts", {"request": "5s", "backendRequest": "10s"}
    ),
    ("spec.traffic.gatewayAPI.extraRules[].matches[].path", "an Exact or PathPrefix path"): _extra_rule_path(
        "gatewayAPI"
    ),
    ("spec.traffic.istio", "extraRules names must be unique"): _extra_rules_duplicate("istio"),
    ("spec.traffic.istio.path", "an Exact or PathPrefix path must start with '/'"): _on(
        "istio.yaml", "spec.traffic.istio.path", {"type": "Exact", "value": "predict"}
    ),
    ("spec.traffic.istio.timeout", "must be between"): _on(
        "istio.yaml", "spec.traffic.istio.timeout", TOO_LONG
    ),
    ("spec.traffic.istio.retries.perTryTimeout", "must be between"): _on(
        "istio.yaml", "spec.traffic.istio.retries.perTryTimeout", TOO_LONG
    ),
    ("spec.traffic.istio.extraRules[].matches[].path", "an Exact or PathPrefix path"): _extra_rule_path(
        "istio"
    ),
    ("spec.traffic.istio.settleTime", "must be between"): _on(
        "istio.yaml", "spec.traffic.istio.settleTime", "11m"
    ),
    ("spec.traffic.replicas.settleTime", "must be between"): _on(
        "replicas.yaml", "spec.traffic.replicas.settleTime", "11m"
    ),
    ("spec.notifications[]", "hmacSecret and mode apply to the cloudevents provider only"): _on(
        "replicas.yaml",
        "spec.notifications",
        [
            {
                "provider": "slack",
                "reasons": ["RolledBack"],
                "urlSecret": {"name": "hooks", "key": "slack"},
                "mode": "binary",
            }
        ],
        "spec.notifications[0]",
    ),
    ("spec", "loadTest needs the gatewayAPI or istio router"): _on(
        "replicas.yaml", "spec.loadTest", {"rps": 10}, "spec"
    ),
    ("spec.loadTest", "give exactly one of rps, rpsFromStable and jobTemplate"): _on(
        "gateway-api.yaml", "spec.loadTest", {"rps": 5, "rpsFromStable": {}}
    ),
    ("spec.loadTest", "bodiesConfigMap is for the built-in generator"): _on(
        "gateway-api.yaml",
        "spec.loadTest",
        {
            "jobTemplate": {"spec": {"containers": [{"name": "k6", "image": "grafana/k6"}]}},
            "bodiesConfigMap": {"name": "bodies", "key": "requests.json"},
        },
    ),
    ("spec.loadTest.rpsFromStable", "minRps cannot be above maxRps"): _on(
        "gateway-api.yaml",
        "spec.loadTest",
        {"rpsFromStable": {"minRps": 50, "maxRps": 10}},
        "spec.loadTest.rpsFromStable",
    ),
    ("spec.loadTest.rpsFromStable.window", "must be between"): _on(
        "gateway-api.yaml",
        "spec.loadTest",
        {"rpsFromStable": {"window": "30s"}},
        "spec.loadTest.rpsFromStable.window",
    ),
    ("spec.loadTest.duration", "must be between"): _on(
        "gateway-api.yaml", "spec.loadTest", {"rps": 10, "duration": "2h"}, "spec.loadTest.duration"
    ),
    ("spec.loadTest.warmup", "must be between"): _on(
        "gateway-api.yaml", "spec.loadTest", {"rps": 10, "warmup": "11m"}, "spec.loadTest.warmup"
    ),
    ("spec.loadTest.requestTimeout", "must be between"): _on(
        "gateway-api.yaml",
        "spec.loadTest",
        {"rps": 10, "requestTimeout": "2m"},
        "spec.loadTest.requestTimeout",
    ),
    ("spec.loadTest.slo.maxLatencyP95", "must be between"): _on(
        "gateway-api.yaml",
        "spec.loadTest",
        {"rps": 10, "slo": {"maxLatencyP95": "2m"}},
        "spec.loadTest.slo.maxLatencyP95",
    ),
    ("spec.loadTest.slo.maxLatencyP99", "must be between"): _on(
        "gateway-api.yaml",
        "spec.loadTest",
        {"rps": 10, "slo": {"maxLatencyP99": "0s"}},
        "spec.loadTest.slo.maxLatencyP99",
    ),
    ("spec.serving.autoscaling", "minReplicas cannot be above maxReplicas"): _on(
        "autoscaling.yaml", "spec.serving.autoscaling.minReplicas", 30, "spec.serving.autoscaling"
    ),
    ("spec.serving.autoscaling", "give exactly one of targetCPUUtilizationPercentage"): _on(
        "autoscaling.yaml",
        "spec.serving.autoscaling.targetCPUUtilizationPercentage",
        80,
        "spec.serving.autoscaling",
    ),
    ("spec.serving.autoscaling.metric", "give exactly one of targetValue"): _on(
        "autoscaling.yaml",
        "spec.serving.autoscaling.metric.targetValue",
        "10",
        "spec.serving.autoscaling.metric",
    ),
    ("spec.serving.autoscaling.metric", "a Pods metric takes targetAverageValue"): _on(
        "autoscaling.yaml",
        "spec.serving.autoscaling.metric",
        {"type": "Pods", "name": "rps", "targetValue": "10"},
    ),
    ("spec.serving.autoscaling.metric", "describedObject is required"): _on(
        "autoscaling.yaml",
        "spec.serving.autoscaling.metric",
        {
            "type": "External",
            "name": "queue_depth",
            "targetValue": "10",
            "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "queue"},
        },
    ),
    ("spec.retraining.triggers.inputDrift.for", "must be between"): _on(
        "retraining.yaml", "spec.retraining.triggers.inputDrift.for", TOO_LONG
    ),
    ("spec.retraining.triggers.predictionDrift.for", "must be between"): _on(
        "retraining.yaml", "spec.retraining.triggers.predictionDrift.for", TOO_LONG
    ),
    ("spec.retraining.triggers.accuracyDrop.for", "must be between"): _on(
        "retraining.yaml", "spec.retraining.triggers.accuracyDrop.for", TOO_LONG
    ),
    ("spec.retraining.jobTemplate.activeDeadline", "must be between"): _on(
        "retraining.yaml", "spec.retraining.jobTemplate.activeDeadline", "30s"
    ),
    ("spec.retraining.jobTemplate.ttlAfterFinished", "must be between"): _on(
        "retraining.yaml", "spec.retraining.jobTemplate.ttlAfterFinished", TOO_LONG
    ),
    ("spec.retraining.window", "must be between"): _on("retraining.yaml", "spec.retraining.window", "25h"),
    ("spec.retraining.cooldown", "must be between"): _on(
        "retraining.yaml", "spec.retraining.cooldown", "30s"
    ),
    ("spec.retraining", "schedule needs jobTemplate"): _retraining(
        lambda r: (
            r.update(action="Webhook", webhook={"urlSecret": {"name": "hooks", "key": "url"}})
            or r.pop("jobTemplate")
        )
    ),
    ("spec.retraining", "action Job needs jobTemplate"): _retraining(
        lambda r: r.update(action="Webhook") or r.pop("schedule")
    ),
    ("spec.model.registry.pollInterval", "must be between"): _on(
        "replicas.yaml",
        "spec.model.registry",
        {**REGISTRY, "pollInterval": "5s"},
        "spec.model.registry.pollInterval",
    ),
    ("spec.model.registry.timeout", "must be between"): _on(
        "replicas.yaml", "spec.model.registry", {**REGISTRY, "timeout": "10m"}, "spec.model.registry.timeout"
    ),
    ("spec.model.registry", "promotionAlias must differ from alias"): _on(
        "replicas.yaml", "spec.model.registry", {**REGISTRY, "promotionAlias": "champion"}
    ),
    ("spec.model.registry", "give at most one of bearerTokenSecret and basicAuthSecret"): _on(
        "replicas.yaml",
        "spec.model.registry",
        {
            **REGISTRY,
            "basicAuthSecret": "mlflow-basic",
            "bearerTokenSecret": {"name": "mlflow", "key": "token"},
        },
    ),
}


def _case_for(path: str, message: str) -> tuple[str, Mutation] | None:
    return next((case for (p, m), case in CASES.items() if p == path and message.startswith(m)), None)


@pytest.fixture
async def with_crd(emu: KubernetesEmulator, http: Http) -> Http:
    await http.ok("POST", CRDS, yaml.safe_load(CRD.read_text()))
    return http


def test_every_rule_of_the_crd_has_a_case() -> None:
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = _rules(schema)
    assert len(rules) >= 10
    missing = [rule for rule in rules if _case_for(*rule) is None]
    assert missing == [], f"add a case to CASES for: {missing}"


async def test_each_rule_refuses_a_broken_object_and_accepts_the_example(with_crd: Http) -> None:
    http = with_crd
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for example in ("replicas.yaml", "gateway-api.yaml", "istio.yaml"):
        obj = _example(example)
        obj["metadata"]["name"] = example.split(".")[0]
        status, body = await http.post(MDEPS, obj)
        assert status == 201, (example, body)
    for path, message in _rules(schema):
        case = _case_for(path, message)
        assert case is not None
        _, mutate = case
        broken, field = mutate({})
        broken["metadata"]["name"] = broken["metadata"]["name"].replace("fraud-detector", "broken")
        status, body = await http.post(MDEPS, broken)
        assert status == 422, (path, message, body)
        assert body["reason"] == "Invalid"
        causes = [(c["field"], c["message"]) for c in body["details"]["causes"]]
        assert any(
            f == field and m.endswith(message) and m.startswith("Invalid value: ") for f, m in causes
        ), (
            path,
            causes,
        )


async def test_transition_rules_compare_with_the_stored_object(http: Http) -> None:
    crd = widget_crd()
    size = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"]
    size["x-kubernetes-validations"] = [
        {"rule": "self >= oldSelf", "message": "size may only grow", "reason": "FieldValueForbidden"}
    ]
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"
    ] = [{"rule": "self.size <= 8", "messageExpression": "'size ' + string(self.size) + ' is over 8'"}]
    await http.ok("POST", CRDS, crd)
    path = "/apis/example.com/v1/namespaces/default/widgets"
    await http.ok("POST", path, widget("w", size=5))  # no oldSelf on create: the rule does not run
    status, body = await http.patch(f"{path}/w", {"spec": {"size": 4}})
    assert status == 422
    assert body["details"]["causes"] == [
        {"reason": "FieldValueForbidden", "message": "Forbidden: size may only grow", "field": "spec.size"}
    ]
    status, body = await http.patch(f"{path}/w", {"spec": {"size": 9}})
    assert body["details"]["causes"][0]["message"] == 'Invalid value: "object": size 9 is over 8'
    assert (await http.patch(f"{path}/w", {"spec": {"size": 7}}))[0] == 200


async def test_a_crd_with_a_rule_that_does_not_compile_is_refused(http: Http) -> None:
    crd = widget_crd()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = [{"rule": "self.("}]
    status, body = await http.post(CRDS, crd)
    assert status == 422
    assert "CEL compilation failed" in body["message"]


def test_rules_are_compiled_once() -> None:
    compile_rule.cache_clear()
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    started = time.perf_counter()
    CelValidator(schema)
    first = time.perf_counter() - started
    misses = compile_rule.cache_info().misses
    CelValidator(schema)
    assert compile_rule.cache_info().misses == misses  # the second CRD version compiled nothing
    assert first > 0


@pytest.mark.skipif(not (UPSTREAM / "gateway-api-v1.6.1-httproutes.yaml").exists(), reason="../shared absent")
async def test_the_upstream_httproute_crd_rules_run(http: Http) -> None:
    docs = list(yaml.safe_load_all((UPSTREAM / "gateway-api-v1.6.1-httproutes.yaml").read_text()))
    crd = next(d for d in docs if d and d.get("kind") == "CustomResourceDefinition")
    await http.ok("POST", CRDS, crd)
    version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
    path = f"/apis/gateway.networking.k8s.io/{version}/namespaces/default/httproutes"

    def route(name: str, value: str) -> Obj:
        return {
            "apiVersion": f"gateway.networking.k8s.io/{version}",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": value}}],
                        "backendRefs": [{"name": "svc", "port": 80}],
                    }
                ],
            },
        }

    assert (await http.post(path, route("good", "/api")))[0] == 201
    status, body = await http.post(path, route("bad", "api"))  # upstream: the path must be absolute
    assert status == 422, body
    assert any("must be an absolute path" in c["message"] for c in body["details"]["causes"]), body
