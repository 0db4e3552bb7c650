"""Credentials against MLflow's own basic-auth app (a real server started with --app-name
basic-auth): the right ones resolve and download, wrong or missing ones are named as such, and no
credential appears in what is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcanary.registry.client import Credentials, MlflowClient, RegistryError
from mlcanary.registry.core import ProblemKind
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.fetch import FetchError, fetch_bundle
from mlcanary_serving.mlflow_registry import MlflowServer, register_bundle

# One worker runs them all (make test uses xdist --dist loadgroup): the session's MLflow servers start once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("mlflow")]


async def test_basic_auth_right_wrong_and_missing_credentials(
    mlflow_auth_server: tuple[str, str],
    bundles: dict[str, BuildResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, password = mlflow_auth_server
    admin = MlflowServer(url, username="admin", password=password)
    register_bundle(admin, bundles["1.0.0"].path, "guarded", alias="champion")

    good = MlflowClient(url, Credentials(username="admin", password=password))
    wrong = MlflowClient(url, Credentials(username="admin", password="not-the-password"))
    anonymous = MlflowClient(url)
    try:
        resolved = await good.resolve("guarded", "champion")
        assert resolved.model_version == "1.0.0"
        for client in (wrong, anonymous):
            with pytest.raises(RegistryError) as refused:
                await client.resolve("guarded", "champion")
            assert refused.value.problem.kind == ProblemKind.UNAUTHORIZED
            assert "refused the credentials (HTTP 401)" in refused.value.problem.message
            assert password not in str(refused.value) and "not-the-password" not in str(refused.value)
    finally:
        for client in (good, wrong, anonymous):
            await client.close()

    # A serving pod: the artifact download needs the credentials too; they come from MLflow's env vars.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    with pytest.raises(FetchError, match="HTTP 401"):
        fetch_bundle(resolved.uri, tmp_path / "anonymous")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    assert fetch_bundle(resolved.uri, tmp_path / "admin").manifest.version == "1.0.0"
    assert fetch_bundle("models:/guarded@champion", tmp_path / "alias").manifest.version == "1.0.0"
