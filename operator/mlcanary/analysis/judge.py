"""Pure verdicts: turn measured numbers into Successful / Failed / Inconclusive.

Missing data (no value, NaN) is never a pass: it is Inconclusive, so a canary that receives no
traffic is never promoted and a thin step is never failed.
"""

from __future__ import annotations

import math
from datetime import datetime

from mlcanary.models import Measurement, Metric, Verdict


def threshold_text(metric: Metric) -> str | None:
    parts = []
    if metric.min is not None:
        parts.append(f">= {metric.min:g}")
    if metric.max is not None:
        parts.append(f"<= {metric.max:g}")
    return " and ".join(parts) or None


def judge_bounds(
    metric: Metric,
    value: float | None,
    now: datetime,
    *,
    sample_size: int | None = None,
    stable_value: float | None = None,
) -> Measurement:
    """Apply ``min``/``max`` (and ``minRequests``) to one value."""

    def measurement(verdict: Verdict, message: str) -> Measurement:
        return Measurement(
            metric=metric.name,
            verdict=verdict,
            value=value if value is not None and math.isfinite(value) else None,
            stable_value=stable_value,
            threshold=threshold_text(metric),
            sample_size=sample_size,
            message=message,
            dry_run=metric.dry_run or None,
            time=now,
        )

    if metric.min_requests is not None and sample_size is not None and sample_size < metric.min_requests:
        return measurement(
            Verdict.INCONCLUSIVE, f"{sample_size} requests, fewer than minRequests {metric.min_requests}"
        )
    if value is None or math.isnan(value):
        return measurement(Verdict.INCONCLUSIVE, "no data")
    if metric.min is not None and value < metric.min:
        return measurement(Verdict.FAILED, f"{value:g} is below min {metric.min:g}")
    if metric.max is not None and value > metric.max:
        return measurement(Verdict.FAILED, f"{value:g} is above max {metric.max:g}")
    return measurement(Verdict.SUCCESSFUL, "within bounds")
