"""Real-Prometheus test kit: deterministic OpenMetrics histories, promtool backfill, a local server.

History samples are computed from per-second rates sampled every ``step`` seconds, so ``increase()``
over an aligned window is exactly ``rate * window`` and every expected value can be written down.
Prometheus is started on 127.0.0.1 with an ephemeral port (never a fixed one) and stopped by the
fixture that started it, always with query limits (:data:`QUERY_LIMITS`): without them one
subquery at a 1 ms resolution grew a test Prometheus past 20 GiB on a shared machine.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

Rate = float | Callable[[float], float]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


def _at(rate: Rate, t: float) -> float:
    return rate(t) if callable(rate) else rate


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class History:
    """Series sampled every ``step`` seconds over each of the ``spans`` ([start, end] pairs).

    Counters keep integrating their rate across the gaps between spans, so only the windows the
    tests query need samples."""

    spans: list[tuple[int, int]]
    step: int = 15
    types: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[tuple[str, list[tuple[float, float]]]]] = field(default_factory=dict)

    @property
    def start(self) -> int:
        return self.spans[0][0]

    def times(self) -> list[int]:
        return sorted({t for start, end in self.spans for t in range(start, end + 1, self.step)})

    def _add(self, family: str, kind: str, sample: str, points: list[tuple[float, float]]) -> None:
        known = self.types.setdefault(family, kind)
        assert known == kind, f"{family} is a {known}"
        self.series.setdefault(family, []).append((sample, points))

    def _integrate(self, rate: Rate) -> list[tuple[float, float]]:
        value, points, previous = 0.0, [], None
        for t in self.times():
            if previous is not None:
                value += _at(rate, previous) * (t - previous)
            points.append((t, value))
            previous = t
        return points

    def counter(self, family: str, labels: Mapping[str, str], rate: Rate) -> None:
        """A counter ``family`` (exposed as ``family_total``) growing at ``rate`` per second."""
        base = family.removesuffix("_total")
        self._add(base, "counter", f"{base}_total{_labels(labels)}", self._integrate(rate))

    def gauge(self, family: str, labels: Mapping[str, str], value: Rate) -> None:
        self._add(family, "gauge", f"{family}{_labels(labels)}", [(t, _at(value, t)) for t in self.times()])

    def histogram(
        self,
        family: str,
        labels: Mapping[str, str],
        rate: Rate,
        cdf: Mapping[float, float] | Callable[[float], Mapping[float, float]],
        mean: float = 0.0,
    ) -> None:
        """Observations at ``rate`` per second; ``cdf`` maps each finite bucket bound to the share of
        observations at or below it (a mapping, or a function of time returning one)."""
        counts = self._integrate(rate)

        def shares_at(t: float) -> Mapping[float, float]:
            return cdf(t) if callable(cdf) else cdf

        # Integrate each bucket's own rate so a cdf that changes over time stays cumulative.
        edges = sorted(shares_at(self.start))
        for le in [*edges, math.inf]:
            points, value, previous = [], 0.0, None
            for t in self.times():
                if previous is not None:
                    share = 1.0 if math.isinf(le) else shares_at(previous)[le]
                    value += _at(rate, previous) * share * (t - previous)
                points.append((t, value))
                previous = t
            bucket_labels = {**labels, "le": "+Inf" if math.isinf(le) else repr(float(le))}
            self._add(family, "histogram", f"{family}_bucket{_labels(bucket_labels)}", points)
        self._add(family, "histogram", f"{family}_count{_labels(labels)}", counts)
        self._add(family, "histogram", f"{family}_sum{_labels(labels)}", [(t, v * mean) for t, v in counts])

    def openmetrics(self) -> str:
        lines: list[str] = []
        for family, entries in self.series.items():
            lines.append(f"# TYPE {family} {self.types[family]}")
            for sample, points in entries:
                lines.extend(f"{sample} {_fmt(v)} {t}" for t, v in points)
        lines.append("# EOF")
        return "\n".join(lines) + "\n"


QUERY_LIMITS: tuple[str, ...] = (
    # Samples one query may hold in memory (Prometheus's default is 50,000,000, ~1.2 GiB measured here
    # for one query); the test histories need a few thousand.
    "--query.max-samples=1000000",
    # Longest evaluation (default 2m); the operator's own timeouts in the tests are a few seconds.
    "--query.timeout=20s",
    # Queries evaluated at once (default 20); the machine has 2 cores.
    "--query.max-concurrency=4",
)


def prometheus_binaries() -> tuple[str, str] | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, promtool) if prometheus and promtool else None


NO_PROMETHEUS = (
    "the prometheus and promtool binaries are not on PATH "
    "(apt-get install -y --no-install-recommends prometheus; CI installs it)"
)


def require_prometheus() -> None:
    """Skip the calling test (only) when the Prometheus binaries are absent."""
    if prometheus_binaries() is None:
        pytest.skip(NO_PROMETHEUS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def backfill(history: History, data_dir: Path) -> None:
    binaries = prometheus_binaries()
    assert binaries is not None
    source = data_dir.parent / f"{data_dir.name}.om"
    source.write_text(history.openmetrics())
    subprocess.run(
        [binaries[1], "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass
class RunningPrometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def run_prometheus(
    work_dir: Path,
    data_dir: Path,
    config: str = "global: {}\n",
    extra_args: tuple[str, ...] = (),
    query_limits: tuple[str, ...] = QUERY_LIMITS,
) -> Iterator[RunningPrometheus]:
    """Start Prometheus on 127.0.0.1:<free port> with ``query_limits`` and stop it on exit."""
    binaries = prometheus_binaries()
    assert binaries is not None
    config_file = work_dir / "prometheus.yml"
    config_file.write_text(config)
    log = work_dir / "prometheus.log"
    for _attempt in range(5):
        port = free_port()
        with log.open("wb") as log_handle:
            process = subprocess.Popen(
                [
                    binaries[0],
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={data_dir}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=100y",
                    *query_limits,
                    *extra_args,
                ],
                stdout=log_handle,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    ready = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        if ready:
            break
        process.terminate()
        process.wait(10)
        if "address already in use" not in log.read_text():
            raise RuntimeError(f"Prometheus did not start:\n{log.read_text()[-3000:]}")
    else:
        raise RuntimeError("no free port for Prometheus after 5 attempts")
    try:
        yield RunningPrometheus(url=url, process=process, log=log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
