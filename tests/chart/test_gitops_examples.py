"""GitOps examples: the Argo CD Application, the Flux Kustomization and its health expressions, and the
ModelDeployment examples checked against the generated CRD schema and the models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlcanary import crd as crd_module
from mlcanary.models import API_GROUP, API_VERSION, KIND, ModelDeploymentSpec, Phase

from .helpers import REPO, crd_schema

EXAMPLES = REPO / "examples"
ROUTER_EXAMPLES = {"gateway-api.yaml": "gatewayAPI", "istio.yaml": "istio", "replicas.yaml": "replicas"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _model_deployments() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for i, doc in enumerate(_docs(path)):
            if doc.get("kind") == KIND:
                found.append((f"{path.name}#{i}", doc))
    return found


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return crd_schema(yaml.safe_load(crd_module.DEFAULT_PATH.read_text()), API_VERSION)


@pytest.mark.parametrize(
    ("where", "manifest"), _model_deployments() or [pytest.param("none", {}, marks=pytest.mark.skip)]
)
def test_model_deployment_examples_validate(
    where: str, manifest: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert manifest["apiVersion"] == f"{API_GROUP}/{API_VERSION}", where
    jsonschema.Draft4Validator(schema).validate(manifest)  # OpenAPI 3.0: boolean exclusiveMinimum
    ModelDeploymentSpec.model_validate(manifest["spec"])  # the rules the schema cannot express


@pytest.mark.parametrize(("filename", "router"), sorted(ROUTER_EXAMPLES.items()))
def test_router_examples_use_their_router(filename: str, router: str) -> None:
    path = EXAMPLES / filename
    if not path.exists():
        pytest.skip(f"examples/{filename} not written yet")
    manifests = [d for d in _docs(path) if d.get("kind") == KIND]
    assert manifests, f"examples/{filename} has no ModelDeployment"
    for manifest in manifests:
        assert ModelDeploymentSpec.model_validate(manifest["spec"]).traffic.router_kind == router


def test_schema_translation_rejects_what_the_api_server_would(schema: dict[str, Any]) -> None:
    manifest = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": "x"},
        "spec": {"model": {"name": "x", "version": "1.0.0", "uri": "s3://b/x/1/"}, "serving": {"replica": 2}},
    }
    validator = jsonschema.Draft4Validator(schema)
    validator.validate({**manifest, "spec": {**manifest["spec"], "serving": {"replicas": 2}}})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(manifest)


# -------------------------------------------------------------------------------------------- Argo CD


def test_argocd_application() -> None:
    (app,) = _docs(EXAMPLES / "argocd-application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    spec = app["spec"]
    assert spec["source"]["repoURL"] and spec["source"]["path"]
    assert spec["destination"]["namespace"]
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def _quoted_phases(text: str) -> set[str]:
    candidates = set(re.findall(r"""["']([A-Z][A-Za-z]+)["']""", text))
    return {
        c
        for c in candidates
        if c in {"Healthy", "Progressing", "Suspended", "Degraded"} | {p.value for p in Phase}
    }


def test_argocd_health_check_names_only_real_phases_and_conditions() -> None:
    lua = (EXAMPLES / "argocd-health.lua").read_text()
    phases = {p.value for p in Phase}
    compared = set(re.findall(r'phase == "([A-Za-z]+)"', lua))
    assert compared and compared <= phases, compared - phases
    assert set(re.findall(r'condition\("([A-Za-z]+)"\)', lua)) <= {"Ready", "Progressing", "SpecValid"}


# ----------------------------------------------------------------------------------------------- Flux


def test_flux_kustomization_health() -> None:
    source, kustomization = _docs(EXAMPLES / "flux-kustomization.yaml")
    assert (source["apiVersion"], source["kind"]) == ("source.toolkit.fluxcd.io/v1", "GitRepository")
    assert (kustomization["apiVersion"], kustomization["kind"]) == (
        "kustomize.toolkit.fluxcd.io/v1",
        "Kustomization",
    )
    spec = kustomization["spec"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert spec["wait"] is True and spec["prune"] is True
    (check,) = spec["healthCheckExprs"]
    assert (check["apiVersion"], check["kind"]) == (f"{API_GROUP}/{API_VERSION}", KIND)
    phases = {p.value for p in Phase}
    for key in ("inProgress", "failed", "current"):
        expression = check[key]
        assert expression.count("(") == expression.count(")"), key
        named = set(re.findall(r"'([A-Z][A-Za-z]+)'", expression)) - {"Ready", "SpecValid", "False", "True"}
        assert named <= phases, (key, named - phases)
    assert "observedGeneration" in check["current"] and "'Ready'" in check["current"]
    assert "'RolledBack'" in check["failed"] and "'SpecValid'" in check["failed"]
    in_flight = {
        "Initializing",
        "Preparing",
        "LoadTesting",
        "Shadowing",
        "Progressing",
        "Paused",
        "Promoting",
        "RollingBack",
    }
    assert set(re.findall(r"'([A-Z][A-Za-z]+)'", check["inProgress"])) >= in_flight
    assert in_flight | {"Healthy", "RolledBack"} == phases, "a new phase needs a Flux (and Argo CD) decision"
