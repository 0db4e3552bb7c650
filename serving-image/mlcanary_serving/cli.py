"""``mlcanary bundle build|verify|register`` (the operator's ``mlcanary`` CLI delegates here).

    mlcanary bundle build --pipeline model.joblib --data train.csv --target label \\
        --name churn --version 1.2.0 --out bundles/churn-1.2.0 [--onnx auto|require|off] [--archive]
    mlcanary bundle verify bundles/churn-1.2.0 [--expected-sha256 HEX] [--json]
    mlcanary bundle register bundles/churn-1.2.0 --model churn [--alias champion] \
        [--tracking-uri URL] [--experiment NAME] [--json]

``register`` uploads a bundle directory to an MLflow tracking server (``--serve-artifacts``) and
registers it as a new model version; credentials come from MLFLOW_TRACKING_TOKEN or
MLFLOW_TRACKING_USERNAME/PASSWORD, the server from --tracking-uri or MLFLOW_TRACKING_URI.

``--data``: CSV with a header (feature columns + the target column, ``--target``, default the last
column) or ``.npz`` with arrays ``X``, ``y`` and optionally ``feature_names``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt


def _load_data(path: Path, target: str | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any], list[str]]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as d:
            X, target_values = np.asarray(d["X"], dtype=np.float64), np.asarray(d["y"])
            names = (
                [str(n) for n in d["feature_names"]]
                if "feature_names" in d
                else [f"f{i}" for i in range(X.shape[1])]
            )
        return X, target_values, names
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    t = header.index(target) if target else len(header) - 1
    if target and target not in header:
        raise ValueError(f"{path}: no column {target!r}")
    names = [h for i, h in enumerate(header) if i != t]
    X = np.array([[float(v) for i, v in enumerate(r) if i != t] for r in body], dtype=np.float64)
    yraw = [r[t] for r in body]
    try:
        y: npt.NDArray[Any] = np.array([int(v) for v in yraw])
    except ValueError:
        try:
            y = np.array([float(v) for v in yraw])
        except ValueError:
            y = np.array(yraw)
    return X, y, names


def _build(args: argparse.Namespace) -> int:
    import joblib

    from .bundle.build import build_bundle
    from .bundle.onnx_export import OnnxExportError

    pipeline = joblib.load(args.pipeline)  # the data scientist's own file, trusted at build time
    X, y, names = _load_data(Path(args.data), args.target)
    if args.feature_names:
        names = [n.strip() for n in args.feature_names.split(",")]
    onnx: bool | Literal["auto"] = "auto" if args.onnx == "auto" else args.onnx == "require"
    try:
        res = build_bundle(
            pipeline,
            X,
            y,
            args.out,
            name=args.name,
            version=args.version,
            feature_names=names,
            onnx=onnx,
            score_tolerance=args.score_tolerance,
            range_margin=args.range_margin,
            intended_use=args.intended_use,
            archive=args.archive,
        )
    except (OnnxExportError, ValueError) as exc:
        print(f"bundle build failed: {exc}", file=sys.stderr)
        return 1
    m = res.manifest
    parity = m["onnx"].get("parity")
    print(f"built {m['name']} {m['version']} ({m['format']}) in {res.path}")
    if parity:
        print(
            f"onnx parity on {parity['rows']} training rows: label agreement {parity['label_agreement']:.4f}, "
            f"max |score diff| {parity['max_abs_score_diff']:.3g} (tolerance {parity['score_tolerance']})"
        )
    if m["onnx"].get("refused"):
        print(f"onnx export refused, bundle uses joblib: {m['onnx']['refused']}")
    print(f"sha256(manifest.json) = {res.manifest_sha256}")
    if res.archive:
        print(f"archive: {res.archive}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .bundle.format import BundleError
    from .fetch import fetch_bundle

    try:
        b = fetch_bundle(args.bundle, expected_sha256=args.expected_sha256)
    except BundleError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"bundle verify FAILED: {exc}", file=sys.stderr)
        return 1
    summary = {
        "ok": True,
        "name": b.manifest.name,
        "version": b.manifest.version,
        "format": b.manifest.format,
        "manifest_sha256": b.manifest_sha256,
        "files": len(b.manifest.files),
        "features": len(b.schema.features),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"bundle OK: {summary['name']} {summary['version']} ({summary['format']}), {summary['files']} files "
            f"verified, {summary['features']} features, sha256(manifest.json) = {summary['manifest_sha256']}"
        )
    return 0


def _register(args: argparse.Namespace) -> int:
    from .bundle.format import BundleError
    from .mlflow_registry import MlflowServer, register_bundle

    try:
        server = MlflowServer.from_env(tracking_uri=args.tracking_uri)
        done = register_bundle(server, args.bundle, args.model, alias=args.alias, experiment=args.experiment)
    except BundleError as exc:
        print(f"bundle register failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(done.__dict__))
    else:
        alias = f", alias {done.alias!r} -> it" if done.alias else ""
        print(
            f"registered {done.name} version {done.version} (bundle {done.model_version}) from "
            f"{done.source}{alias}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlcanary", description="mlcanary model bundle tools")
    sub = p.add_subparsers(dest="command", required=True)
    bundle = sub.add_parser("bundle", help="build or verify a model bundle")
    bsub = bundle.add_subparsers(dest="action", required=True)

    b = bsub.add_parser("build", help="build a bundle from a joblib-saved fitted pipeline and training data")
    b.add_argument("--pipeline", required=True, help="joblib file with the fitted scikit-learn pipeline")
    b.add_argument("--data", required=True, help="training data: CSV with header, or .npz with X, y")
    b.add_argument("--target", help="CSV target column (default: the last column)")
    b.add_argument("--feature-names", help="comma-separated feature names (default: CSV header / npz)")
    b.add_argument("--name", required=True)
    b.add_argument("--version", required=True, help="semantic version, e.g. 1.2.0")
    b.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    b.add_argument("--onnx", choices=["auto", "require", "off"], default="auto",
                   help="auto: ONNX if it converts and agrees, else joblib; require: fail otherwise")  # fmt: skip
    b.add_argument("--score-tolerance", type=float, default=1e-4, help="max |score diff| of the ONNX export")
    b.add_argument("--range-margin", type=float, default=0.0, help="widen allowed ranges by this share")
    b.add_argument("--intended-use", default="Not documented.", help="model card: intended use")
    b.add_argument("--archive", action="store_true", help="also write <out>.tar.gz")
    b.set_defaults(func=_build)

    v = bsub.add_parser("verify", help="check a bundle's manifest and every file's sha256")
    v.add_argument("bundle", help="directory, archive, file://, http(s):// or s3:// URI")
    v.add_argument("--expected-sha256", help="expected sha256 of manifest.json")
    v.add_argument("--json", action="store_true", help="print a JSON summary")
    v.set_defaults(func=_verify)

    r = bsub.add_parser("register", help="upload a bundle to MLflow and register it as a new model version")
    r.add_argument("bundle", help="bundle directory (verified before upload)")
    r.add_argument("--model", required=True, help="registered model name (created if absent)")
    r.add_argument("--alias", help="point this alias at the new version (e.g. champion)")
    r.add_argument("--tracking-uri", help="MLflow tracking server URL (default: $MLFLOW_TRACKING_URI)")
    r.add_argument("--experiment", default="mlcanary-bundles", help="experiment of the upload run")
    r.add_argument("--json", action="store_true", help="print a JSON summary")
    r.set_defaults(func=_register)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
