"""Example training run for spec.retraining: retrain on recent data, build a bundle, register it in
MLflow and move the alias.

The operator starts this as the Job of ``spec.retraining.jobTemplate`` and tells it, in the
environment, ``MODEL``, ``STABLE_VERSION``, ``REASON`` and ``WINDOW`` (docs/retraining.md). It

1. reads labelled rows from ``--data`` (a CSV with a header: the features, the label column
   ``--target`` — default the last — and optionally ``timestamp`` in epoch seconds, in which case only
   the rows of the last ``WINDOW`` are kept);
2. fits a scikit-learn pipeline (standardise, logistic regression) on them;
3. builds a bundle with the serving image's own builder (``mlcanary_serving.bundle.build``, what
   ``mlcanary bundle build`` runs);
4. registers it the way ``mlcanary bundle register`` does (``mlcanary_serving.mlflow_registry``,
   MLflow's REST API only, no mlflow package): the bundle's files uploaded through the artifact proxy
   into a run, a model version whose ``source`` is that run's ``mlflow-artifacts:`` path, tagged
   ``mlcanary.io/version`` (the bundle's semantic version) and ``mlcanary.io/sha256``, plus
   ``mlcanary.io/reason`` and ``mlcanary.io/trained-from`` here, then ``--alias`` pointed at it.

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

import numpy as np


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
    )
    return result.path


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
    bundle = train_and_bundle(X, y, features, args.model, version, work / "bundle", args.reason)
    summary: dict[str, Any] = {
        "model": args.model,
        "version": version,
        "rows": len(y),
        "bundle": str(bundle),
    }
    if not args.dry_run:
        if not args.tracking_uri:
            parser.error("--tracking-uri (or MLFLOW_TRACKING_URI) is required to register")
        from mlcanary_serving.mlflow_registry import MlflowServer, register_bundle

        server = MlflowServer.from_env(tracking_uri=args.tracking_uri)
        done = register_bundle(server, bundle, args.registered_model or args.model, alias=args.alias)
        for key, value in (
            ("mlcanary.io/reason", args.reason[:250]),
            ("mlcanary.io/trained-from", args.stable_version),
        ):
            server.call(
                "POST",
                "model-versions/set-tag",
                {"name": done.name, "version": done.version, "key": key, "value": value},
            )
        summary.update(
            registered_model=done.name, model_version=done.version, source=done.source, alias=args.alias
        )
    json.dump(summary, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
