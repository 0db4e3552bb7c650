"""The build side of bundles: a fitted scikit-learn pipeline + its training data -> a bundle directory.

Needs scikit-learn (and skl2onnx/onnx for the ONNX export: the ``bundle`` extra). The server never
imports this module (an import-linter contract and ``tests/serving/test_layout.py`` check it).

``build_bundle`` runs these steps, each a function below: check the arguments, infer the feature
schema, compute the reference statistics, write the model artifact (ONNX with a measured parity
check, or joblib), write the model card, write the manifest listing every file's sha256.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..metric_names import PROBABILITY_SCORE_BUCKETS
from .card import describe, jsonable, model_card, model_card_markdown
from .format import (
    BUNDLE_FORMAT_VERSION,
    JOBLIB_FILE,
    MANIFEST,
    MAX_SAMPLE_ROWS,
    MODEL_CARD,
    MODEL_CARD_MD,
    NAME_RE,
    ONNX_FILE,
    REFERENCE,
    SAMPLE,
    SCHEMA,
    SEMVER_RE,
    FeatureSpec,
    Reference,
    Schema,
    sha256_bytes,
    sha256_file,
)

log = logging.getLogger(__name__)

TRAINING_LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib", "skl2onnx", "onnx", "onnxruntime")


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    archive: Path | None = None


def build_bundle(
    pipeline: Any,
    X: Any,
    y: Any,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    feature_names: Sequence[str] | None = None,
    onnx: bool | Literal["auto"] = True,
    onnx_precision: Literal["float64", "float32"] = "float64",
    score_tolerance: float = 1e-4,
    min_label_agreement: float = 1.0,
    n_bins: int = 10,
    range_margin: float = 0.0,
    optional_features: Mapping[str, float] | None = None,
    intended_use: str = "Not documented.",
    limitations: str = "",
    eval_data: tuple[Any, Any] | None = None,
    subgroups: Mapping[str, Sequence[Any] | npt.NDArray[Any]] | None = None,
    archive: bool = False,
    created_at: datetime | None = None,
    sample_rows: int = 0,
) -> BuildResult:
    """Build a bundle from a fitted scikit-learn pipeline and its training data.

    ``onnx``: True = ONNX required (raise ``OnnxExportError`` if the export fails or disagrees with
    the pipeline beyond ``score_tolerance`` / ``min_label_agreement`` on the training rows);
    "auto" = ONNX when it converts and agrees, else a joblib bundle (the refusal is recorded in the
    manifest); False = joblib. ``range_margin`` widens each feature's allowed range by that share
    of its training range. ``subgroups`` maps a grouping name to one group value per training row;
    the model card reports metrics per group. ``archive`` also writes ``<out_dir>.tar.gz``.
    """
    Xa, ya, names = _check_arguments(X, y, name, version, feature_names, optional_features, subgroups)
    out = _empty_dir(Path(out_dir))
    task = (
        "classification"
        if hasattr(pipeline, "predict_proba") or hasattr(pipeline, "classes_")
        else "regression"
    )
    classes = [jsonable(c) for c in getattr(pipeline, "classes_", [])] if task == "classification" else []

    schema = infer_schema(Xa, names, range_margin, dict(optional_features or {}))
    reference = reference_statistics(pipeline, Xa, task, classes, n_bins)
    fmt, onnx_record = _write_artifact(
        pipeline, Xa, out, onnx, onnx_precision, score_tolerance, min_label_agreement
    )
    card = model_card(
        pipeline,
        Xa,
        ya,
        name=name,
        version=version,
        task=task,
        intended_use=intended_use,
        limitations=limitations,
        eval_data=eval_data,
        subgroups=subgroups,
        onnx_parity=onnx_record.get("parity"),
    )
    _write_json(out / SCHEMA, schema.as_dict())
    _write_json(out / REFERENCE, reference.as_dict(names))
    _write_json(out / MODEL_CARD, card)
    (out / MODEL_CARD_MD).write_text(model_card_markdown(card))
    if sample_rows:
        if not 0 < sample_rows <= MAX_SAMPLE_ROWS:
            raise ValueError(f"sample_rows must be 1 to {MAX_SAMPLE_ROWS}")
        picked = np.random.default_rng(0).choice(len(Xa), size=min(sample_rows, len(Xa)), replace=False)
        _write_json(out / SAMPLE, {"rows": [[float(v) for v in Xa[i]] for i in sorted(picked)]})

    manifest = {
        "bundle_format": BUNDLE_FORMAT_VERSION,
        "name": name,
        "version": version,
        "format": fmt,
        "artifact": ONNX_FILE if fmt == "onnx" else JOBLIB_FILE,
        "created_at": (created_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "task": task,
        "classes": classes,
        "input": {
            "name": "input",
            "n_features": len(names),
            "dtype": "float64" if fmt == "joblib" or onnx_precision == "float64" else "float32",
        },
        "training": {"libraries": _library_versions(), "estimator": describe(pipeline), "rows": len(Xa)},
        "onnx": onnx_record,
        "files": {
            p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in sorted(out.iterdir())
        },
    }
    mbytes = json.dumps(manifest, indent=2, sort_keys=True, default=jsonable).encode() + b"\n"
    (out / MANIFEST).write_bytes(mbytes)
    return BuildResult(out, manifest, sha256_bytes(mbytes), make_archive(out) if archive else None)


def _check_arguments(
    X: Any,
    y: Any,
    name: str,
    version: str,
    feature_names: Sequence[str] | None,
    optional_features: Mapping[str, float] | None,
    subgroups: Mapping[str, Sequence[Any] | npt.NDArray[Any]] | None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any], list[str]]:
    if not NAME_RE.match(name):
        raise ValueError(f"name {name!r}: use lowercase letters, digits, '.', '_' or '-' (max 63)")
    if not SEMVER_RE.match(version):
        raise ValueError(f"version {version!r} is not a semantic version (e.g. 1.2.0)")
    Xa = np.asarray(X, dtype=np.float64)
    ya = np.asarray(y)
    if Xa.ndim != 2 or len(Xa) == 0:
        raise ValueError("X must be a non-empty 2-D array")
    if len(ya) != len(Xa):
        raise ValueError("X and y have different numbers of rows")
    if not np.all(np.isfinite(Xa)):
        raise ValueError("X contains NaN or infinity")
    names = list(feature_names) if feature_names is not None else list(getattr(X, "columns", []))
    if not names:
        names = [f"f{i}" for i in range(Xa.shape[1])]
    if len(names) != Xa.shape[1]:
        raise ValueError(f"{len(names)} feature names for {Xa.shape[1]} columns")
    unknown = set(optional_features or {}) - set(names)
    if unknown:
        raise ValueError(f"optional_features names unknown features: {sorted(unknown)}")
    for group, labels in (subgroups or {}).items():
        if len(labels) != len(Xa):
            raise ValueError(f"subgroup {group!r} needs one value per training row")
    return Xa, ya, names


def _empty_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ValueError(f"output directory {out} is not empty")
    return out


def infer_schema(
    X: npt.NDArray[np.float64], names: Sequence[str], range_margin: float, optional: Mapping[str, float]
) -> Schema:
    """Per feature: int when every training value is integral, the training range (+ margin)."""
    feats = []
    for i, n in enumerate(names):
        col = X[:, i]
        lo, hi = float(col.min()), float(col.max())
        pad = (hi - lo) * range_margin
        feats.append(
            FeatureSpec(
                name=n,
                type="int" if bool(np.all(col == np.round(col))) else "float",
                min=lo - pad,
                max=hi + pad,
                required=n not in optional,
                default=optional.get(n),
            )
        )
    return Schema(tuple(feats))


def bin_proportions(values: npt.NDArray[np.float64], edges: Sequence[float]) -> list[float]:
    """Share of ``values`` per bin; bins are (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    total = counts.sum()
    return [float(c) for c in (counts / total if total else counts)]


def quantile_edges(values: npt.NDArray[np.float64], n_bins: int) -> list[float]:
    qs = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return [float(x) for x in np.unique(qs)]


def _scores(pipeline: Any, X: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], str]:
    if hasattr(pipeline, "predict_proba"):
        proba = np.asarray(pipeline.predict_proba(X), dtype=np.float64)
        if proba.shape[1] == 2:
            return proba[:, 1], "probability"
        return proba.max(axis=1), "probability"
    return np.asarray(pipeline.predict(X), dtype=np.float64).reshape(-1), "regression"


