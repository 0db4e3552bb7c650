"""Example training run for spec.retraining: retrain on recent data, build a bundle, register it in
MLflow and move the alias.

The operator starts this as the Job of ``spec.retraining.jobTemplate`` and tells it, in the
environment, ``MODEL``, ``STABLE_VERSION``, ``REASON`` and ``WINDOW`` (docs/retraining.md). It

1. reads labelled rows from ``--data`` (a CSV with a header: the features, the label column
   ``--target`` — default the last — and optionally ``timestamp`` in epoch seconds, in which case only
   the rows of the last ``WINDOW`` are kept);
2. fits a scikit-learn pipeline (standardise, logistic regression) on them;
3. builds a bundle with the serving image's own builder (``mlcanary_serving.bundle.build``, what
   ``mlcanary bundle build`` runs), as a ``.tar.gz``;
4. talks to MLflow by its REST API only (no mlflow package): uploads the archive through the
   artifact proxy (``PUT /api/2.0/mlflow-artifacts/artifacts/<path>``), creates the registered model
   if missing (``registered-models/create``), a model version whose ``source`` is that
   ``mlflow-artifacts:/`` path (``model-versions/create``, tagged ``mlcanary.io/version`` with the
   bundle's semantic version, ``mlcanary.io/reason`` and ``mlcanary.io/trained-from``), waits for it
   to be ``READY`` (``model-versions/get``) and points ``--alias`` at it (``registered-models/alias``).

The operator watching that alias (``spec.model.registry``) then proposes or starts the canary, which
judges the new version like any other. ``--dry-run`` stops after the bundle (no MLflow needed).

    python examples/retraining/train.py --data recent.csv --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

READY_TIMEOUT_SECONDS = 120.0


def parse_window(text: str) -> float:
    """Seconds of a Go-style duration ("24h", "90m", "1h30m")."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number = 0.0, ""
    index = 0
    while index < len(text):
        char = text[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = "ms" if text.startswith("ms", index) else char
        if unit not in units or not number:
            raise ValueError(f"{text!r} is not a duration")
        total += float(number) * units[unit]
        number = ""
        index += len(unit)
    if number:
        raise ValueError(f"{text!r} is not a duration (a number without a unit)")
    return total


def recent_rows(
    path: Path, target: str | None, window_seconds: float | None, now: float
) -> tuple[Any, Any, list[str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if not columns:
        raise SystemExit(f"{path}: no header")
    label = target or [c for c in columns if c != "timestamp"][-1]
    features = [c for c in columns if c not in (label, "timestamp")]
    if "timestamp" in columns and window_seconds is not None:
        rows = [r for r in rows if float(r["timestamp"]) >= now - window_seconds]
    if len(rows) < 20:
        raise SystemExit(f"{path}: only {len(rows)} rows in the window: not enough to retrain")
    X = np.array([[float(r[f]) for f in features] for r in rows], dtype=np.float64)
    y = np.array([r[label] for r in rows])
    return X, y, features


def next_version(stable: str) -> str:
    """2.0.0 -> 2.1.0 (a retrain changes no interface: a minor bump)."""
    core = stable.split("+", 1)[0].split("-", 1)[0]
    major, minor, _patch = (int(p) for p in core.split("."))
    return f"{major}.{minor + 1}.0"


def train_and_bundle(
    X: Any, y: Any, features: list[str], name: str, version: str, out: Path, reason: str
) -> Path:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlcanary_serving.bundle.build import build_bundle

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    result = build_bundle(
        pipeline,
        X,
        y,
        out,
        name=name,
        version=version,
        feature_names=features,
        onnx="auto",
        intended_use=f"Retrained by spec.retraining: {reason}"[:500],
        archive=True,
    )
    assert result.archive is not None
    return result.archive


class MlflowError(RuntimeError):
    pass


class Mlflow:
    """The few MLflow REST 2.0 calls a registration needs."""

    def __init__(self, tracking_uri: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=tracking_uri.rstrip("/"), headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, f"/api/2.0/{path}", **kwargs)
        body: dict[str, Any] = response.json() if response.content else {}
        if response.status_code >= 400:
            raise MlflowError(f"{method} {path}: HTTP {response.status_code} {body.get('error_code', '')}")
        return body

    def upload(self, artifact_path: str, file: Path) -> str:
        with file.open("rb") as handle:
            self._call("PUT", f"mlflow-artifacts/artifacts/{artifact_path}", content=handle.read())
        return f"mlflow-artifacts:/{artifact_path}"

    def ensure_registered_model(self, name: str) -> None:
        try:
            self._call("POST", "mlflow/registered-models/create", json={"name": name})
        except MlflowError as error:
            if "RESOURCE_ALREADY_EXISTS" not in str(error):
                raise

    def create_version(self, name: str, source: str, tags: dict[str, str], description: str) -> str:
        body = self._call(
            "POST",
            "mlflow/model-versions/create",
            json={
                "name": name,
                "source": source,
                "description": description,
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
        return str(body["model_version"]["version"])

    def wait_ready(self, name: str, version: str, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self._call(
                "GET", "mlflow/model-versions/get", params={"name": name, "version": version}
            )["model_version"].get("status", "READY")
            if status == "READY":
                return
            if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
                raise MlflowError(f"model version {name}/{version} is {status}")
            time.sleep(1.0)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            "POST", "mlflow/registered-models/alias", json={"name": name, "alias": alias, "version": version}
        )


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=env.get("TRAINING_DATA"), help="CSV of labelled recent rows")
    parser.add_argument("--target", help="label column (default: the last one that is not timestamp)")
    parser.add_argument("--model", default=env.get("MODEL"), help="model name (default: $MODEL)")
    parser.add_argument("--registered-model", help="MLflow registered model (default: the model name)")
    parser.add_argument("--stable-version", default=env.get("STABLE_VERSION", "1.0.0"))
    parser.add_argument("--version", help="the new bundle's semantic version (default: stable's minor + 1)")
    parser.add_argument("--window", default=env.get("WINDOW"), help="keep rows of this last duration")
    parser.add_argument("--reason", default=env.get("REASON", "manual"))
    parser.add_argument("--tracking-uri", default=env.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--alias", default=env.get("MLFLOW_ALIAS", "champion"))
    parser.add_argument("--work-dir", help="where the bundle is built (default: a temporary directory)")
    parser.add_argument("--dry-run", action="store_true", help="build the bundle, register nothing")
    args = parser.parse_args(argv)
    if not args.data or not args.model:
        parser.error("--data (or TRAINING_DATA) and --model (or MODEL) are required")
    version = args.version or next_version(args.stable_version)
    window = parse_window(args.window) if args.window else None
    X, y, features = recent_rows(Path(args.data), args.target, window, time.time())
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="retrain-"))
    archive = train_and_bundle(X, y, features, args.model, version, work / "bundle", args.reason)
    summary: dict[str, Any] = {
        "model": args.model,
        "version": version,
        "rows": len(y),
        "bundle": str(archive),
    }
    if not args.dry_run:
        if not args.tracking_uri:
            parser.error("--tracking-uri (or MLFLOW_TRACKING_URI) is required to register")
        registered = args.registered_model or args.model
        mlflow = Mlflow(args.tracking_uri, env.get("MLFLOW_TRACKING_TOKEN"))
        source = mlflow.upload(f"mlcanary/{registered}/{version}/{archive.name}", archive)
        mlflow.ensure_registered_model(registered)
        number = mlflow.create_version(
            registered,
            source,
            {
                "mlcanary.io/version": version,
                "mlcanary.io/reason": args.reason[:250],
                "mlcanary.io/trained-from": args.stable_version,
            },
            description=f"retrained from {args.stable_version}: {args.reason}"[:1000],
        )
        mlflow.wait_ready(registered, number)
        mlflow.set_alias(registered, args.alias, number)
        summary.update(registered_model=registered, model_version=number, source=source, alias=args.alias)
    json.dump(summary, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
