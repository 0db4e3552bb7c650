"""examples/registry.yaml is a valid ModelDeployment for the models and, strictly, for the CRD schema."""

from __future__ import annotations

import jsonschema
import yaml

from mlcanary.models import ModelDeployment, RegistryUpdatePolicy
from routers.kit import REPO, crd_version_schema


def test_the_registry_example_is_valid() -> None:
    doc = yaml.safe_load((REPO / "examples" / "registry.yaml").read_text())
    parsed = ModelDeployment.model_validate(doc)
    registry = parsed.spec.model.registry
    assert registry is not None and registry.update_policy == RegistryUpdatePolicy.PROPOSE
    crd = yaml.safe_load((REPO / "crds" / "modeldeployments.mlcanary.io.yaml").read_text())
    validator = jsonschema.Draft7Validator(crd_version_schema(crd, "v1alpha1"))
    assert [e.message for e in validator.iter_errors(doc)] == []
