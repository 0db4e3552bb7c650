"""The metric-provider interface and the analysis round runner.

A provider measures one metric for the revision under test (and, where the metric compares, for
stable) and returns a :class:`~mlcanary.models.Measurement` with a verdict. A provider never raises
for a backend problem: it returns a Measurement with verdict Error, so one broken query cannot stall
the round or the operator.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mlcanary.engine import AnalysisRound
from mlcanary.models import Analysis, Measurement, Metric, Verdict


@dataclass(frozen=True)
class AnalysisContext:
    """What a query is about: one ModelDeployment's canary against its stable revision."""

    name: str  # ModelDeployment name
    namespace: str
    model_name: str
    version: str  # canary version under test
    stable_version: str
    interval: str  # analysis interval, also the query window, e.g. "1m"
    canary_weight: int


class MetricProvider(Protocol):
    """Measures metrics. Implementations: Prometheus (production), file (tests and development)."""

    async def measure(self, metric: Metric, context: AnalysisContext, now: datetime) -> Measurement: ...


async def run_round(
    provider: MetricProvider,
    analysis: Analysis,
    context: AnalysisContext,
    now: datetime,
    timeout_seconds: float = 30.0,
) -> AnalysisRound:
    """Measure every metric concurrently; a metric that raises or times out is recorded as Error."""

    async def one(metric: Metric) -> Measurement:
        try:
            return await asyncio.wait_for(provider.measure(metric, context, now), timeout_seconds)
        except Exception as error:
            return Measurement(
                metric=metric.name,
                verdict=Verdict.ERROR,
                message=f"{type(error).__name__}: {error}"[:300],
                dry_run=metric.dry_run or None,
                time=now,
            )

    measurements = await asyncio.gather(*(one(metric) for metric in analysis.metrics))
    return AnalysisRound(measurements=list(measurements))
