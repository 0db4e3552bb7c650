"""spec.retraining on the local stack: real serving pods see shifted inputs, their input PSI reaches the
real Prometheus, the operator's shared loop finds the stable version drifting, requests one training
Job, and the local kubelet runs it as a process — the example training run (examples/retraining,
``--dry-run``: it retrains and builds a bundle; registering needs MLflow) — which completes."""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from pathlib import Path
from typing import Any

from mlcanary.kubeapi import EVENTS, JOBS
from mlcanary_local.process import spawn

from .conftest import Rollout

REPO_ROOT = Path(__file__).resolve().parents[2]

SHIFT = "1.6"  # every feature times 1.6: the input PSI of most features far above 0.25


def training_rows(path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*data.feature_names, "label"])
        for row, label in zip(data.data, data.target, strict=True):
            writer.writerow([*row, int(label)])


async def test_drift_on_the_stable_version_runs_one_training_job(
    rollout_factory: Any, tmp_path: Path
) -> None:
    rollout: Rollout = await rollout_factory([])
    await rollout.apply("1.0.0")
    await rollout.wait_healthy("1.0.0")
    rows = tmp_path / "recent.csv"
    training_rows(rows)
    train = REPO_ROOT / "examples" / "retraining" / "train.py"
    await rollout.api.create_or_merge(
        {
            "apiVersion": "mlcanary.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": rollout.name, "namespace": rollout.namespace},
            "spec": {
                "retraining": {
                    "jobTemplate": {
                        "image": "local",
                        "command": ["python", str(train)],
                        "args": ["--data", str(rows), "--dry-run", "--work-dir", str(tmp_path / "train")],
                    },
                    "triggers": {"inputDrift": {"threshold": 0.25, "for": "3s"}},
                    "cooldown": "1h",
                }
            },
        }
    )
    url = rollout.stack.model_url(rollout.namespace, rollout.name)
    argv = [sys.executable, "-m", "mlcanary_local.loadgen", "--url", url, "--rate", "80"]
    argv += ["--out", str(rollout.requests_csv), "--shift", SHIFT]
    started = time.monotonic()
    rollout.loadgen = spawn(argv, rollout.work / "loadgen.log")  # stopped by the fixture
    requested = await rollout.wait(lambda s: (s.get("retraining") or {}).get("lastRun"), 120, "requested")
    to_request = time.monotonic() - started
    retraining = await rollout.wait(
        lambda s: (s.get("retraining") or {}).get("lastResult") == "Succeeded", 120, "retrained"
    )
    print(  # a figure, not a bound: drift reaching the serving pods -> the request -> a finished run
        f"\nretraining e2e: shifted load -> RetrainRequested {to_request:.1f}s (for=3s, evaluated every 1s, "
        f"values {requested['retraining']['lastValues']}); -> Job Succeeded {time.monotonic() - started:.1f}s"
    )
    retraining = retraining["retraining"]
    assert retraining["version"] == "1.0.0" and "inputDrift" in retraining["lastReason"]
    assert retraining["lastValues"]["inputDrift"] > 0.25
    jobs, _ = await rollout.api.list(JOBS, rollout.namespace)
    assert [j["metadata"]["name"] for j in jobs] == [retraining["lastRun"]]
    await asyncio.sleep(3)  # the drift goes on: the cooldown holds every further request
    jobs, _ = await rollout.api.list(JOBS, rollout.namespace)
    assert len(jobs) == 1
    events, _ = await rollout.api.list(EVENTS, rollout.namespace)
    reasons = [e["reason"] for e in events if e["reason"].startswith("Retrain")]
    assert reasons.count("RetrainRequested") == 1 and "RetrainSucceeded" in reasons
    assert (tmp_path / "train" / "bundle" / "manifest.json").exists(), "the training run built its bundle"