def reference_statistics(
    pipeline: Any, X: npt.NDArray[np.float64], task: str, classes: Sequence[Any], n_bins: int
) -> Reference:
    """Quantile bins per feature with the training share per bin, and the training predictions."""
    f_edges = [quantile_edges(X[:, i], n_bins) for i in range(X.shape[1])]
    f_props = [bin_proportions(X[:, i], e) for i, e in enumerate(f_edges)]
    scores, score_kind = _scores(pipeline, X)
    s_edges = (
        list(PROBABILITY_SCORE_BUCKETS[1:-1])
        if score_kind == "probability"
        else quantile_edges(scores, n_bins)
    )
    class_props: dict[str, float] = {}
    if task == "classification":
        pred = np.asarray(pipeline.predict(X))
        class_props = {str(c): float(np.mean(pred == c)) for c in classes}
    return Reference(
        feature_edges=tuple(tuple(e) for e in f_edges),
        feature_proportions=tuple(tuple(p) for p in f_props),
        score_edges=tuple(s_edges),
        score_proportions=tuple(bin_proportions(scores, s_edges)),
        score_kind=score_kind,
        class_proportions=class_props,
    )


def _write_artifact(
    pipeline: Any,
    X: npt.NDArray[np.float64],
    out: Path,
    onnx: bool | Literal["auto"],
    precision: Literal["float64", "float32"],
    score_tolerance: float,
    min_label_agreement: float,
) -> tuple[str, dict[str, Any]]:
    """Write model.onnx (when asked for and it agrees with the pipeline) or model.joblib."""
    from .onnx_export import OnnxExportError, check_parity, export_onnx

    record: dict[str, Any] = {"requested": onnx if isinstance(onnx, bool) else "auto"}
    if onnx:
        try:
            model_bytes = export_onnx(pipeline, X.shape[1], precision)
            parity = check_parity(
                pipeline,
                model_bytes,
                X,
                score_tolerance=score_tolerance,
                min_label_agreement=min_label_agreement,
                precision=precision,
            )
            record["parity"] = parity.as_dict()
            if not parity.passed:
                raise OnnxExportError(
                    f"ONNX export disagrees with the pipeline on the training data: label agreement "
                    f"{parity.label_agreement:.4f} (min {min_label_agreement}), max |score diff| "
                    f"{parity.max_abs_score_diff:.3g} (tolerance {score_tolerance}); refusing it "
                    "(training-serving skew)"
                )
            (out / ONNX_FILE).write_bytes(model_bytes)
            return "onnx", record
        except OnnxExportError as exc:
            if onnx is True:
                raise
            record["refused"] = str(exc)
            log.warning("ONNX export not used, falling back to joblib: %s", exc)
    import joblib

    joblib.dump(pipeline, out / JOBLIB_FILE)
    return "joblib", record


def _library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in TRAINING_LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_bytes(json.dumps(data, indent=2, sort_keys=True, default=jsonable).encode() + b"\n")


def make_archive(bundle_dir: Path, dest: Path | None = None) -> Path:
    """Pack a bundle directory into ``<dir>.tar.gz`` (files at the archive root)."""
    dest = dest or bundle_dir.with_name(bundle_dir.name + ".tar.gz")
    with tarfile.open(dest, "w:gz") as tar:
        for p in sorted(bundle_dir.iterdir()):
            tar.add(p, arcname=p.name)
    return dest
