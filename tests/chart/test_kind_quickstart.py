"""What can be checked of the kind quickstart without Docker or a cluster: the script parses, every
file it uses exists, the chart accepts its --set values, and every manifest it applies validates."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlcanary.models import API_VERSION, ModelDeploymentSpec

from .helpers import REPO, crd_schema, needs_helm, render

SCRIPT = REPO / "scripts" / "kind-quickstart.sh"
KIND_CONFIG = REPO / "kind-config.yaml"
UPSTREAM = REPO.parent / "shared" / "upstream-crds"
VERSIONS = ["1.29.0", "1.37.0"]


def _manifests_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kind_quickstart_manifests", REPO / "scripts" / "kind_quickstart_manifests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QS = _manifests_module()


def test_script_parses_and_uses_files_that_exist() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    for path in (
        "kind-config.yaml",
        "charts/mlcanary/crds/",
        "charts/mlcanary/Chart.yaml",
        "operator/Dockerfile",
        "serving-image/Dockerfile",
        "serving-image/requirements.txt",
        "serving-image/mlcanary_serving",
        "scripts/kind_quickstart_manifests.py",
        "examples/gateway-api.yaml",
    ):
        assert path in text, path
        assert (REPO / path).exists(), path


def test_kind_config_mounts_the_bundle_directory_the_server_reads() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert (config["apiVersion"], config["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1 and "worker" in roles
    for node in config["nodes"]:
        assert node["extraMounts"] == [
            {"hostPath": "./out/kind-bundles", "containerPath": QS.NODE_BUNDLE_DIR, "readOnly": True}
        ]
    assert "s#hostPath: ./out/kind-bundles#hostPath: $REPO/out/kind-bundles#" in SCRIPT.read_text()


@needs_helm
def test_chart_accepts_the_values_the_script_sets() -> None:
    text = SCRIPT.read_text()
    install = text[text.index("helm upgrade --install mlcanary") :]
    install = install[: install.index("--wait")]
    sets = tuple(re.findall(r"--set (\S+)", install))
    assert len(sets) >= 5
    kinds = {o["kind"] for o in render(sets=sets)}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "Deployment"} <= kinds


def test_demo_bundle_builder_takes_the_arguments_the_script_passes() -> None:
    testing = pytest.importorskip("mlcanary_serving.testing", reason="serving extra not installed")
    parameters = inspect.signature(testing.make_demo_bundle).parameters
    assert {"out_dir", "version", "name"} <= set(parameters)
    assert (
        "make_demo_bundle as m; m(sys.argv[1], version=sys.argv[2], name=sys.argv[3])" in SCRIPT.read_text()
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_bundle_server_validates(version: str) -> None:
    for obj in QS.bundle_server():
        kubernetes_validate.validate(obj, version, strict=True)
    deployment = next(o for o in QS.bundle_server() if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"] == QS.NODE_BUNDLE_DIR


def _upstream_schema(filename: str) -> dict[str, Any]:
    path = UPSTREAM / filename
    if not path.exists():
        pytest.skip("../shared/upstream-crds is not available")
    return crd_schema(yaml.safe_load(path.read_text()), "v1")


def test_gateway_validates_against_upstream_gateway_api() -> None:
    objects = QS.gateway()
    namespace, gateway_class, gateway = objects
    kubernetes_validate.validate(namespace, VERSIONS[-1], strict=True)
    assert gateway_class["spec"]["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
    assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]
    jsonschema.Draft4Validator(_upstream_schema("gateway-api-v1.6.1-gateways.yaml")).validate(gateway)


def test_adapted_example_validates_and_attaches_to_the_quickstart_gateway() -> None:
    from mlcanary import crd as crd_module

    schema = crd_schema(yaml.safe_load(crd_module.DEFAULT_PATH.read_text()), API_VERSION)
    objects = QS.example(REPO / "examples" / "gateway-api.yaml")
    mdeps = [o for o in objects if o["kind"] == "ModelDeployment"]
    assert mdeps
    gateway = QS.gateway()[2]
    listeners = {listener["name"] for listener in gateway["spec"]["listeners"]}
    for obj in mdeps:
        jsonschema.Draft4Validator(schema).validate(obj)
        spec = ModelDeploymentSpec.model_validate(obj["spec"])
        assert spec.model.uri.startswith(f"http://{QS.BUNDLE_HOST}:{QS.BUNDLE_PORT}/")
        assert spec.traffic.gateway_api is not None
        for ref in spec.traffic.gateway_api.parent_refs:
            assert (ref.name, ref.namespace) == (
                gateway["metadata"]["name"],
                gateway["metadata"]["namespace"],
            )
            assert ref.section_name in listeners


def test_manifests_command_line() -> None:
    for what in ("gateway", "bundles", "example"):
        out = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "kind_quickstart_manifests.py"), what],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert [d for d in yaml.safe_load_all(out) if d]
