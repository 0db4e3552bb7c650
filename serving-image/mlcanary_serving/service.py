"""Data plane: the loaded model with its validation, batching, metrics, drift and feedback.

Protocol adapters (``app.py``) turn HTTP into calls on ``ModelService``; the service never sees
HTTP. It starts in state ``loading``; ``load()`` fetches and verifies the bundle, loads the
runtime and becomes ``ready``, or ``failed`` with a reason (the process keeps running, unready).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from . import metric_names as mn
from .batching import MicroBatcher
from .bundle.format import Bundle, BundleError
from .drift import WindowDrift
from .faults import FaultInjector
from .fetch import fetch_bundle
from .metrics import DriftCollector, ServingMetrics, ShadowMetrics, exposition, multiprocess_dir, new_registry
from .protocol.errors import InputError
from .protocol.simple import Row
from .protocol.v2 import OutputSpec, output_specs
from .protocol.validator import Validator
from .runtime import Prediction, Runtime, load_runtime
from .settings import Settings

log = logging.getLogger("mlcanary_serving")

__all__ = [
    "Loaded",
    "ModelService",
    "NotReady",
    "Row",
    "finite_rows",
    "new_request_id",
    "refuse_unusable_rows",
]


def finite_rows(pred: Prediction) -> npt.NDArray[np.bool_] | None:
    """Rows whose score (and probabilities) are finite, or None when all are (the usual case: two
    vectorised checks). A finite but extreme input can overflow a model (a linear model's scaler
    turns 1e308 into infinity): such rows are the client's input beyond what the model computes
    with, answered 422, never served as null scores or counted."""
    probabilities = pred.probabilities
    if np.isfinite(pred.scores).all() and (probabilities is None or np.isfinite(probabilities).all()):
        return None
    ok = np.isfinite(pred.scores)
    if probabilities is not None:
        ok &= np.isfinite(probabilities).all(axis=1)
    return ok


def refuse_unusable_rows(computed: Sequence[bool], field: str, indexed: bool) -> None:
    """422 naming the first row the model could not compute a finite answer for (``finite_rows``);
    ``indexed``: the rows are the elements of ``field`` (a batch), so the error names ``field[i]``."""
    for i, ok in enumerate(computed):
        if not ok:
            where = f"{field}[{i}]" if indexed else field
            raise InputError(
                422,
                f"{where}: the model's output for row {i} is not a finite number; its values are beyond "
                "what the model can compute with",
                where,
                "not_finite",
            )


class NotReady(Exception):
    """No verified model is loaded (yet, or the load failed): 503, the pod is unready."""


@dataclass(frozen=True)
class Reference:
    """The shadow phase's second model (the stable's): every row the served model predicts is also
    scored by it, and how often the two agree is exported (``ShadowMetrics``). Its answers are never
    served."""

    runtime: Runtime
    version: str
    columns: npt.NDArray[np.intp] | None  # the served schema's columns in the reference's order
    metrics: ShadowMetrics

    def compare(
        self, X: npt.NDArray[np.float64], labels: Sequence[Any], scores: npt.NDArray[np.float64]
    ) -> None:
        ref = self.runtime.predict(X if self.columns is None else X[:, self.columns])
        agreed = sum(1 for a, b in zip(labels, ref.labels, strict=True) if _same(a, b))
        self.metrics.compare(agreed, np.abs(scores - ref.scores).tolist())


@dataclass(frozen=True)
class Loaded:
    bundle: Bundle
    runtime: Runtime
    name: str
    version: str
    validator: Validator
    metrics: ServingMetrics
    inputs: WindowDrift
    scores: WindowDrift
    outputs: tuple[OutputSpec, ...]  # OIP v2 outputs: what metadata declares and inference returns
    batcher: MicroBatcher[Row] | None
    constant: Row | None  # degenerate-fault answer
    reference: Reference | None = None  # the shadow phase's stable model, when configured


class ModelService:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else new_registry()
        self.state = "loading"
        self.reason = "bundle not loaded yet"
        self.model: Loaded | None = None
        self.faults = FaultInjector(settings.faults)
        self._executor: ThreadPoolExecutor | None = None
        self._feedback: OrderedDict[str, list[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.drift: DriftCollector | None = None

    def scrape(self) -> bytes:
        """The Prometheus text of this process, or of the pod when several workers serve it."""
        return exposition(self.registry, self.drift)

    # ------------------------------------------------------------------ identity for responses
    @property
    def name(self) -> str:
        if self.model:
            return self.model.name
        return self.settings.model_name or "unknown"

    @property
    def version(self) -> str:
        if self.model:
            return self.model.version
        return self.settings.model_version or "unknown"

    @property
    def ready(self) -> bool:
        return self.model is not None

    # ------------------------------------------------------------------------------- loading
    def load(self) -> None:
        """Fetch, verify and load the bundle; on any failure stay unready with a clear log line."""
        s = self.settings
        if not s.bundle_uri:
            self._fail("no bundle given: set --bundle or MLCANARY_BUNDLE_URI")
            return
        try:
            bundle = fetch_bundle(
                s.bundle_uri,
                s.cache_dir,
                expected_sha256=s.expected_sha256,
                timeout=s.fetch_timeout_s,
                retries=s.fetch_retries,
            )
            man = bundle.manifest
            if s.model_version and s.model_version != man.version:
                raise BundleError(
                    f"bundle version {man.version} does not match MLCANARY_MODEL_VERSION={s.model_version}"
                )
            runtime = load_runtime(bundle, s.threads)
            self.model = self._assemble(bundle, runtime)
        except Exception as exc:  # every failure keeps the pod unready, none crashes it
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self.state, self.reason = "ready", ""
        # the model and bundle live for the whole process: keep them out of the GC's scans
        gc.collect()
        gc.freeze()
        m = self.model
        log.info(
            "READY: serving model %s version %s (format %s, %d features, sha256(manifest.json)=%s) from %s",
            m.name,
            m.version,
            m.bundle.manifest.format,
            len(m.validator.names),
            m.bundle.manifest_sha256,
            s.bundle_uri,
        )

    def _load_reference(self, served: Loaded) -> Reference:
        """The reference bundle, verified like the served one. Its features must be the served
        model's (in any order): rows are validated against the served schema only."""
        s = self.settings
        assert s.reference_uri is not None
        bundle = fetch_bundle(
            s.reference_uri,
            s.cache_dir,
            expected_sha256=s.reference_sha256,
            timeout=s.fetch_timeout_s,
            retries=s.fetch_retries,
        )
        man = bundle.manifest
        if s.reference_version and s.reference_version != man.version:
            raise BundleError(
                f"reference bundle version {man.version} does not match MLCANARY_REFERENCE_VERSION="
                f"{s.reference_version}"
            )
        if man.task != served.bundle.manifest.task:
            raise BundleError(
                f"reference bundle is a {man.task} model, the served one a {served.bundle.manifest.task}"
            )
        ours, theirs = list(served.validator.names), list(bundle.schema.names)
        if sorted(ours) != sorted(theirs):
            raise BundleError(
                f"reference bundle's features {theirs} are not the served model's {ours}: rows cannot be compared"
            )
        columns = None if ours == theirs else np.array([ours.index(n) for n in theirs], dtype=np.intp)
        runtime = load_runtime(bundle, s.threads)
        metrics = ShadowMetrics(
            self.registry,
            served.name,
            served.version,
            man.version,
            classifier=man.task == "classification",
        )
        log.info(
            "REFERENCE: scoring every request with %s version %s too (shadow phase)", man.name, man.version
        )
        return Reference(runtime, man.version, columns, metrics)

    def _fail(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        log.error(
            "NOT READY: bundle %s could not be loaded, serving no predictions: %s",
            self.settings.bundle_uri,
            reason,
        )

    def _assemble(self, bundle: Bundle, runtime: Runtime) -> Loaded:
        s = self.settings
        man, ref = bundle.manifest, bundle.reference
        name = s.model_name or man.name
        version = man.version
        names = bundle.schema.names
        score_buckets = (
            mn.PROBABILITY_SCORE_BUCKETS
            if ref.score_kind == "probability"
            else (*ref.score_edges, float("inf"))
        )
        metrics = ServingMetrics(
            self.registry,
            name,
            version,
            fmt=man.format,
            classes=man.classes,
            features=names,
            score_buckets=score_buckets,
        )
        # several workers: each keeps its share of the window, and reads are the pod's (drift.py)
        shared = multiprocess_dir()
        window = -(-s.drift_window // s.workers) if shared else s.drift_window
        inputs = WindowDrift(
            ref.feature_edges,
            ref.feature_proportions,
            window,
            share=os.path.join(shared, "drift-inputs") if shared else None,
        )
        scores = WindowDrift(
            [ref.score_edges],
            [ref.score_proportions],
            window,
            share=os.path.join(shared, "drift-scores") if shared else None,
        )
        self.drift = DriftCollector((name, version), names, inputs, scores, s.drift_min_rows)
        self.registry.register(self.drift)
        validator = Validator(
            bundle.schema,
            s.max_rows,
            reject_out_of_range=s.out_of_range == "reject",
            input_dtype=runtime.input_dtype,
        )
        outputs = output_specs(man.task, man.classes, runtime.has_probabilities or s.faults.degenerate)
        blocking = runtime.format != "onnx"
        if blocking:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        constant = self._constant(man.classes, man.task) if s.faults.degenerate else None
        loaded = Loaded(
            bundle, runtime, name, version, validator, metrics, inputs, scores, outputs, None, constant
        )
        if s.reference_uri:  # before the batcher, which binds the Loaded it calls
            loaded = replace(loaded, reference=self._load_reference(loaded))
        if s.microbatch:
            batcher: MicroBatcher[Row] = MicroBatcher(
                lambda X: self._run_batch(loaded, X),
                max_batch_rows=s.microbatch_max_rows,
                max_wait_s=s.microbatch_max_wait_ms / 1000.0,
                executor=self._executor,
            )
            loaded = replace(loaded, batcher=batcher)
        return loaded

    def _constant(self, classes: Sequence[Any], task: str) -> Row:
        raw = self.settings.faults.degenerate_value
        if task != "classification" or not classes:
            return (float(raw) if raw else 0.0, float(raw) if raw else 0.0, None)
        label = classes[0]
        if raw is not None:
            matches = [c for c in classes if str(c) == raw]
            label = matches[0] if matches else label
        proba = [1.0 if c == label else 0.0 for c in classes]
        score = proba[1] if len(classes) == 2 else 1.0
        return (label, score, proba)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------------------- predicting
    def require(self) -> Loaded:
        if self.model is None:
            raise NotReady(self.reason)
        return self.model

    def _run_batch(self, m: Loaded, X: npt.NDArray[np.float64]) -> list[Row]:
        """One model call for a (micro-)batch, plus every per-row metric."""
        if m.constant is not None:
            rows = [m.constant] * X.shape[0]
            scores = np.full(X.shape[0], m.constant[1])
            labels: list[Any] = [m.constant[0]] * X.shape[0]
        else:
            pred = m.runtime.predict(X)
            scores, labels = pred.scores, pred.labels
            proba = pred.probabilities.tolist() if pred.probabilities is not None else None
            sc = scores.tolist()
            rows = list(zip(labels, sc, proba if proba is not None else repeat(None, len(sc)), strict=True))
            # a finite sum of the plain floats at hand is the cheap proof that every value is finite
            finite = math.isfinite(sum(sc) + (sum(map(sum, proba)) if proba is not None else 0.0))
            ok = None if finite else finite_rows(pred)
            if ok is not None:  # the caller refuses these rows (NaN score); they count in no metric
                rows = [r if k else (r[0], math.nan, None) for r, k in zip(rows, ok.tolist(), strict=True)]
                X, scores = X[ok], scores[ok]
                labels = [lab for lab, k in zip(labels, ok.tolist(), strict=True) if k]
        m.metrics.predictions(labels, scores)
        if m.reference is not None and X.shape[0]:
            m.reference.compare(X, labels, np.asarray(scores, dtype=np.float64))
        m.inputs.update(X)
        m.scores.update(scores.reshape(-1, 1))
        if not m.validator.reject_out_of_range:
            counts = m.validator.out_of_range_counts(X)
            if counts is not None:
                m.metrics.out_of_range_counts(counts)
        return rows

    async def predict(self, X: npt.NDArray[np.float64]) -> list[Row]:
        m = self.require()
        if m.batcher is not None:
            return await m.batcher.submit(X)
        if self._executor is not None:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run_batch, m, X)
        return self._run_batch(m, X)

    # ------------------------------------------------------------------------------ feedback
    def remember(self, request_id: str, labels: list[Any]) -> None:
        cap = self.settings.feedback_cache
        if cap <= 0:
            return
        fb = self._feedback
        fb[request_id] = labels
        if len(fb) > cap:
            fb.popitem(last=False)

    def feedback_for(self, request_id: str, truth: list[Any]) -> list[bool]:
        m = self.require()
        if m.bundle.manifest.task != "classification":
            raise InputError(422, "feedback accuracy is only defined for classifiers", "label", "unsupported")
        served = self._feedback.get(request_id)
        if served is None:
            raise InputError(
                404,
                f"request_id {request_id!r} is unknown or already has feedback (the server keeps the last "
                f"{self.settings.feedback_cache} predictions)",
                "request_id",
                "unknown_request_id",
            )
        if len(truth) != len(served):
            field = "labels" if len(served) > 1 else "label"
            raise InputError(
                422,
                f"{field}: request {request_id} predicted {len(served)} rows, got {len(truth)} labels",
                field,
                "wrong_count",
            )
        result = self.score_feedback(served, truth)
        self._feedback.pop(request_id, None)
        return result

    def score_feedback(self, served: Sequence[Any], truth: Sequence[Any]) -> list[bool]:
        m = self.require()
        classes = m.bundle.manifest.classes
        out = []
        for i, (p, t) in enumerate(zip(served, truth, strict=True)):
            if not any(_same(t, c) for c in classes):
                f = "label" if len(truth) == 1 else f"labels[{i}]"
                raise InputError(
                    422, f"{f}: {t!r} is not one of the model's classes {classes}", f, "unknown_class"
                )
            out.append(_same(p, t))
        for ok in out:
            m.metrics.feedback[ok].inc()
        return out


def _same(a: Any, b: Any) -> bool:
    """Whether a label sent as feedback is this class value (1 == 1.0; "1" == 1; True only True)."""
    if type(a) is bool or type(b) is bool:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b  # exact for ints of any size, and never raises (float(10**400) would)
    return str(a) == str(b)


def new_request_id() -> str:
    return os.urandom(8).hex()
