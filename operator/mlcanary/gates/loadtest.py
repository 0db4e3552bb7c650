"""The load test gate (``spec.loadTest``): its Job's name, and the verdict on what the Job reported.

Pure: the shell observes the Job and its pod's termination message (:class:`JobObservation`), the
engine asks :func:`judge` for a verdict and records it in ``status.loadTest``. A verdict names the
value and the bound, so a rollback's reason says what the canary did wrong.

Result line (one JSON object, written by ``python -m mlcanary_serving.loadtest``)::

    {"requested_rps": 50.0, "achieved_rps": 49.6, "requests": 2976, "errors": 0, "error_rate": 0.0,
     "latency_p50_seconds": 0.004, "latency_p95_seconds": 0.009, "latency_p99_seconds": 0.015,
     "latency_max_seconds": 0.04, "duration_seconds": 60.0, "concurrency": 8}
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from mlcanary.durations import parse_duration
from mlcanary.models import LoadTest, LoadTestPhase, LoadTestStatus, Measurement
from mlcanary.models import Verdict as MetricVerdict

JOB_SUFFIX = "-lt-"
MAX_RESULT_BYTES = 4096  # a container's termination message is capped at 4 KiB
RESULT_FIELDS = (
    "requested_rps",
    "achieved_rps",
    "requests",
    "errors",
    "error_rate",
    "latency_p50_seconds",
    "latency_p95_seconds",
    "latency_p99_seconds",
    "latency_max_seconds",
    "duration_seconds",
)
# rpsFromStable: the round that measures the stable's rate, and how soon a round without it is retried.
STABLE_RATE_METRIC = "stableRequestRate"
STABLE_RATE_RETRY = timedelta(seconds=10)
# Time allowed beyond warmup + duration for the pod to start and report (image pull, scheduling).
START_ALLOWANCE_SECONDS = 120


@dataclass(frozen=True)
class JobObservation:
    """The load test Job as the shell sees it. ``outcome``: None while it runs. ``result``: the JSON
    the generator reported (its pod's termination message), once there is one."""

    name: str
    outcome: Literal["Complete", "Failed"] | None = None
    reason: str = ""
    result: Mapping[str, float] | None = None


def job_name(revision: str, started_at: datetime) -> str:
    """One Job per rollout of a revision (a retried version runs a fresh one): a DNS-1123 label."""
    tag = hashlib.sha256(f"{revision}/{started_at.isoformat()}".encode()).hexdigest()[:6]
    return f"{revision[: 63 - len(JOB_SUFFIX) - len(tag)].rstrip('-')}{JOB_SUFFIX}{tag}"


def parse_result(text: str) -> dict[str, float] | None:
    """The generator's result from its output: the last line that is a JSON object carrying the
    result fields, every one a finite number. None when there is none (a crash, a user template)."""
    for line in reversed(text[-MAX_RESULT_BYTES:].strip().splitlines()):
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if not isinstance(raw, dict):
            continue
        values: dict[str, float] = {}
        for key in RESULT_FIELDS:
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                break
            values[key] = float(value)
        else:
            return values
    return None


@dataclass(frozen=True)
class Verdict:
    phase: LoadTestPhase
    message: str


def stable_rate(measurements: list[Measurement] | None, window: str) -> float | None:
    """The stable's requests per second from its rate round: the errorRate query's request count
    over ``window`` (its sample size) divided by the window; no series is no request (0). None when
    the query failed (Prometheus unreachable: ask again rather than guess)."""
    if measurements is None:
        return None
    for measurement in measurements:
        if measurement.metric == STABLE_RATE_METRIC and measurement.verdict != MetricVerdict.ERROR:
            return (measurement.sample_size or 0) / parse_duration(window).total_seconds()
    return None


def deadline_seconds(spec: LoadTest, progress_deadline: str) -> float:
    """How long after it was requested the Job may take to report: its run plus the progress
    deadline (pods still have to start)."""
    return spec.measured_seconds() + parse_duration(progress_deadline).total_seconds()


def active_deadline_seconds(spec: LoadTest) -> int:
    """The Job's own bound (activeDeadlineSeconds): it never outlives its verdict for long."""
    return math.ceil(spec.measured_seconds()) + START_ALLOWANCE_SECONDS


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def judge(spec: LoadTest, job: JobObservation) -> Verdict | None:
    """The verdict on a Job, or None while it runs without a result.

    Built-in generator: measured violations fail (errors, then p95, then p99); otherwise too few
    requests or a rate under ``minAchievedRatio`` of the requested one is Inconclusive (never a
    pass); otherwise it passes. A user jobTemplate passes when its Job completes."""
    if spec.job_template is not None:
        if job.outcome == "Complete":
            return Verdict(LoadTestPhase.PASSED, f"Job {job.name} completed (exit code 0)")
        if job.outcome == "Failed":
            return Verdict(LoadTestPhase.FAILED, f"Job {job.name} failed ({job.reason or 'non-zero exit'})")
        return None
    result = job.result
    if result is None:
        if job.outcome is None:
            return None
        return Verdict(
            LoadTestPhase.INCONCLUSIVE,
            f"the load generator Job {job.name} ended ({job.outcome}"
            f"{': ' + job.reason if job.reason else ''}) without reporting a result",
        )
    slo = spec.slo
    requests = int(result["requests"])
    error_rate = result["error_rate"]
    if requests >= slo.min_requests and error_rate > slo.max_error_rate:
        return Verdict(
            LoadTestPhase.FAILED,
            f"error rate {error_rate:.4g} above maxErrorRate {slo.max_error_rate:g} "
            f"({int(result['errors'])} of {requests} requests)",
        )
    for name, key, bound in (
        ("p95", "latency_p95_seconds", slo.max_latency_p95),
        ("p99", "latency_p99_seconds", slo.max_latency_p99),
    ):
        if bound is None or requests < slo.min_requests:
            continue
        limit = parse_duration(bound).total_seconds()
        if result[key] > limit:
            return Verdict(
                LoadTestPhase.FAILED,
                f"{name} latency {_ms(result[key])} above maxLatency{name.upper()} {bound} "
                f"at {result['achieved_rps']:.1f} rps",
            )
    if requests < slo.min_requests:
        return Verdict(
            LoadTestPhase.INCONCLUSIVE,
            f"{requests} requests measured, fewer than minRequests {slo.min_requests}",
        )
    requested = result["requested_rps"]
    ratio = result["achieved_rps"] / requested if requested > 0 else 0.0
    if ratio < slo.min_achieved_ratio:
        return Verdict(
            LoadTestPhase.INCONCLUSIVE,
            f"achieved {result['achieved_rps']:.1f} of {requested:g} rps (ratio {ratio:.3f} under "
            f"minAchievedRatio {slo.min_achieved_ratio:g}): the generator did not produce the load",
        )
    return Verdict(
        LoadTestPhase.PASSED,
        f"{result['achieved_rps']:.1f} rps, p95 {_ms(result['latency_p95_seconds'])}, p99 "
        f"{_ms(result['latency_p99_seconds'])}, error rate {error_rate:.4g}",
    )


def record(status: LoadTestStatus, verdict: Verdict, result: Mapping[str, Any] | None, now: datetime) -> None:
    """Write the verdict and the measured values into ``status`` (in place)."""
    status.phase = verdict.phase
    status.message = verdict.message
    status.finished_at = now
    if result is not None:
        status.requested_rps = float(result["requested_rps"])
        status.achieved_rps = float(result["achieved_rps"])
        status.requests = int(result["requests"])
        status.error_rate = float(result["error_rate"])
        status.latency_p95_seconds = float(result["latency_p95_seconds"])
        status.latency_p99_seconds = float(result["latency_p99_seconds"])
