"""The bundle format: file names, the manifest, the feature schema and the reference statistics.

Shared by the read side (``read.py``, serve time) and the build side (``build.py``). Stdlib and
numpy-free: only dataclasses and their JSON forms.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA = "schema.json"
REFERENCE = "reference.json"
MODEL_CARD = "model_card.json"
MODEL_CARD_MD = "model_card.md"
SAMPLE = "sample.json"  # optional: real training rows, the request bodies of load tests
MAX_SAMPLE_ROWS = 1000
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

    def sample_rows(self) -> list[list[float]]:
        """The real rows the bundle ships for load tests ([] when it ships none). Listed in the
        manifest, so its sha256 was checked with the rest of the bundle."""
        if SAMPLE not in self.manifest.files:
            return []
        import json

        raw = json.loads((self.path / SAMPLE).read_text())
        rows = raw.get("rows") if isinstance(raw, dict) else None
        if not isinstance(rows, list) or len(rows) > MAX_SAMPLE_ROWS:
            raise BundleError(f"{SAMPLE}: rows must be a list of at most {MAX_SAMPLE_ROWS} rows")
        width = len(self.schema.features)
        for index, row in enumerate(rows):
            if (
                not isinstance(row, list)
                or len(row) != width
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row)
            ):
                raise BundleError(f"{SAMPLE}: row {index} is not {width} numbers")
        return [[float(v) for v in row] for row in rows]
