"""Rendered manifests against the Kubernetes OpenAPI schemas of the oldest and newest supported minors.

kubernetes-validate has two traps: it only warns (exit 0) on kinds it has no schema for, and exits 0
for a Kubernetes version it does not ship. Both are closed here: the versions must be shipped, every
built-in kind must have a schema, and only the prometheus-operator kinds may lack one (their upstream
CRDs are not available offline; their shape is checked in test_chart_monitoring.py).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from .helpers import CI_VALUES, needs_helm

pytestmark = needs_helm

VERSIONS = ["1.29.0", "1.37.0"]
NO_UPSTREAM_SCHEMA = {
    ("monitoring.coreos.com/v1", k) for k in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
}


@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_version_is_shipped(version: str) -> None:
    assert version in kv_utils.all_versions(), f"kubernetes-validate does not ship {version}"


def _validate(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kv_utils.SchemaNotFoundError:
        assert (obj["apiVersion"], obj["kind"]) in NO_UPSTREAM_SCHEMA, f"no schema for {obj['kind']}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("values_file", [pytest.param(p, id=p.stem) for p in CI_VALUES])
def test_rendered_chart_validates_strictly(
    values_file: Path, version: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for obj in rendered[values_file.stem]:
        _validate(obj, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_validation_catches_an_unknown_field(
    version: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The validator is really checking: a misspelt field in the Deployment fails."""
    deployment = copy.deepcopy(next(o for o in rendered["default-values"] if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kv_utils.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_command_line_validator_fails_on_the_chart_when_broken(
    version: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The CLI CI users would run exits non-zero on a broken built-in object and 0 on the real output."""
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all([o for o in rendered["default-values"]]))
    bad_objects = copy.deepcopy(rendered["default-values"])
    next(o for o in bad_objects if o["kind"] == "Deployment")["spec"]["replicas"] = "one"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(bad_objects))
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, "--quiet"]
    assert subprocess.run([*command, str(good)], capture_output=True, timeout=120).returncode == 0
    assert subprocess.run([*command, str(bad)], capture_output=True, timeout=120).returncode != 0
