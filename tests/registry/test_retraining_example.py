"""examples/retraining/train.py registering for real: the bundle it trains lands in a real MLflow
server as a new model version, tagged with its semantic version and why it was trained, and the alias
that spec.model.registry follows points at it — what the operator then canaries. The bundle is
fetched back the way a serving pod does (``models:/name@alias``) and verified."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from mlcanary.registry.client import MlflowClient
from mlcanary_local.loadgen import demo_dataset
from mlcanary_serving.fetch import fetch_bundle
from mlcanary_serving.mlflow_registry import MlflowServer

from .conftest import REPO, alias_of, tags_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("mlflow")]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retrain_example", REPO / "examples/retraining/train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_registers_the_retrained_bundle_and_moves_the_alias(
    mlflow: MlflowServer, model_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    rows, labels, names = demo_dataset()
    data = tmp_path / "rows.csv"  # what the load generator's --log-rows writes: features + label
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "label"])
        for row, label in zip(rows, labels, strict=True):
            writer.writerow([*(v * 1.3 for v in row), label])  # drifted inputs, true labels
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.tracking_uri)
    train = load_example()
    argv = ["--data", str(data), "--model", model_name, "--stable-version", "2.0.0", "--reason",
            "inputDrift 0.41 >= 0.25 for 10s", "--alias", "champion", "--work-dir", str(tmp_path / "w")]  # fmt: skip
    assert train.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == "2.1.0" and summary["rows"] == len(rows)

    number = summary["model_version"]
    assert alias_of(mlflow, model_name, "champion")["version"] == number
    tags = tags_of(mlflow, model_name, number)
    assert tags["mlcanary.io/version"] == "2.1.0" and tags["mlcanary.io/trained-from"] == "2.0.0"
    assert tags["mlcanary.io/reason"].startswith("inputDrift 0.41")

    client = MlflowClient(mlflow.tracking_uri)  # what the operator's registry poller resolves
    try:
        resolved = await client.resolve(model_name, "champion")
    finally:
        await client.close()
    assert resolved.model_version == "2.1.0"
    bundle = fetch_bundle(f"models:/{model_name}@champion", tmp_path / "pod-cache")
    assert bundle.manifest.name == model_name and bundle.manifest.version == "2.1.0"
    assert bundle.manifest_sha256 == tags["mlcanary.io/sha256"] == resolved.sha256
