"""A real MLflow tracking server (the `mlflow` package in its own venv, SQLite backend, artifacts
served over HTTP) started once per session on 127.0.0.1, and helpers that use its REST API.

Skipped with the reason only when the mlflow binary is absent: `make setup` installs it
(scripts/install-mlflow.sh -> .venv/tools/mlflow), so CI runs these tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlcanary_local.mlflow_proc import MlflowMissingError, MlflowProcess, find_mlflow
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.mlflow_registry import MlflowServer
from mlcanary_serving.testing import make_demo_bundle

REPO = Path(__file__).resolve().parents[2]


def _start(root: Path, app_name: str | None = None) -> MlflowProcess:
    try:
        find_mlflow()
    except MlflowMissingError as error:
        pytest.skip(str(error))
    server = MlflowProcess(root, app_name=app_name)
    server.start()
    return server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real MLflow tracking server with its Model Registry (no auth), started here, or
    the one at $MLCANARY_TEST_MLFLOW_URL (started with mlflow_proc; saves ~15-60 s per local run)."""
    running = os.environ.get("MLCANARY_TEST_MLFLOW_URL")
    if running:
        yield running.rstrip("/")
        return
    server = _start(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow(mlflow_server: str) -> MlflowServer:
    return MlflowServer(mlflow_server)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuildResult]:
    root = tmp_path_factory.mktemp("registry-bundles")
    return {
        "1.0.0": make_demo_bundle(root / "v1", version="1.0.0", onnx=False),
        "1.1.0": make_demo_bundle(root / "v2", version="1.1.0", onnx=False),
    }


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """A registered-model name unique to the test run (the server may outlive the session)."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


def alias_of(server: MlflowServer, model: str, alias: str) -> dict[str, Any]:
    version: dict[str, Any] = server.call(
        "GET", "registered-models/alias", params={"name": model, "alias": alias}
    )["model_version"]
    return version


def tags_of(server: MlflowServer, model: str, version: str) -> dict[str, str]:
    found = server.call("GET", "model-versions/get", params={"name": model, "version": version})
    return {t["key"]: t["value"] for t in found["model_version"].get("tags") or []}


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL, admin password) of a real MLflow server running its basic-auth app (--app-name basic-auth)."""
    server = _start(tmp_path_factory.mktemp("mlflow-auth"), app_name="basic-auth")
    try:
        yield server.url, server.admin_password
    finally:
        server.stop()
