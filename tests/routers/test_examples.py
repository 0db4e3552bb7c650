"""examples/*.yaml are valid ModelDeployments: for the models, for the generated CRD's schema (strict),
and for the operator's renderer, which produces the router's objects from them."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from mlcanary.models import ModelDeployment
from mlcanary.render import render_objects

from .kit import REPO, crd_version_schema, needs_upstream, schema_errors

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
ROUTER_EXAMPLES = {"gateway-api.yaml": "gatewayAPI", "istio.yaml": "istio", "replicas.yaml": "replicas"}
CRD = yaml.safe_load((REPO / "crds" / "modeldeployments.mlcanary.io.yaml").read_text())


def model_deployments(path: Path) -> list[dict]:
    return [
        d
        for d in yaml.safe_load_all(path.read_text())
        if isinstance(d, dict) and d.get("kind") == "ModelDeployment"
    ]


def test_there_is_an_example_per_router() -> None:
    names = {p.name for p in EXAMPLES}
    assert set(ROUTER_EXAMPLES) <= names


@pytest.mark.parametrize("name", sorted(ROUTER_EXAMPLES))
def test_example_is_a_valid_model_deployment_for_its_router(name: str) -> None:
    (doc,) = model_deployments(REPO / "examples" / name)
    parsed = ModelDeployment.model_validate(doc)
    assert parsed.spec.traffic.router_kind == ROUTER_EXAMPLES[name]
    validator = jsonschema.Draft7Validator(crd_version_schema(CRD, "v1alpha1"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors


@needs_upstream
@pytest.mark.parametrize("name", sorted(ROUTER_EXAMPLES))
def test_example_renders_objects_the_upstream_schemas_accept(name: str) -> None:
    (doc,) = model_deployments(REPO / "examples" / name)
    for step in (None, 1, 2, 3):
        objects = render_objects(doc, stable_version=None if step is None else "1.0.0", step=step)
        for obj in objects:
            if obj["kind"] in ("HTTPRoute", "VirtualService"):
                assert schema_errors(obj) == [], obj


DOCS = {
    "gateway-api.yaml": "routing-gateway-api.md",
    "istio.yaml": "routing-istio.md",
    "replicas.yaml": "routing-replicas.md",
}


def yaml_blocks(markdown: str) -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", markdown, re.S)
    return [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict)]


@pytest.mark.parametrize("name", sorted(DOCS))
def test_each_routing_page_shows_its_example_verbatim(name: str) -> None:
    docs = yaml_blocks((REPO / "docs" / DOCS[name]).read_text())
    shown = [d for d in docs if d.get("kind") == "ModelDeployment"]
    assert shown == model_deployments(REPO / "examples" / name)


@needs_upstream
def test_other_manifests_in_the_routing_pages_are_valid() -> None:
    for page in DOCS.values():
        for doc in yaml_blocks((REPO / "docs" / page).read_text()):
            if doc.get("kind") not in (None, "ModelDeployment"):
                assert schema_errors(doc) == [], (page, doc)
