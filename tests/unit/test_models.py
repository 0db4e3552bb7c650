"""Spec validation: every class of invalid spec is refused with an error that names the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from conftest import spec_wire
from pydantic import ValidationError

from mlcanary.models import (
    BuiltinMetric,
    InconclusivePolicy,
    ModelDeployment,
    ModelDeploymentSpec,
    Rollout,
    object_name_problem,
)

# The example manifest of the operator-core issue (sha256 and resources filled in: the issue elides them).
ISSUE_MANIFEST = """
apiVersion: mlcanary.io/v1alpha1
kind: ModelDeployment
metadata: {name: fraud-detector, namespace: ml}
spec:
  model:
    name: fraud-detector
    version: "2.1.0"
    uri: "s3://models/fraud/2.1.0/"
    sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
  serving:
    image: "mlcanary/serving:0.1.0"
    replicas: 3
    resources: {requests: {cpu: 500m, memory: 512Mi}, limits: {memory: 1Gi}}
  rollout: {steps: [5, 20, 50, 100], stepDuration: 5m, progressDeadline: 10m, scaleDownDelay: 30s, paused: false}
  analysis:
    interval: 1m
    failureLimit: 1
    onInconclusive: Hold          # Hold | Rollback (after inconclusiveLimit)
    metrics:
      - {name: error-rate, builtin: errorRate, max: 0.01}
      - {name: latency-p99, builtin: latencyP99, max: 0.25}
      - {name: input-drift, builtin: inputDrift, max: 0.2}
      - {name: prediction-drift, builtin: predictionDrift, max: 0.1}
      - {name: custom, query: 'sum(rate(x{model_version="{{version}}"}[{{interval}}]))', max: 5}
  traffic:
    gatewayAPI:
      parentRefs: [{name: public-gateway, namespace: infra}]
"""


def test_the_issue_example_manifest_is_accepted() -> None:
    document = yaml.safe_load(ISSUE_MANIFEST)
    obj = ModelDeployment.model_validate(document)
    spec = obj.spec
    assert spec.model.version == "2.1.0" and spec.serving.replicas == 3
    assert spec.rollout.steps == [5, 20, 50, 100] and spec.rollout.effective_steps() == [5, 20, 50, 100]
    assert spec.rollout.step_duration == "5m" and spec.rollout.scale_down_delay == "30s"
    assert spec.analysis.on_inconclusive == InconclusivePolicy.HOLD
    assert [m.builtin for m in spec.analysis.metrics[:4]] == [
        BuiltinMetric.ERROR_RATE,
        BuiltinMetric.LATENCY_P99,
        BuiltinMetric.INPUT_DRIFT,
        BuiltinMetric.PREDICTION_DRIFT,
    ]
    assert spec.analysis.metrics[4].query is not None and spec.analysis.metrics[4].builtin is None
    assert spec.traffic.router_kind == "gatewayAPI"
    # What the operator writes back is what it reads.
    assert ModelDeploymentSpec.model_validate(spec.to_wire()) == spec
    assert spec.to_wire()["rollout"]["stepDuration"] == "5m"


def test_a_minimal_spec_gets_the_documented_defaults() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "m", "version": "1.0.0", "uri": "file:///models/m"}}
    )
    # One replica behind the replicas router: of 5, 20, 50 only 50% can be served with whole pods.
    assert spec.rollout.steps == [50] and spec.rollout.effective_steps() == [50, 100]
    assert spec.traffic.router_kind == "replicas"
    assert spec.serving.replicas == 1
    meshed = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "version": "1.0.0", "uri": "file:///models/m"},
            "traffic": {"istio": {"hosts": ["m"]}},
        }
    )
    assert meshed.rollout.effective_steps() == [5, 20, 50, 100]


@pytest.mark.parametrize(("replicas", "steps"), [(1, [50]), (4, [20, 50]), (10, [20, 50]), (19, [5, 20, 50])])
def test_default_steps_follow_what_the_replicas_router_can_serve(replicas: int, steps: list[int]) -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "m", "version": "1.0.0", "uri": "file:///m"}, "serving": {"replicas": replicas}}
    )
    assert spec.rollout.steps == steps
    assert spec.analysis.metrics == [] and spec.analysis.on_inconclusive == InconclusivePolicy.HOLD


@pytest.mark.parametrize(
    ("steps", "effective"),
    [([5, 20, 50], [5, 20, 50, 100]), ([100], [100]), ([1, 99], [1, 99, 100]), ([10, 100], [10, 100])],
)
def test_a_final_100_is_implied(steps: list[int], effective: list[int]) -> None:
    assert Rollout(steps=steps).effective_steps() == effective


def invalid(change: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Apply ``change`` to a valid spec and return the validation errors it causes."""
    wire = spec_wire("2.1.0", metrics=[{"name": "error-rate", "builtin": "errorRate", "max": 0.01}])
    wire = copy.deepcopy(wire)
    ModelDeploymentSpec.model_validate(wire)  # valid before the change
    change(wire)
    with pytest.raises(ValidationError) as raised:
        ModelDeploymentSpec.model_validate(wire)
    return [dict(e) for e in raised.value.errors()]


