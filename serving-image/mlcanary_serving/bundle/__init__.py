"""Model bundles: the format, the read side (serve time) and the build side.

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
other file.

Modules: ``format`` (file names, dataclasses), ``read`` (verify and load: what the server
imports), ``build`` + ``card`` + ``onnx_export`` (build time: scikit-learn, skl2onnx). Server code
imports ``bundle.format`` / ``bundle.read`` directly; the build names below are resolved lazily so
that ``from mlcanary_serving.bundle import build_bundle`` works without the server ever loading
the build side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .format import (
    MANIFEST,
    MODEL_CARD,
    REFERENCE,
    SCHEMA,
    Bundle,
    BundleError,
    FeatureSpec,
    Manifest,
    Reference,
    Schema,
    sha256_bytes,
    sha256_file,
)
from .read import load_joblib_verified, verify_bundle

if TYPE_CHECKING:
    from .build import BuildResult, bin_proportions, build_bundle, make_archive, quantile_edges

_BUILD_SIDE = frozenset({"BuildResult", "bin_proportions", "build_bundle", "make_archive", "quantile_edges"})

__all__ = [
    "MANIFEST",
    "MODEL_CARD",
    "REFERENCE",
    "SCHEMA",
    "BuildResult",
    "Bundle",
    "BundleError",
    "FeatureSpec",
    "Manifest",
    "Reference",
    "Schema",
    "bin_proportions",
    "build_bundle",
    "load_joblib_verified",
    "make_archive",
    "quantile_edges",
    "sha256_bytes",
    "sha256_file",
    "verify_bundle",
]


def __getattr__(name: str) -> object:
    if name in _BUILD_SIDE:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
