"""The shadow builtins (agreement, scoreDifference) against a real Prometheus over backfilled series
shaped like a canary pod's mlcanary_shadow_* metrics: a good canary, a degenerate one, thin mirrored
traffic, a non-deterministic one saved by its noise floor, and a regressor (no agreed series)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlcanary.analysis import queries as q
from mlcanary.analysis.prometheus import MetricResult, PrometheusProvider
from mlcanary.analysis.provider import AnalysisContext
from mlcanary.gates.shadow import shadow_metrics
from mlcanary.models import BuiltinMetric, Metric, Shadow, Verdict

from .promkit import History, RunningPrometheus, backfill, require_prometheus, run_prometheus

pytestmark = pytest.mark.integration

T0 = 1_735_689_600
T_AT = T0 + 1200
WINDOW = "5m"
S, F, INC, ERR = Verdict.SUCCESSFUL, Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.ERROR

# share of compared rows with |difference| <= edge
SMALL = {0.0: 0.5, 0.01: 0.8, 0.05: 0.97, 0.1: 0.99, 0.5: 1.0, 1.0: 1.0}
LARGE = {0.0: 0.1, 0.01: 0.1, 0.05: 0.15, 0.1: 0.2, 0.5: 0.6, 1.0: 1.0}


def _shadow(h: History, model: str, *, rps: float, agreed: float | None, cdf: dict[float, float]) -> None:
    labels = {q.LABEL_MODEL_NAME: model, q.LABEL_MODEL_VERSION: "v2", q.LABEL_REFERENCE_VERSION: "v1"}
    h.counter(q.SHADOW_COMPARED_TOTAL, labels, rps)
    if agreed is not None:
        h.counter(q.SHADOW_AGREED_TOTAL, labels, rps * agreed)
    h.histogram(q.SHADOW_SCORE_DIFFERENCE, labels, rps, cdf, mean=0.01)


def build() -> History:
    h = History(spans=[(T0, T0 + 60), (T_AT - 600, T_AT + 60)])
    _shadow(h, "good", rps=2.0, agreed=0.99, cdf=SMALL)  # 600 rows per window
    _shadow(h, "degenerate", rps=2.0, agreed=0.6, cdf=LARGE)
    _shadow(h, "thin", rps=0.1, agreed=0.5, cdf=LARGE)  # 30 rows per window
    _shadow(h, "borderline", rps=0.5, agreed=0.93, cdf=SMALL)  # 150 rows, just under 0.95
    _shadow(h, "noisy", rps=2.0, agreed=0.955, cdf=SMALL)  # non-deterministic: 4.5% self-disagreement
    _shadow(h, "regressor", rps=2.0, agreed=None, cdf=SMALL)
    # another reference version's series must not be read
    labels = {q.LABEL_MODEL_NAME: "good", q.LABEL_MODEL_VERSION: "v2", q.LABEL_REFERENCE_VERSION: "v0"}
    h.counter(q.SHADOW_COMPARED_TOTAL, labels, 50.0)
    return h


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    require_prometheus()
    work: Path = tmp_path_factory.mktemp("prometheus-shadow")
    backfill(build(), work / "data")
    with run_prometheus(work, work / "data") as server:
        yield server


def measure(prom: RunningPrometheus, model: str, metric: Metric) -> MetricResult:
    now = datetime.fromtimestamp(T_AT, UTC)
    context = AnalysisContext(
        name=model, namespace="default", model_name=model, version="v2", stable_version="v1",
        interval=WINDOW, canary_weight=0,
    )  # fmt: skip
    provider = PrometheusProvider(prom.url, at=now, timeout_seconds=10)
    return asyncio.run(provider.measure_detailed(metric, context, now))


AGREEMENT = Metric(name="a", builtin=BuiltinMetric.AGREEMENT, min=0.95, min_requests=100)
STRICT = Metric(name="a", builtin=BuiltinMetric.AGREEMENT, min=0.99, min_requests=100)
NOISY = Metric(name="a", builtin=BuiltinMetric.AGREEMENT, min=0.99, tolerance=0.05, min_requests=100)
DIFFERENCE = Metric(
    name="d", builtin=BuiltinMetric.SCORE_DIFFERENCE, max=0.1, quantile=0.95, min_requests=100
)


@pytest.mark.parametrize(
    ("model", "metric", "verdict", "value", "sample"),
    [
        ("good", AGREEMENT, S, 0.99, 600),
        ("degenerate", AGREEMENT, F, 0.6, 600),
        ("thin", AGREEMENT, INC, 0.5, 30),  # fewer than minSamples
        ("borderline", AGREEMENT, INC, 0.93, 150),  # below the bound, within sampling noise
        ("noisy", STRICT, F, 0.955, 600),
        ("noisy", NOISY, S, 0.955, 600),  # the noise floor: bound 0.99 - 0.05
        ("regressor", AGREEMENT, ERR, None, 600),
        ("good", DIFFERENCE, S, None, 600),
        ("degenerate", DIFFERENCE, F, None, 600),
        ("thin", DIFFERENCE, INC, None, 30),
        ("regressor", DIFFERENCE, S, None, 600),
    ],
)
def test_shadow_builtin_verdicts(
    prom: RunningPrometheus, model: str, metric: Metric, verdict: Verdict, value: float | None, sample: int
) -> None:
    result = measure(prom, model, metric)
    out = result.measurement
    assert out.verdict == verdict, (out.message, [r.describe() for r in result.results])
    if value is not None:
        assert out.value == pytest.approx(value, abs=1e-6)
    assert out.sample_size == sample
    assert all(r.error is None for r in result.results)


def test_score_difference_quantile_is_read_from_the_histogram(prom: RunningPrometheus) -> None:
    good = measure(prom, "good", DIFFERENCE).measurement
    bad = measure(prom, "degenerate", DIFFERENCE).measurement
    assert good.value is not None and 0.01 < good.value <= 0.1  # q0.95 lies in the (0.01, 0.05] bucket
    assert bad.value is not None and bad.value > 0.5
    assert "above 0.1" in (bad.message or "")


def test_the_gate_metrics_built_from_spec_shadow_judge_the_degenerate_canary(prom: RunningPrometheus) -> None:
    shadow = Shadow.model_validate(
        {"minSamples": 200, "agreement": {"min": 0.95}, "scoreDifference": {"max": 0.1}}
    )
    verdicts = {m.builtin: measure(prom, "degenerate", m).measurement.verdict for m in shadow_metrics(shadow)}
    assert verdicts == {BuiltinMetric.AGREEMENT: F, BuiltinMetric.SCORE_DIFFERENCE: F}
    verdicts = {m.builtin: measure(prom, "thin", m).measurement.verdict for m in shadow_metrics(shadow)}
    assert verdicts == {BuiltinMetric.AGREEMENT: INC, BuiltinMetric.SCORE_DIFFERENCE: INC}
