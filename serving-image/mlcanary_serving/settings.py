"""Server settings: command-line flags first, then environment variables, then defaults.

The operator configures pods through the environment (``MLCANARY_BUNDLE_URI``,
``MLCANARY_MODEL_NAME``, ``MLCANARY_MODEL_VERSION``, ``MLCANARY_BUNDLE_SHA256``, ``PORT``); every
knob is listed in ``ENV_VARS`` and documented in docs/serving.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .faults import Faults

ENV_VARS: dict[str, str] = {
    "MLCANARY_BUNDLE_URI": "bundle to serve: directory, archive, file://, http(s)://, s3:// (--bundle)",
    "MLCANARY_BUNDLE_SHA256": "expected sha256 of the bundle's manifest.json (--expected-sha256)",
    "MLCANARY_MODEL_NAME": "name served and used in metric labels (default: the manifest's name)",
    "MLCANARY_MODEL_VERSION": "expected version; the pod stays unready if the manifest disagrees",
    "MLCANARY_REFERENCE_BUNDLE_URI": "shadow phase: a second bundle (the stable's) scored on every request "
    "beside the served one, exporting mlcanary_shadow_* (set by the operator while a shadow phase is ahead)",
    "MLCANARY_REFERENCE_BUNDLE_SHA256": "expected sha256 of the reference bundle's manifest.json",
    "MLCANARY_REFERENCE_VERSION": "expected version of the reference bundle (the reference_version label)",
    "MLCANARY_HOST": "listen address (default 127.0.0.1; the image sets 0.0.0.0) (--host)",
    "PORT": "listen port (default 8080) (--port)",
    "MLCANARY_MAX_BODY_BYTES": "largest accepted request body, else 413 (default 1048576)",
    "MLCANARY_MAX_ROWS": "largest batch in one request, else 422 (default 1000)",
    "MLCANARY_OUT_OF_RANGE": "'count' (default) or 'reject' (422) for values outside the schema range",
    "MLCANARY_MICROBATCH": "1 (default) to batch concurrent requests into one model call, 0 to disable",
    "MLCANARY_MICROBATCH_MAX_ROWS": "largest micro-batch (default 64)",
    "MLCANARY_MICROBATCH_MAX_WAIT_MS": "longest wait for more rows (default 0: batch what is ready now)",
    "MLCANARY_DRIFT_WINDOW": "rows in the drift sliding window (default 1000)",
    "MLCANARY_DRIFT_MIN_ROWS": "rows needed before PSI gauges are exported (default 100)",
    "MLCANARY_FEEDBACK_CACHE": "recent request ids kept for POST /feedback (default 100000)",
    "MLCANARY_THREADS": "model threads per worker (default: CPUs available to the process, cgroup quota "
    "included, divided among the workers)",
    "MLCANARY_WORKERS": "server processes sharing the port (default 1; the operator sets it from the pod's CPU "
    "limit); metrics and drift windows are the pod's totals, kept in PROMETHEUS_MULTIPROC_DIR "
    "(default $TMPDIR/mlcanary-metrics-<pid>)",
    "MLCANARY_CACHE_DIR": "where fetched bundles are unpacked (default $TMPDIR/mlcanary-bundles)",
    "MLCANARY_FETCH_RETRIES": "retries of a failed download (default 3; integrity failures never retry)",
    "MLCANARY_FETCH_TIMEOUT_S": "timeout of one download request (default 30)",
    "MLCANARY_ACCESS_LOG": "1 to enable uvicorn's per-request access log (default 0: metrics instead)",
    "MLCANARY_LOG_LEVEL": "log level (default info)",
    "MLCANARY_FAULT_ERROR_RATE": "fault injection: share of prediction requests answered with 500",
    "MLCANARY_FAULT_LATENCY_MS": "fault injection: latency added to every prediction request",
    "MLCANARY_FAULT_LATENCY_JITTER_MS": "fault injection: extra uniform random latency 0..J ms",
    "MLCANARY_FAULT_DEGENERATE": "fault injection: 1 = constant prediction with HTTP 200",
    "MLCANARY_FAULT_DEGENERATE_VALUE": "fault injection: the constant label/value (default: first class)",
    "MLCANARY_FAULT_SEED": "fault injection: seed of the error-rate dice",
}


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    bundle_uri: str | None = None
    expected_sha256: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    reference_uri: str | None = None
    reference_sha256: str | None = None
    reference_version: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1 << 20
    max_rows: int = 1000
    out_of_range: Literal["count", "reject"] = "count"
    microbatch: bool = True
    microbatch_max_rows: int = 64
    microbatch_max_wait_ms: float = 0.0
    drift_window: int = 1000
    drift_min_rows: int = 100
    feedback_cache: int = 100_000
    threads: int | None = None
    workers: int = 1
    cache_dir: str | None = None
    fetch_retries: int = 3
    fetch_timeout_s: float = 30.0
    access_log: bool = False
    log_level: str = "info"
    faults: Faults = field(default_factory=Faults)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env

        def get(key: str) -> str | None:
            v = env.get(key)
            return v.strip() if v and v.strip() else None

        def integer(key: str, default: int, lo: int = 0) -> int:
            raw = get(key)
            if raw is None:
                return default
            try:
                v = int(raw)
            except ValueError as exc:
                raise SettingsError(f"{key}={raw!r} is not an integer") from exc
            if v < lo:
                raise SettingsError(f"{key}={raw!r} must be >= {lo}")
            return v

        def number(key: str, default: float) -> float:
            raw = get(key)
            if raw is None:
                return default
            try:
                v = float(raw)
            except ValueError as exc:
                raise SettingsError(f"{key}={raw!r} is not a number") from exc
            if not v >= 0:
                raise SettingsError(f"{key}={raw!r} must be >= 0")
            return v

        def flag(key: str, default: bool) -> bool:
            raw = get(key)
            return default if raw is None else raw.lower() in ("1", "true", "yes", "on")

        oor = (get("MLCANARY_OUT_OF_RANGE") or "count").lower()
        if oor not in ("count", "reject"):
            raise SettingsError(f"MLCANARY_OUT_OF_RANGE={oor!r}: use 'count' or 'reject'")
        threads = get("MLCANARY_THREADS")
        s = cls(
            bundle_uri=get("MLCANARY_BUNDLE_URI"),
            expected_sha256=get("MLCANARY_BUNDLE_SHA256"),
            model_name=get("MLCANARY_MODEL_NAME"),
            model_version=get("MLCANARY_MODEL_VERSION"),
            reference_uri=get("MLCANARY_REFERENCE_BUNDLE_URI"),
            reference_sha256=get("MLCANARY_REFERENCE_BUNDLE_SHA256"),
            reference_version=get("MLCANARY_REFERENCE_VERSION"),
            host=get("MLCANARY_HOST") or "127.0.0.1",
            port=integer("PORT", 8080),
            max_body_bytes=integer("MLCANARY_MAX_BODY_BYTES", 1 << 20, 1),
            max_rows=integer("MLCANARY_MAX_ROWS", 1000, 1),
            out_of_range="reject" if oor == "reject" else "count",
            microbatch=flag("MLCANARY_MICROBATCH", True),
            microbatch_max_rows=integer("MLCANARY_MICROBATCH_MAX_ROWS", 64, 1),
            microbatch_max_wait_ms=number("MLCANARY_MICROBATCH_MAX_WAIT_MS", 0.0),
            drift_window=integer("MLCANARY_DRIFT_WINDOW", 1000, 1),
            drift_min_rows=integer("MLCANARY_DRIFT_MIN_ROWS", 100, 1),
            feedback_cache=integer("MLCANARY_FEEDBACK_CACHE", 100_000, 0),
            threads=integer("MLCANARY_THREADS", 1, 1) if threads else None,
            workers=integer("MLCANARY_WORKERS", 1, 1),
            cache_dir=get("MLCANARY_CACHE_DIR"),
            fetch_retries=integer("MLCANARY_FETCH_RETRIES", 3),
            fetch_timeout_s=number("MLCANARY_FETCH_TIMEOUT_S", 30.0),
            access_log=flag("MLCANARY_ACCESS_LOG", False),
            log_level=(get("MLCANARY_LOG_LEVEL") or "info").lower(),
            faults=Faults.from_env(env),
        )
        return replace(s, **{k: v for k, v in overrides.items() if v is not None})
