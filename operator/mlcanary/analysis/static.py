"""A file-backed metric provider: the small stand-in metrics source for tests and development.

The file is JSON: ``{"<version>": {"<metric name>": 0.01 | {"value": 0.01, "sampleSize": 500}}}``.
It is re-read on every measurement, so a test can change what the operator sees while it runs.
Select it with ``MLCANARY_METRICS_SOURCE=file:/path/to/metrics.json``. Never for production.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from mlcanary.analysis.judge import judge_bounds
from mlcanary.analysis.provider import AnalysisContext
from mlcanary.models import Measurement, Metric, Verdict


class FileMetricProvider:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def measure(self, metric: Metric, context: AnalysisContext, now: datetime) -> Measurement:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            return Measurement(metric=metric.name, verdict=Verdict.ERROR, message=str(error), time=now)
        entry = data.get(context.version, {}).get(metric.name)
        stable_entry = data.get(context.stable_version, {}).get(metric.name)
        value, sample_size = _unpack(entry)
        stable_value, _ = _unpack(stable_entry)
        return judge_bounds(metric, value, now, sample_size=sample_size, stable_value=stable_value)


def _unpack(entry: Any) -> tuple[float | None, int | None]:
    if entry is None:
        return None, None
    if isinstance(entry, dict):
        value = entry.get("value")
        size = entry.get("sampleSize")
        return (float(value) if value is not None else None), (int(size) if size is not None else None)
    return float(entry), None