def set_in(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(wire: dict[str, Any]) -> None:
        node: Any = wire
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def drop(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def change(wire: dict[str, Any]) -> None:
        node: Any = wire
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def add_metric(metric: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(wire: dict[str, Any]) -> None:
        wire["analysis"]["metrics"].append(metric)

    return change


M0 = ("analysis", "metrics", 0)
M1 = ("analysis", "metrics", 1)


@pytest.mark.parametrize(
    ("change", "loc", "words"),
    [
        # steps
        (set_in(("rollout", "steps"), [5, 5, 50]), ("rollout", "steps"), "strictly increasing"),
        (set_in(("rollout", "steps"), [50, 20]), ("rollout", "steps"), "strictly increasing"),
        (set_in(("rollout", "steps"), [0, 50]), ("rollout", "steps"), ""),
        (set_in(("rollout", "steps"), [-5, 50]), ("rollout", "steps"), ""),
        (set_in(("rollout", "steps"), [5, 101]), ("rollout", "steps"), ""),
        (set_in(("rollout", "steps"), []), ("rollout", "steps"), ""),
        # routers: two at once, or none
        (set_in(("traffic", "istio"), {"hosts": ["fraud.example.com"]}), ("traffic",), "exactly one router"),
        (set_in(("traffic",), {}), ("traffic",), "exactly one router"),
        (set_in(("traffic", "gatewayAPI"), {"parentRefs": [{"name": "gw"}]}), ("traffic",), "gatewayAPI"),
        # metrics
        (set_in((*M0, "builtin"), "errorRatio"), (*M0, "builtin"), ""),
        (drop((*M0, "max")), M0, "min, max or compareTo"),
        (set_in((*M0, "query"), "sum(x)"), M0, "builtin and query"),
        (add_metric({"name": "q", "max": 1}), M1, "builtin and query"),
        (add_metric({"name": "q", "query": 'x{v="{{model}}"}', "max": 1}), M1, "{{model}}"),
        (add_metric({"name": "q", "query": "x[{{ window }}]", "max": 1}), M1, "{{window}}"),
        (
            add_metric({"name": "error-rate", "builtin": "latencyP99", "max": 1}),
            ("analysis", "metrics"),
            "twice",
        ),
        (add_metric({"name": "acc", "builtin": "accuracy", "min": 0.9, "max": 0.8}), M1, "min 0.9"),
        (set_in((*M0, "tolerance"), -1), (*M0, "tolerance"), ""),
        (set_in((*M0, "quantile"), 1.5), (*M0, "quantile"), ""),
        # durations
        (set_in(("rollout", "stepDuration"), "5 minutes"), ("rollout", "stepDuration"), ""),
        (set_in(("rollout", "stepDuration"), "1d"), ("rollout", "stepDuration"), ""),
        (set_in(("rollout", "progressDeadline"), "10"), ("rollout", "progressDeadline"), ""),
        (set_in(("rollout", "scaleDownDelay"), "-30s"), ("rollout", "scaleDownDelay"), ""),
        (set_in(("analysis", "interval"), ""), ("analysis", "interval"), ""),
        # limits and typos
        (set_in(("analysis", "failureLimit"), 0), ("analysis", "failureLimit"), ""),
        (set_in(("analysis", "onInconclusive"), "Ignore"), ("analysis", "onInconclusive"), ""),
        (set_in(("rollout", "stepDurations"), "5m"), ("rollout", "stepDurations"), ""),
        (set_in(("serving", "replicas"), 0), ("serving", "replicas"), ""),
        (set_in(("model", "uri"), "ftp://x"), ("model", "uri"), ""),
        # bounds: nothing a user writes may overflow or stay uncontrollable
        (set_in(("rollout", "stepDuration"), "99999999999h"), ("rollout", "stepDuration"), ""),
        (set_in(("rollout", "stepDuration"), "169h"), ("rollout", "stepDuration"), "0s-168h"),
        (set_in(("rollout", "progressDeadline"), "0s"), ("rollout", "progressDeadline"), "1s-24h"),
        (set_in(("rollout", "scaleDownDelay"), "25h"), ("rollout", "scaleDownDelay"), "0s-24h"),
        (set_in(("analysis", "interval"), "500ms"), ("analysis", "interval"), "1s-24h"),
        (set_in(("analysis", "failureLimit"), 101), ("analysis", "failureLimit"), ""),
        (set_in(("analysis", "consecutiveErrorLimit"), 10**9), ("analysis", "consecutiveErrorLimit"), ""),
        (set_in((*M0, "max"), float("inf")), (*M0, "max"), ""),
        (set_in((*M0, "max"), float("nan")), (*M0, "max"), ""),
        (set_in((*M0, "max"), 1e300), (*M0, "max"), ""),
        (set_in((*M0, "minRequests"), 10**12), (*M0, "minRequests"), ""),
        (set_in(("model", "uri"), "s3://" + "x" * 3000), ("model", "uri"), ""),
        (
            set_in(("serving", "env"), [{"name": f"V{i}", "value": ""} for i in range(65)]),
            ("serving", "env"),
            "",
        ),
        (set_in(("serving", "resources"), {"limits": {"memory": "lots"}}), ("serving", "resources"), ""),
        (set_in(("serving", "resources"), {"limits": {"memory!": "1Gi"}}), ("serving", "resources"), ""),
        # versions a model bundle can carry: semantic versions only
        (set_in(("model", "version"), "V2"), ("model", "version"), ""),
        (set_in(("model", "version"), "2"), ("model", "version"), ""),
        (set_in(("model", "version"), "2.0.0.1"), ("model", "version"), ""),
        # steps the replicas router cannot serve with whole pods
        (
            set_in(("serving", "replicas"), 3),
            (),
            "rollout.steps[0]: 5% cannot be served by the replicas router",
        ),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(
    change: Callable[[dict[str, Any]], None], loc: tuple[str | int, ...], words: str
) -> None:
    errors = invalid(change)
    assert len(errors) == 1, errors
    error = errors[0]
    assert tuple(error["loc"])[: len(loc)] == loc
    assert words in error["msg"]


@pytest.mark.parametrize(
    "version", ["1.0.0", "2.1.0-rc.1", "10.20.30+build.5", "1.0.0-alpha.beta+exp.sha.5114f85"]
)
def test_semantic_versions_are_accepted(version: str) -> None:
    ModelDeploymentSpec.model_validate(spec_wire(version))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("fraud", True),
        ("fraud-v2", True),
        ("f" * 63, True),
        ("fraud.v2", False),  # a dotted name makes an invalid Service name
        ("f" * 64, False),  # over 63: an invalid label value
        ("1fraud", False),  # starts with a digit: not a DNS-1035 label (Service names)
        ("Fraud", False),
        ("fraud-", False),
    ],
)
def test_object_names_that_make_invalid_children_are_refused(name: str, ok: bool) -> None:
    problem = object_name_problem(name)
    assert (problem is None) == ok
    if not ok:
        assert problem is not None and problem.startswith("metadata.name:") and repr(name) in problem


def test_valid_queries_and_durations_pass() -> None:
    wire = spec_wire(
        "2.1.0",
        step_duration="1m30s",
        scale_down_delay="500ms",
        progress_deadline="1.5h",
        metrics=[
            {
                "name": "p",
                "query": "x{a={{name}},b={{ namespace }},c={{version}},d={{stableVersion}}}[{{interval}}]",
                "compareTo": "stable",
            }
        ],
    )
    spec = ModelDeploymentSpec.model_validate(wire)
    assert spec.rollout.step_duration == "1m30s"
    assert spec.analysis.metrics[0].compare_to == "stable"
