"""The read side of bundles (serve time): verify the integrity chain, then load.

``verify_bundle`` checks the whole chain before anything is deserialised; a joblib artifact is
unpickled only after that, from bytes hashed again right before loading (``load_joblib_verified``).
Nothing here imports the build side (scikit-learn, skl2onnx, onnx).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .format import (
    FORMATS,
    JOBLIB_FILE,
    MANIFEST,
    MODEL_CARD,
    NAME_RE,
    ONNX_FILE,
    REFERENCE,
    REQUIRED_FILES,
    SCHEMA,
    SEMVER_RE,
    Bundle,
    BundleError,
    Manifest,
    Reference,
    Schema,
    sha256_bytes,
    sha256_file,
)


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


def read_verified_artifact(bundle: Bundle, refusal: str = "not loading it") -> bytes:
    """The model file's bytes, hashed again against the verified manifest right before use.

    Callers deserialise exactly these bytes, so nothing can be swapped between check and load.
    """
    data = bundle.artifact_path.read_bytes()
    expected = bundle.manifest.files[bundle.manifest.artifact]["sha256"]
    if sha256_bytes(data) != expected:
        raise BundleError(f"{bundle.manifest.artifact}: sha256 changed after verification; {refusal}")
    return data


def load_joblib_verified(bundle: Bundle) -> Any:
    """Unpickle a joblib artifact, re-checking its sha256 right before loading.

    Never call ``joblib.load`` on a bundle file any other way: unpickling runs code.
    """
    if bundle.manifest.format != "joblib":
        raise BundleError("not a joblib bundle")
    data = read_verified_artifact(bundle, "refusing to unpickle")
    import joblib

    return joblib.load(io.BytesIO(data))
