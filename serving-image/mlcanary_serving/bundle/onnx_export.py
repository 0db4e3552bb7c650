"""ONNX export of a fitted scikit-learn pipeline, with a parity check against the pipeline.

Imported only by ``bundle build`` (needs the ``bundle`` extra: skl2onnx, onnx); the server never
imports it.

Precision: skl2onnx's default export runs in float32, and tree ensembles store their thresholds as
float32. For HistGradientBoosting that flips comparisons for rows that sit on a threshold (which
HGB places *at* data values), shifting probabilities by up to ~0.1 on breast_cancer. We export in
float64 instead and, for HistGradientBoosting, rewrite the thresholds from the fitted model as a
float64 tensor (``nodes_values_as_tensor``, ai.onnx.ml opset 3). The result agrees to ~1e-7.
Whatever the export, ``check_parity`` measures it and ``build`` refuses one that disagrees.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Precision = Literal["float64", "float32"]


class OnnxExportError(RuntimeError):
    """The pipeline could not be exported, or the export disagrees with the pipeline."""


@dataclass(frozen=True)
class Parity:
    """Measured agreement of an ONNX export with the original pipeline on the training rows."""

    rows: int
    label_agreement: float  # share of rows with the same label (classification); 1.0 for regression
    max_abs_score_diff: float  # max |proba_onnx - proba_sklearn| (or |y_onnx - y_sklearn|)
    score_tolerance: float
    min_label_agreement: float
    precision: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _final_estimator(pipeline: Any) -> Any:
    steps = getattr(pipeline, "steps", None)
    return steps[-1][1] if steps else pipeline


def export_onnx(pipeline: Any, n_features: int, precision: Precision = "float64") -> bytes:
    """Convert ``pipeline`` to a serialized ONNX model with one input named ``input``."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    except ImportError as exc:  # pragma: no cover - depends on the installed extra
        raise OnnxExportError(f"skl2onnx is not installed (pip install 'mlcanary[bundle]'): {exc}") from exc

    est = _final_estimator(pipeline)
    tensor_type = DoubleTensorType if precision == "float64" else FloatTensorType
    options: dict[int, dict[str, Any]] = {}
    if hasattr(est, "predict_proba"):
        options[id(est)] = {"zipmap": False}
    try:
        model = convert_sklearn(
            pipeline,
            initial_types=[("input", tensor_type([None, n_features]))],
            options=options or None,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxExportError(f"skl2onnx cannot convert {type(est).__name__}: {first}") from exc
    if precision == "float64":
        _fix_double_precision_graph(model, est)
    return bytes(model.SerializeToString())


def _fix_double_precision_graph(model: Any, est: Any) -> None:
    """Make a float64 export loadable by ONNX Runtime and exact for HistGradientBoosting.

    ONNX Runtime's tree-ensemble kernels emit float32 scores even for float64 input, while
    skl2onnx declares them float64: add a Cast after each such output. For HGB, replace the
    float32 ``nodes_values`` by the fitted float64 thresholds.
    """
    from onnx import TensorProto, helper, numpy_helper

    new_nodes = []
    changed = False
    for node in model.graph.node:
        new_nodes.append(node)
        if node.op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            continue
        changed = True
        exact = _hgb_exact_thresholds(node, est)
        if exact is not None:
            kept = [a for a in node.attribute if a.name != "nodes_values"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(
                helper.make_attribute(
                    "nodes_values_as_tensor", numpy_helper.from_array(exact, name="nodes_values_as_tensor")
                )
            )
        # score output: index 1 for the classifier (label, probabilities), 0 for the regressor
        idx = 1 if node.op_type == "TreeEnsembleClassifier" else 0
        out = node.output[idx]
        node.output[idx] = out + "_f32"
        new_nodes.append(helper.make_node("Cast", [out + "_f32"], [out], to=TensorProto.DOUBLE))
    if not changed:
        return
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    for opset in model.opset_import:
        if opset.domain == "ai.onnx.ml" and opset.version < 3:
            opset.version = 3  # nodes_values_as_tensor needs ai.onnx.ml >= 3


def _hgb_exact_thresholds(node: Any, est: Any) -> npt.NDArray[np.float64] | None:
    predictors = getattr(est, "_predictors", None)
    if predictors is None:
        return None
    attrs = {a.name: a for a in node.attribute}
    if "nodes_values" not in attrs:
        return None
    tree_ids = list(attrs["nodes_treeids"].ints)
    node_ids = list(attrs["nodes_nodeids"].ints)
    modes = list(attrs["nodes_modes"].strings)
    values = list(attrs["nodes_values"].floats)
    per_iter = len(predictors[0])
    exact = np.zeros(len(values), dtype=np.float64)
    for k, (tree, nid) in enumerate(zip(tree_ids, node_ids, strict=True)):
        if modes[k] == b"LEAF":
            continue
        try:
            threshold = float(predictors[tree // per_iter][tree % per_iter].nodes[nid]["num_threshold"])
        except (IndexError, KeyError, ValueError):
            return None
        # the mapping must reproduce skl2onnx's float32 value, or we do not trust it
        if np.float32(threshold) != np.float32(values[k]):
            log.warning("HGB threshold mapping did not match skl2onnx's export; keeping float32 thresholds")
            return None
        exact[k] = threshold
    return exact


def onnx_predict(
    model_bytes: bytes, X: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[Any] | None, npt.NDArray[np.float64]]:
    """Run the export: (labels or None, scores) where scores are probabilities or regression values."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float64 if "double" in inp.type else np.float32
    outs = sess.run(None, {inp.name: X.astype(dtype)})
    if len(outs) >= 2:
        return np.asarray(outs[0]), np.asarray(outs[1], dtype=np.float64)
    return None, np.asarray(outs[0], dtype=np.float64).reshape(len(X), -1)[:, 0]


def check_parity(
    pipeline: Any,
    model_bytes: bytes,
    X: npt.NDArray[np.float64],
    *,
    score_tolerance: float,
    min_label_agreement: float,
    precision: str,
) -> Parity:
    """Compare the export with the pipeline on every row of ``X``."""
    try:
        labels, scores = onnx_predict(model_bytes, X)
    except Exception as exc:
        raise OnnxExportError(f"ONNX Runtime cannot run the export: {exc}") from exc
    if hasattr(pipeline, "predict_proba") and labels is not None:
        ref = np.asarray(pipeline.predict_proba(X), dtype=np.float64)
        ref_labels = np.asarray(pipeline.predict(X))
        agreement = float(np.mean(labels.reshape(-1) == ref_labels.reshape(-1)))
        diff = float(np.max(np.abs(scores.reshape(ref.shape) - ref))) if len(X) else 0.0
    else:
        ref_values = np.asarray(pipeline.predict(X), dtype=np.float64).reshape(-1)
        agreement = 1.0
        diff = float(np.max(np.abs(scores.reshape(-1) - ref_values))) if len(X) else 0.0
    passed = bool(agreement >= min_label_agreement and diff <= score_tolerance)
    return Parity(
        rows=len(X),
        label_agreement=agreement,
        max_abs_score_diff=diff,
        score_tolerance=score_tolerance,
        min_label_agreement=min_label_agreement,
        precision=precision,
        passed=passed,
    )
