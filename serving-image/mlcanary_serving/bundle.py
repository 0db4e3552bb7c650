"""Model bundle: build, verify, load.

A bundle is a directory (or an archive of one) that holds everything the server needs::

    manifest.json     name, semver, format, created-at, training library versions, task, classes,
                      ONNX parity measured at build, sha256 + size of every other file
    model.onnx        (format "onnx")   or   model.joblib   (format "joblib")
    schema.json       features: name, type, allowed range, required/optional (+ default)
    reference.json    training statistics for drift: per-feature quantile bins with the training
                      share per bin, and the training prediction distribution
    model_card.json   intended use, metrics, performance across subgroups (+ model_card.md)

Integrity chain: the sha256 of ``manifest.json`` (what the operator's ``spec.model.sha256`` /
``MLCANARY_BUNDLE_SHA256`` pins) covers the manifest, and the manifest lists the sha256 of every
other file. ``verify_bundle`` checks the whole chain before anything is deserialised; a joblib
artifact is unpickled only after that (``load_joblib_verified``).

Building needs scikit-learn (and skl2onnx for ONNX); verifying and loading do not.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import re
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .metric_names import PROBABILITY_SCORE_BUCKETS

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA = "schema.json"
REFERENCE = "reference.json"
MODEL_CARD = "model_card.json"
MODEL_CARD_MD = "model_card.md"
ONNX_FILE = "model.onnx"
JOBLIB_FILE = "model.joblib"
FORMATS = ("onnx", "joblib")
REQUIRED_FILES = (SCHEMA, REFERENCE, MODEL_CARD)

SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
TRAINING_LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib", "skl2onnx", "onnx", "onnxruntime")


class BundleError(Exception):
    """The bundle is missing, malformed, or fails an integrity check."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ schema
@dataclass(frozen=True)
class FeatureSpec:
    name: str
    type: Literal["float", "int"] = "float"
    min: float | None = None
    max: float | None = None
    required: bool = True
    default: float | None = None  # used for an optional feature left out of a named request

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "min": self.min,
            "max": self.max,
            "required": self.required,
            "default": self.default,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        typ = d.get("type", "float")
        if typ not in ("float", "int"):
            raise BundleError(f"schema: feature {d.get('name')!r} has unsupported type {typ!r}")
        return cls(
            name=str(d["name"]),
            type=typ,
            min=None if d.get("min") is None else float(d["min"]),
            max=None if d.get("max") is None else float(d["max"]),
            required=bool(d.get("required", True)),
            default=None if d.get("default") is None else float(d["default"]),
        )


