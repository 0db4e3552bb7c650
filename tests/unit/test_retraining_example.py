"""examples/retraining/train.py up to the bundle (``--dry-run``): it keeps the rows of the last WINDOW,
retrains, and builds a bundle the serving image verifies, with the next minor version. Registering
in MLflow is tested against a real MLflow server in tests/registry/test_retraining_example.py."""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("sklearn", reason="the example trains with scikit-learn (the bundle extra)")

REPO = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retrain_example", REPO / "examples/retraining/train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_durations_and_versions() -> None:
    train = load_example()
    assert train.parse_window("24h") == 86400 and train.parse_window("1h30m") == 5400
    assert train.parse_window("500ms") == 0.5
    with pytest.raises(ValueError):
        train.parse_window("5")
    assert train.next_version("2.0.0") == "2.1.0" and train.next_version("1.4.2-rc.1") == "1.5.0"


def test_a_dry_run_retrains_on_the_window_and_builds_a_verified_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.datasets import load_breast_cancer

    from mlcanary_serving.bundle.read import verify_bundle

    data = load_breast_cancer()
    now = time.time()
    path = tmp_path / "recent.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "f0", "f1", "f2", "label"])
        for index, (row, label) in enumerate(zip(data.data, data.target, strict=True)):
            writer.writerow([now - index * 60, *row[:3], int(label)])  # one row a minute, newest first
    monkeypatch.setenv("MODEL", "fraud")
    monkeypatch.setenv("STABLE_VERSION", "2.0.0")
    monkeypatch.setenv("WINDOW", "2h")
    train = load_example()
    assert train.main(["--data", str(path), "--dry-run", "--work-dir", str(tmp_path / "work")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == "2.1.0" and 115 <= summary["rows"] <= 121  # the last two hours only
    bundle = verify_bundle(Path(summary["bundle"]))
    assert bundle.manifest.name == "fraud" and bundle.manifest.version == "2.1.0"
