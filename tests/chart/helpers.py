"""Shared helpers for the Helm chart, monitoring and GitOps tests.

helm comes from PATH or .venv/bin (``make setup`` installs it there); tests that need it skip only
when it is absent. Everything else they use (promtool, lupa, kubernetes-validate) is a dependency of
``make test`` and is not skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlcanary"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "mlc"
NAMESPACE = "mlcanary-system"


def find_tool(name: str) -> str | None:
    local = REPO / ".venv" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


HELM = find_tool("helm")
needs_helm = pytest.mark.skipif(HELM is None, reason="helm binary not installed (make setup installs it)")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(
    values_file: Path | None = None,
    sets: tuple[str, ...] = (),
    include_crds: bool = False,
    kube_version: str | None = None,
) -> list[dict[str, Any]]:
    """``helm template`` of the chart, parsed into objects (empty documents dropped)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["--values", str(values_file)]
    for item in sets:
        args += ["--set", item]
    if include_crds:
        args.append("--include-crds")
    if kube_version:
        args += ["--kube-version", kube_version]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def structural_to_jsonschema(node: Any) -> Any:
    """A CRD's openAPIV3Schema as plain JSON Schema, strict like the API server's pruning is.

    ``nullable`` admits null, ``x-kubernetes-int-or-string`` admits both, objects with ``properties``
    refuse unknown fields unless ``x-kubernetes-preserve-unknown-fields``. CEL rules
    (``x-kubernetes-validations``) are not evaluated here.
    """
    if isinstance(node, list):
        return [structural_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out:
        out["properties"] = {k: structural_to_jsonschema(v) for k, v in node["properties"].items()}
    return out


def crd_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema: dict[str, Any] = structural_to_jsonschema(served["schema"]["openAPIV3Schema"])
    return schema
