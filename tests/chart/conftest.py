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


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every CI values file rendered once (CRDs included), by file stem."""
    if HELM is None:
        pytest.skip("helm binary not installed (make setup installs it)")
    return {path.stem: render(path, include_crds=True) for path in CI_VALUES}
