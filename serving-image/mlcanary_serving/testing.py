"""Small deterministic model bundles for tests and demos (breast_cancer, no download).

    from mlcanary_serving.testing import make_demo_bundle
    res = make_demo_bundle(tmp_path / "v1", version="1.0.0")              # good logreg, ONNX
    bad = make_demo_bundle(tmp_path / "v2", version="2.0.0", kind="degenerate")

Kinds: ``good`` (a sound model), ``degenerate`` (always predicts the majority class), ``bad``
(trained on shuffled labels: near-chance accuracy, prediction distribution unlike v1's). Models:
``logreg`` (fast: well under 5 s) or ``hgb`` (HistGradientBoosting, the benchmark model).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from .bundle.build import BuildResult, build_bundle

Kind = Literal["good", "degenerate", "bad"]
Model = Literal["logreg", "hgb"]


def demo_data() -> tuple[Any, Any, list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return (
        np.asarray(data.data, dtype=np.float64),
        np.asarray(data.target),
        [str(n) for n in data.feature_names],
    )


def demo_pipeline(kind: Kind = "good", model: Model = "logreg") -> Any:
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = demo_data()
    if kind == "degenerate":
        clf: Any = DummyClassifier(strategy="most_frequent")
    elif model == "hgb":
        clf = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    elif model == "logreg":
        clf = LogisticRegression(max_iter=5000)
    else:
        raise ValueError(f"unknown model {model!r}")
    if kind == "bad":
        y = np.random.default_rng(0).permutation(y)
    elif kind not in ("good", "degenerate"):
        raise ValueError(f"unknown kind {kind!r}")
    return Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(X, y)


def make_demo_bundle(
    out_dir: str | os.PathLike[str],
    version: str = "1.0.0",
    kind: Kind = "good",
    model: Model = "logreg",
    *,
    name: str = "breast-cancer",
    onnx: bool | Literal["auto"] = "auto",
    archive: bool = False,
    sample_rows: int = 32,
    **kwargs: Any,
) -> BuildResult:
    """Train on breast_cancer and build a bundle in ``out_dir`` (returns paths and manifest sha256)."""
    X, y, names = demo_data()
    pipe = demo_pipeline(kind, model)
    groups = np.where(X[:, 0] > np.median(X[:, 0]), "large", "small")
    return build_bundle(
        pipe,
        X,
        y,
        out_dir,
        name=name,
        version=version,
        feature_names=names,
        onnx=onnx,
        intended_use="Demo and test model: breast-cancer diagnosis from 30 cell-nucleus features. "
        "Not for clinical use.",
        subgroups={"mean radius (vs median)": groups},
        archive=archive,
        sample_rows=sample_rows,
        **kwargs,
    )


def demo_row(index: int = 0) -> list[float]:
    """One real row of the demo data, as a JSON-ready list."""
    X, _, _ = demo_data()
    return [float(v) for v in X[index]]
