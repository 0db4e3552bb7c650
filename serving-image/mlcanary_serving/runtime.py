"""Model runtimes: turn a float matrix into labels and scores. No HTTP, no metrics here.

``OnnxRuntime`` (preferred: loading runs no code) and ``SklearnRuntime`` (joblib, unpickled only
after its sha256 matched the verified manifest). Both return a ``Prediction`` with one entry per
row; classification labels are the bundle's class values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .bundle.format import Bundle
from .bundle.read import load_joblib_verified, read_verified_artifact
from .cpus import available_cpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    labels: list[Any]  # class value per row (classification) or float (regression)
    scores: npt.NDArray[np.float64]  # score per row: P(positive) / P(predicted class) / y_hat
    probabilities: npt.NDArray[np.float64] | None  # (rows, classes) or None for regression


class Runtime(Protocol):
    format: str
    has_probabilities: bool  # classification with a probability per class (the `probabilities` output)
    input_dtype: type[np.floating[Any]]  # the precision the model computes in

    def predict(self, X: npt.NDArray[np.float64]) -> Prediction: ...


def _from_proba(
    proba: npt.NDArray[np.float64], classes: list[Any], labels: list[Any] | None = None
) -> Prediction:
    if labels is None:
        idx = proba.argmax(axis=1)
        labels = [classes[i] for i in idx]
    scores = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
    return Prediction(labels, np.ascontiguousarray(scores, dtype=np.float64), proba)


class OnnxRuntime:
    format = "onnx"

    def __init__(self, bundle: Bundle, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        # ORT sizes its pools from the machine's cores, not from the CPUs this process was given;
        # a spinning worker then fights the event loop for the core (see docs/serving.md).
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        data = read_verified_artifact(bundle)  # hash exactly the bytes we load
        self.session = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self.input_dtype: type[np.floating[Any]] = np.float64 if "double" in inp.type else np.float32
        self.classes = bundle.manifest.classes
        self.classification = bundle.manifest.task == "classification"
        self.has_probabilities = self.classification
        # ONNX label tensors are int64 or strings; answer with the manifest's class values (and
        # so their JSON type), which is what the metadata endpoint declares
        self._class_value = {c: c for c in self.classes}
        # int classes come back from the int64 label tensor as exactly these values: nothing to map
        self._labels_are_classes = bool(self.classes) and all(type(c) is int for c in self.classes)
        # the session's own run() re-validates the feed's names and ownership on every call (a few
        # microseconds a request): call the binding under it with the names fixed here, when present
        self._output_names = [o.name for o in self.session.get_outputs()]
        binding = getattr(self.session, "_sess", None)
        self._run: Any = binding.run if binding is not None and hasattr(binding, "run") else self.session.run

    def predict(self, X: npt.NDArray[np.float64]) -> Prediction:
        x = X if X.dtype == self.input_dtype else X.astype(self.input_dtype)
        outs = self._run(self._output_names, {self.input_name: x}, None)
        if self.classification:
            proba = np.asarray(outs[1], dtype=np.float64)
            raw = np.asarray(outs[0]).reshape(-1).tolist()  # plain Python values, in C
            labels = raw if self._labels_are_classes else [self._class_value.get(v, v) for v in raw]
            return _from_proba(proba, self.classes, labels)
        y = np.asarray(outs[0], dtype=np.float64).reshape(len(X), -1)[:, 0]
        return Prediction([float(v) for v in y], y, None)


class SklearnRuntime:
    format = "joblib"
    input_dtype: type[np.floating[Any]] = np.float64

    def __init__(self, bundle: Bundle) -> None:
        self.model = load_joblib_verified(bundle)
        self.classes = bundle.manifest.classes
        self.has_probabilities = (
            hasattr(self.model, "predict_proba") and bundle.manifest.task == "classification"
        )

    def predict(self, X: npt.NDArray[np.float64]) -> Prediction:
        if self.has_probabilities:
            # one model call: labels from argmax of the probabilities (what predict() does)
            proba = np.asarray(self.model.predict_proba(X), dtype=np.float64)
            return _from_proba(proba, self.classes)
        y = np.asarray(self.model.predict(X))
        if self.classes:
            labels = [v.item() if isinstance(v, np.generic) else v for v in y]
            scores = np.asarray(
                [float(self.classes.index(v)) if v in self.classes else 0.0 for v in labels], dtype=np.float64
            )
            return Prediction(labels, scores, None)
        yf = y.astype(np.float64).reshape(-1)
        return Prediction([float(v) for v in yf], yf, None)


def load_runtime(bundle: Bundle, threads: int | None = None) -> Runtime:
    """Load the bundle's model with the runtime its format needs (the bundle is already verified)."""
    n = threads or available_cpus()
    if bundle.manifest.format == "onnx":
        return OnnxRuntime(bundle, n)
    return SklearnRuntime(bundle)
