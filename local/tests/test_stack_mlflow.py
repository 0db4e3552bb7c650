"""`mlcanary local up --mlflow`: the stack starts a real MLflow tracking server beside Prometheus, a
bundle registered there is served by the artifact HTTP API, and stopping the stack stops MLflow
(its whole process group: MLflow runs uvicorn workers under it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcanary_local.mlflow_proc import MlflowMissingError, find_mlflow
from mlcanary_local.process import alive
from mlcanary_local.stack import LocalStack, StackConfig
from mlcanary_serving.fetch import fetch_bundle
from mlcanary_serving.mlflow_registry import MlflowServer, register_bundle
from mlcanary_serving.testing import make_demo_bundle


def _mlflow_available() -> bool:
    try:
        find_mlflow()
    except MlflowMissingError:
        return False
    return True


@pytest.mark.integration
@pytest.mark.skipif(
    not _mlflow_available(), reason="needs mlflow in .venv/tools/mlflow (make setup installs it)"
)
def test_the_stack_runs_mlflow_and_stops_it(tmp_path: Path) -> None:
    bundle = make_demo_bundle(tmp_path / "bundle", version="1.0.0", onnx=False)
    stack = LocalStack(tmp_path / "stack", StackConfig(operator=False, mlflow=True))
    with stack:
        assert stack.mlflow_url is not None and stack.info()["mlflow"] == stack.mlflow_url
        mlflow_pid = stack.info()["components"]["mlflow"]
        assert mlflow_pid in set(stack.component_pids())
        registered = register_bundle(
            MlflowServer(stack.mlflow_url), bundle.path, "stack-model", alias="champion"
        )
        url = MlflowServer(stack.mlflow_url).download_url(registered.source)
        assert fetch_bundle(url, tmp_path / "cache").manifest_sha256 == bundle.manifest_sha256
    assert not alive(mlflow_pid)
