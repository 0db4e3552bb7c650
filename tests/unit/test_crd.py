"""The CRD is generated from the models, is structural, and validates what the models validate."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from mlcanary import crd

EXAMPLE = """
apiVersion: mlcanary.io/v1alpha1
kind: ModelDeployment
metadata: {name: fraud-detector, namespace: ml}
spec:
  model: {name: fraud-detector, version: "2.1.0", uri: "s3://models/fraud/2.1.0/",
          sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
  serving: {image: "mlcanary/serving:0.1.0", replicas: 3, resources: {requests: {cpu: 500m}}}
  rollout: {steps: [5, 20, 50, 100], stepDuration: 5m, progressDeadline: 10m, scaleDownDelay: 30s, paused: false}
  analysis:
    interval: 1m
    failureLimit: 1
    onInconclusive: Hold
    metrics:
      - {name: error-rate, builtin: errorRate, max: 0.01}
      - {name: latency-p99, builtin: latencyP99, max: 0.25}
      - {name: input-drift, builtin: inputDrift, max: 0.2}
      - {name: prediction-drift, builtin: predictionDrift, max: 0.1}
      - {name: custom, query: 'sum(rate(x{model_version="{{version}}"}[{{interval}}]))', max: 5}
  traffic:
    replicas: {}
"""


def walk(node: Any, path: str = "$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def schema() -> dict[str, Any]:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_matches_models() -> None:
    assert crd.main(["--check"]) == 0


def test_check_fails_on_drift(tmp_path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd.render_crd().replace("shortNames:\n    - mdep", "shortNames:\n    - md"))
    assert crd.main(["--check", "--path", str(stale)]) == 1


def test_schema_is_structural() -> None:
    for path, node in walk(schema()):
        for banned in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "default", "title"):
            assert banned not in node, f"{banned} at {path}"
        if "properties" in node:
            assert "additionalProperties" not in node, f"additionalProperties beside properties at {path}"
            assert node.get("type") == "object", f"object without type at {path}"


def test_every_spec_and_status_field_has_a_description() -> None:
    root = schema()
    for part in ("spec", "status"):
        for path, node in walk(root["properties"][part], part):
            for name, prop in (node.get("properties") or {}).items():
                assert prop.get("description"), f"{path}.{name} has no description (kubectl explain)"


def test_names_printer_columns_and_status_subresource() -> None:
    spec = crd.build_crd()["spec"]
    assert spec["names"]["shortNames"] == ["mdep"]
    assert "mlcanary" in spec["names"]["categories"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Stable",
        "Canary",
        "Weight",
        "Age",
    ]


def to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema; unknown fields become errors."""
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    root = to_jsonschema(schema())
    root["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(root)


def test_example_manifest_is_accepted(validator) -> None:
    errors = list(validator.iter_errors(yaml.safe_load(EXAMPLE)))
    assert errors == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s["rollout"].update(steps=[5, 0]), "steps"),
        (lambda s: s["rollout"].update(steps=[5, 150]), "steps"),
        (lambda s: s["analysis"]["metrics"][0].update(builtin="accuracyy"), "builtin"),
        (lambda s: s["rollout"].update(stepDuration="5 minutes"), "stepDuration"),
        (lambda s: s["model"].update(sha256="xyz"), "sha256"),
        (lambda s: s["analysis"].update(onInconclusive="Panic"), "onInconclusive"),
        (lambda s: s["serving"].update(replicas=0), "replicas"),
        (lambda s: s["rollout"].update(unknownField=1), "unknownField"),
    ],
)
def test_schema_rejects_and_names_the_field(validator, mutate, field) -> None:
    manifest = yaml.safe_load(EXAMPLE)
    mutate(manifest["spec"])
    errors = list(validator.iter_errors(manifest))
    assert errors, "schema accepted an invalid spec"
    assert any(field in "/".join(map(str, e.absolute_path)) or field in e.message for e in errors)