@dataclass(frozen=True)
class Schema:
    features: tuple[FeatureSpec, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def as_dict(self) -> dict[str, Any]:
        return {"n_features": len(self.features), "features": [f.as_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Schema:
        feats = tuple(FeatureSpec.from_dict(f) for f in d.get("features", []))
        if not feats:
            raise BundleError("schema: no features")
        names = [f.name for f in feats]
        if len(set(names)) != len(names):
            raise BundleError("schema: duplicate feature names")
        for f in feats:
            if not f.required and f.default is None:
                raise BundleError(f"schema: optional feature {f.name!r} needs a default")
        return cls(feats)


# ------------------------------------------------------------------------------- reference
@dataclass(frozen=True)
class Reference:
    """Training-data statistics the server compares live traffic against."""

    feature_edges: tuple[tuple[float, ...], ...]  # inner bin edges per feature (bins = len+1)
    feature_proportions: tuple[tuple[float, ...], ...]  # training share per bin
    score_edges: tuple[float, ...]  # inner edges of the prediction-score bins
    score_proportions: tuple[float, ...]
    score_kind: str  # "probability" | "regression"
    class_proportions: dict[str, float] = field(default_factory=dict)

    def as_dict(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "features": [
                {"name": n, "edges": list(e), "proportions": list(p)}
                for n, e, p in zip(names, self.feature_edges, self.feature_proportions, strict=True)
            ],
            "prediction": {
                "score_kind": self.score_kind,
                "edges": list(self.score_edges),
                "proportions": list(self.score_proportions),
                "class_proportions": self.class_proportions,
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], names: Sequence[str]) -> Reference:
        feats = d.get("features", [])
        if [f.get("name") for f in feats] != list(names):
            raise BundleError("reference.json: features do not match schema.json")
        edges = tuple(tuple(float(x) for x in f["edges"]) for f in feats)
        props = tuple(tuple(float(x) for x in f["proportions"]) for f in feats)
        for n, e, p in zip(names, edges, props, strict=True):
            if len(p) != len(e) + 1:
                raise BundleError(f"reference.json: feature {n!r} needs len(edges)+1 proportions")
        pred = d.get("prediction", {})
        se = tuple(float(x) for x in pred.get("edges", []))
        sp = tuple(float(x) for x in pred.get("proportions", []))
        if len(sp) != len(se) + 1:
            raise BundleError("reference.json: prediction needs len(edges)+1 proportions")
        return cls(
            feature_edges=edges,
            feature_proportions=props,
            score_edges=se,
            score_proportions=sp,
            score_kind=str(pred.get("score_kind", "probability")),
            class_proportions={str(k): float(v) for k, v in pred.get("class_proportions", {}).items()},
        )


def bin_proportions(values: npt.NDArray[np.float64], edges: Sequence[float]) -> list[float]:
    """Share of ``values`` per bin; bins are (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    total = counts.sum()
    return [float(c) for c in (counts / total if total else counts)]


def quantile_edges(values: npt.NDArray[np.float64], n_bins: int) -> list[float]:
    qs = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return [float(x) for x in np.unique(qs)]


# -------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class Manifest:
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def version(self) -> str:
        return str(self.raw["version"])

    @property
    def format(self) -> str:
        return str(self.raw["format"])

    @property
    def artifact(self) -> str:
        return str(self.raw["artifact"])

    @property
    def task(self) -> str:
        return str(self.raw.get("task", "classification"))

    @property
    def classes(self) -> list[Any]:
        return list(self.raw.get("classes") or [])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw.get("files", {}))


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on local disk (nothing deserialised yet except the JSON files)."""

    path: Path
    manifest: Manifest
    manifest_sha256: str
    schema: Schema
    reference: Reference
    model_card: dict[str, Any]

    @property
    def artifact_path(self) -> Path:
        return self.path / self.manifest.artifact


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise BundleError(f"{what} missing: {path}") from exc
    except (OSError, ValueError) as exc:
        raise BundleError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{what} must be a JSON object")
    return data


def _check_manifest(raw: Mapping[str, Any]) -> None:
    for key in ("name", "version", "format", "artifact", "created_at", "files", "training"):
        if key not in raw:
            raise BundleError(f"manifest.json: missing field {key!r}")
    if not isinstance(raw["name"], str) or not NAME_RE.match(raw["name"]):
        raise BundleError(f"manifest.json: name {raw['name']!r} is not a DNS-1123-style name")
    if not isinstance(raw["version"], str) or not SEMVER_RE.match(raw["version"]):
        raise BundleError(f"manifest.json: version {raw['version']!r} is not a semantic version")
    if raw["format"] not in FORMATS:
        raise BundleError(f"manifest.json: format {raw['format']!r} is not one of {FORMATS}")
    expected = ONNX_FILE if raw["format"] == "onnx" else JOBLIB_FILE
    if raw["artifact"] != expected:
        raise BundleError(f"manifest.json: artifact for format {raw['format']} must be {expected}")
    files = raw["files"]
    if not isinstance(files, dict):
        raise BundleError("manifest.json: files must be an object")
    for req in (raw["artifact"], *REQUIRED_FILES):
        if req not in files:
            raise BundleError(f"manifest.json: files does not list {req}")
    for name, meta in files.items():
        if "/" in name or name.startswith(".") or name == MANIFEST:
            raise BundleError(f"manifest.json: illegal file entry {name!r}")
        if not isinstance(meta, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(meta.get("sha256", ""))):
            raise BundleError(f"manifest.json: file {name!r} needs a sha256")


def verify_bundle(path: str | os.PathLike[str], expected_sha256: str | None = None) -> Bundle:
    """Check a bundle directory end to end; raise ``BundleError`` naming the first problem.

    Checks: manifest sha256 (when ``expected_sha256`` is given), manifest fields, every listed
    file's sha256 and size, no unlisted files, schema/reference consistency.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {root}")
    mpath = root / MANIFEST
    try:
        mbytes = mpath.read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"manifest.json missing in {root}") from exc
    msha = sha256_bytes(mbytes)
    if expected_sha256 and msha != expected_sha256.lower().removeprefix("sha256:"):
        raise BundleError(
            f"manifest.json sha256 {msha} does not match the expected {expected_sha256} "
            "(spec.model.sha256 / MLCANARY_BUNDLE_SHA256)"
        )
    try:
        raw = json.loads(mbytes)
    except ValueError as exc:
        raise BundleError(f"manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BundleError("manifest.json must be a JSON object")
    _check_manifest(raw)
    for name, meta in raw["files"].items():
        fpath = root / name
        if not fpath.is_file():
            raise BundleError(f"file {name} listed in manifest.json is missing")
        if "size" in meta and fpath.stat().st_size != int(meta["size"]):
            raise BundleError(f"file {name}: size {fpath.stat().st_size} != manifest {meta['size']}")
        actual = sha256_file(fpath)
        if actual != meta["sha256"]:
            raise BundleError(f"file {name}: sha256 {actual} does not match manifest {meta['sha256']}")
    listed = set(raw["files"]) | {MANIFEST}
    extra = sorted(p.name for p in root.iterdir() if p.name not in listed)
    if extra:
        raise BundleError(f"files not listed in manifest.json: {', '.join(extra)}")
    schema = Schema.from_dict(_read_json(root / SCHEMA, SCHEMA))
    n = raw.get("input", {}).get("n_features")
    if n is not None and int(n) != len(schema.features):
        raise BundleError(f"schema.json has {len(schema.features)} features, manifest says {n}")
    reference = Reference.from_dict(_read_json(root / REFERENCE, REFERENCE), schema.names)
    card = _read_json(root / MODEL_CARD, MODEL_CARD)
    return Bundle(root, Manifest(dict(raw)), msha, schema, reference, card)


def load_joblib_verified(bundle: Bundle) -> Any:
    """Unpickle a joblib artifact, re-checking its sha256 right before loading.

    Never call ``joblib.load`` on a bundle file any other way: unpickling runs code.
    """
    if bundle.manifest.format != "joblib":
        raise BundleError("not a joblib bundle")
    path = bundle.artifact_path
    data = path.read_bytes()  # hash exactly the bytes we unpickle (no TOCTOU between check and load)
    expected = bundle.manifest.files[bundle.manifest.artifact]["sha256"]
    if sha256_bytes(data) != expected:
        raise BundleError(f"{path.name}: sha256 does not match manifest; refusing to unpickle")
    import joblib

    return joblib.load(io.BytesIO(data))


# ----------------------------------------------------------------------------------- build
@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    archive: Path | None = None


def _library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in TRAINING_LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def _describe(pipeline: Any) -> str:
    steps = getattr(pipeline, "steps", None)
    if steps:
        return "Pipeline(" + ", ".join(type(s).__name__ for _, s in steps) + ")"
    return type(pipeline).__name__


def _scores(pipeline: Any, X: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], str]:
    if hasattr(pipeline, "predict_proba"):
        proba = np.asarray(pipeline.predict_proba(X), dtype=np.float64)
        if proba.shape[1] == 2:
            return proba[:, 1], "probability"
        return proba.max(axis=1), "probability"
    return np.asarray(pipeline.predict(X), dtype=np.float64).reshape(-1), "regression"


def _metrics(pipeline: Any, X: npt.NDArray[np.float64], y: npt.NDArray[Any], task: str) -> dict[str, float]:
    from sklearn import metrics as skm

    if task == "classification":
        pred = pipeline.predict(X)
        out = {"accuracy": float(skm.accuracy_score(y, pred)), "rows": float(len(y))}
        if hasattr(pipeline, "predict_proba") and len(np.unique(y)) == 2:
            proba = pipeline.predict_proba(X)[:, 1]
            out["roc_auc"] = float(skm.roc_auc_score(y, proba))
            out["log_loss"] = float(skm.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1]))
        return out
    pred = pipeline.predict(X)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)),
        "rows": float(len(y)),
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _write_json(path: Path, data: Any) -> None:
    path.write_bytes(json.dumps(data, indent=2, sort_keys=True, default=_jsonable).encode() + b"\n")


def _model_card_md(card: Mapping[str, Any]) -> str:
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        "## Intended use",
        "",
        card["intended_use"],
    ]
    if card.get("limitations"):
        lines += ["", "## Limitations", "", str(card["limitations"])]
    for title, key in (
        ("Training metrics", "training_metrics"),
        ("Evaluation metrics", "evaluation_metrics"),
    ):
        if card.get(key):
            lines += ["", f"## {title}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in card[key].items()]
    for group, values in (card.get("subgroups") or {}).items():
        lines += ["", f"## Performance by `{group}`", ""]
        metric_names = sorted({m for v in values.values() for m in v})
        lines += ["| value | " + " | ".join(metric_names) + " |", "|---" * (len(metric_names) + 1) + "|"]
        for gv, ms in values.items():
            lines.append(
                f"| {gv} | " + " | ".join(f"{ms.get(m, float('nan')):.4g}" for m in metric_names) + " |"
            )
    return "\n".join(lines) + "\n"


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
) -> BuildResult:
    """Build a bundle from a fitted scikit-learn pipeline and its training data.

    ``onnx``: True = ONNX required (raise ``OnnxExportError`` if the export fails or disagrees with
    the pipeline beyond ``score_tolerance`` / ``min_label_agreement`` on the training rows);
    "auto" = ONNX when it converts and agrees, else a joblib bundle (the refusal is recorded in the
    manifest); False = joblib. ``range_margin`` widens each feature's allowed range by that share
    of its training range. ``subgroups`` maps a grouping name to one group value per training row;
    the model card reports metrics per group. ``archive`` also writes ``<out_dir>.tar.gz``.
    """
    from .onnx_export import OnnxExportError, check_parity, export_onnx

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
    optional = dict(optional_features or {})
    unknown = set(optional) - set(names)
    if unknown:
        raise ValueError(f"optional_features names unknown features: {sorted(unknown)}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ValueError(f"output directory {out} is not empty")

    task = (
        "classification"
        if hasattr(pipeline, "predict_proba") or hasattr(pipeline, "classes_")
        else "regression"
    )
    classes = [_jsonable(c) for c in getattr(pipeline, "classes_", [])] if task == "classification" else []

    # --- schema
    feats = []
    for i, n in enumerate(names):
        col = Xa[:, i]
        lo, hi = float(col.min()), float(col.max())
        pad = (hi - lo) * range_margin
        is_int = bool(np.all(col == np.round(col)))
        feats.append(
            FeatureSpec(
                name=n,
                type="int" if is_int else "float",
                min=lo - pad,
                max=hi + pad,
                required=n not in optional,
                default=optional.get(n),
            )
        )
    schema = Schema(tuple(feats))

    # --- reference statistics
    f_edges = [quantile_edges(Xa[:, i], n_bins) for i in range(Xa.shape[1])]
    f_props = [bin_proportions(Xa[:, i], e) for i, e in enumerate(f_edges)]
    scores, score_kind = _scores(pipeline, Xa)
    if score_kind == "probability":
        s_edges = list(PROBABILITY_SCORE_BUCKETS[1:-1])
    else:
        s_edges = quantile_edges(scores, n_bins)
    class_props: dict[str, float] = {}
    if task == "classification":
        pred = np.asarray(pipeline.predict(Xa))
        for c in classes:
            class_props[str(c)] = float(np.mean(pred == c))
    reference = Reference(
        feature_edges=tuple(tuple(e) for e in f_edges),
        feature_proportions=tuple(tuple(p) for p in f_props),
        score_edges=tuple(s_edges),
        score_proportions=tuple(bin_proportions(scores, s_edges)),
        score_kind=score_kind,
        class_proportions=class_props,
    )

    # --- model artifact
    fmt = "joblib"
    onnx_record: dict[str, Any] = {"requested": onnx if isinstance(onnx, bool) else "auto"}
    if onnx:
        try:
            model_bytes = export_onnx(pipeline, Xa.shape[1], onnx_precision)
            parity = check_parity(
                pipeline,
                model_bytes,
                Xa,
                score_tolerance=score_tolerance,
                min_label_agreement=min_label_agreement,
                precision=onnx_precision,
            )
            onnx_record["parity"] = parity.as_dict()
            if not parity.passed:
                raise OnnxExportError(
                    f"ONNX export disagrees with the pipeline on the training data: label agreement "
                    f"{parity.label_agreement:.4f} (min {min_label_agreement}), max |score diff| "
                    f"{parity.max_abs_score_diff:.3g} (tolerance {score_tolerance}); refusing it "
                    "(training-serving skew)"
                )
            (out / ONNX_FILE).write_bytes(model_bytes)
            fmt = "onnx"
        except OnnxExportError as exc:
            if onnx is True:
                raise
            onnx_record["refused"] = str(exc)
            log.warning("ONNX export not used, falling back to joblib: %s", exc)
    if fmt == "joblib":
        import joblib

        joblib.dump(pipeline, out / JOBLIB_FILE)

    # --- model card
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "intended_use": intended_use,
        "limitations": limitations,
        "model": _describe(pipeline),
        "task": task,
        "training_metrics": _metrics(pipeline, Xa, ya, task),
    }
    if eval_data is not None:
        Xe, ye = np.asarray(eval_data[0], dtype=np.float64), np.asarray(eval_data[1])
        card["evaluation_metrics"] = _metrics(pipeline, Xe, ye, task)
    if subgroups:
        card["subgroups"] = {}
        for group, labels in subgroups.items():
            lab = np.asarray(labels)
            if len(lab) != len(Xa):
                raise ValueError(f"subgroup {group!r} needs one value per training row")
            card["subgroups"][group] = {
                str(_jsonable(v)): _metrics(pipeline, Xa[lab == v], ya[lab == v], task)
                for v in np.unique(lab)
            }
    if "parity" in onnx_record:
        card["onnx_parity"] = onnx_record["parity"]

    _write_json(out / SCHEMA, schema.as_dict())
    _write_json(out / REFERENCE, reference.as_dict(names))
    _write_json(out / MODEL_CARD, card)
    (out / MODEL_CARD_MD).write_text(_model_card_md(card))

    artifact = ONNX_FILE if fmt == "onnx" else JOBLIB_FILE
    files = {}
    for p in sorted(out.iterdir()):
        files[p.name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest = {
        "bundle_format": BUNDLE_FORMAT_VERSION,
        "name": name,
        "version": version,
        "format": fmt,
        "artifact": artifact,
        "created_at": (created_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "task": task,
        "classes": classes,
        "input": {
            "name": "input",
            "n_features": len(names),
            "dtype": "float64" if fmt == "joblib" or onnx_precision == "float64" else "float32",
        },
        "training": {
            "libraries": _library_versions(),
            "estimator": _describe(pipeline),
            "rows": len(Xa),
        },
        "onnx": onnx_record,
        "files": files,
    }
    mbytes = json.dumps(manifest, indent=2, sort_keys=True, default=_jsonable).encode() + b"\n"
    (out / MANIFEST).write_bytes(mbytes)
    arch = make_archive(out) if archive else None
    return BuildResult(out, manifest, sha256_bytes(mbytes), arch)


def make_archive(bundle_dir: Path, dest: Path | None = None) -> Path:
    """Pack a bundle directory into ``<dir>.tar.gz`` (files at the archive root)."""
    dest = dest or bundle_dir.with_name(bundle_dir.name + ".tar.gz")
    with tarfile.open(dest, "w:gz") as tar:
        for p in sorted(bundle_dir.iterdir()):
            tar.add(p, arcname=p.name)
    return dest
