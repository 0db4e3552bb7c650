"""A fixed-rate load generator: real rows of scikit-learn's breast_cancer data sent to ``/predict``.

Open loop: requests start on a fixed schedule whatever the latency (a slow server does not slow the
offered load), with a cap on requests in flight. Every request is recorded as one CSV line —
``t,latency_ms,status,version,pod`` (send time in Unix seconds, 0 status = no answer, the
``X-Model-Version`` and ``X-Mlcanary-Pod`` response headers) — which the demo's figures and the
benchmark read back.

Run as ``python -m mlcanary_local.loadgen --url http://127.0.0.1:P/ns/name/predict --rate 50 --out F``
(it stops on SIGTERM/SIGINT or after ``--duration`` seconds).

``--log-rows F`` also keeps the most recent rows it sent, with their true label (breast_cancer's
target: the "ground truth that arrives later" of a real system), as a CSV with the feature names and
``label`` as header: the "recent data the stack logged" that a retraining job learns from
(``examples/retraining/train.py``). The file holds at most ``--log-rows-max`` rows (older ones are
dropped), rewritten whole at each flush so a reader never sees a half-written file.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

FIELDS = ("t", "latency_ms", "status", "version", "pod")


@dataclass(frozen=True)
class Record:
    t: float
    latency_ms: float
    status: int
    version: str
    pod: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def demo_rows() -> list[list[float]]:
    return demo_dataset()[0]


def demo_dataset() -> tuple[list[list[float]], list[int], list[str]]:
    """breast_cancer's rows, labels and feature names."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rows = [[float(v) for v in row] for row in data.data]
    return rows, [int(t) for t in data.target], [str(n) for n in data.feature_names]


class RowLog:
    """The most recent rows sent, with their labels, kept as a CSV (see the module docstring)."""

    def __init__(self, path: Path, feature_names: list[str], max_rows: int) -> None:
        self.path = path
        self.header = [*feature_names, "label"]
        self.rows: deque[tuple[list[float], int]] = deque(maxlen=max_rows)
        self.dirty = False

    def add(self, row: list[float], label: int) -> None:
        self.rows.append((row, label))
        self.dirty = True

    def flush(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.header)
            for row, label in self.rows:
                writer.writerow([*row, label])
        tmp.replace(self.path)


def read_records(path: Path) -> list[Record]:
    if not path.exists():
        return []
    records = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            try:
                records.append(
                    Record(
                        float(row["t"]),
                        float(row["latency_ms"]),
                        int(row["status"]),
                        row.get("version") or "",
                        row.get("pod") or "",
                    )
                )
            except (TypeError, ValueError, KeyError):
                continue  # a line being written while read
    return records


class LoadGenerator:
    def __init__(
        self,
        url: str,
        rate: float,
        out: Path,
        max_in_flight: int = 256,
        shift: float = 1.0,
        seed: int = 0,
        row_log: Path | None = None,
        row_log_max: int = 5000,
        append: bool = False,
    ) -> None:
        self.url = url
        self.rate = rate
        self.out = out
        self.max_in_flight = max_in_flight
        self.shift = shift
        self.random = random.Random(seed)  # which row to send: not security relevant
        self.in_flight = 0
        self.sent = 0
        self._buffer: list[Record] = []
        self.rows: list[list[float]] = []
        self.labels: list[int] = []
        self.row_log_path = row_log
        self.row_log_max = row_log_max
        self.row_log: RowLog | None = None
        self.append = append  # continue an existing request log (a restarted generator, new settings)

    def bodies(self) -> Iterator[bytes]:
        if not self.rows:
            self.rows, self.labels, _ = demo_dataset()
        rows = self.rows
        while True:
            i = self.random.randrange(len(rows))
            row = rows[i]
            if self.shift != 1.0:
                row = [v * self.shift for v in row]
            if self.row_log is not None:
                self.row_log.add(row, self.labels[i])
            yield json.dumps({"features": row}).encode()

    async def run(self, stop: asyncio.Event, duration: float | None = None) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if not self.rows:  # before the clock starts: loading scikit-learn takes a second
            self.rows, self.labels, names = demo_dataset()
            if self.row_log_path is not None:
                self.row_log = RowLog(self.row_log_path, names, self.row_log_max)
        bodies = self.bodies()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=30)
        continuing = self.append and self.out.exists() and self.out.stat().st_size > 0
        with self.out.open("a" if continuing else "w", newline="") as handle:
            if not continuing:
                csv.writer(handle).writerow(FIELDS)
            handle.flush()
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                flusher = asyncio.create_task(self._flush_every(handle, 0.5))
                tasks: set[asyncio.Task[None]] = set()
                start = time.monotonic()
                period = 1.0 / self.rate
                i = 0
                try:
                    while not stop.is_set():
                        now = time.monotonic()
                        if duration is not None and now - start >= duration:
                            break
                        due = start + i * period
                        if now - due > 1.0:
                            # More than a second behind (the machine stalled): skip ahead instead of
                            # sending the backlog as one burst, which would measure the burst.
                            i = int((now - start) / period)
                            due = start + i * period
                        if due > now:
                            try:
                                await asyncio.wait_for(stop.wait(), due - now)
                                break
                            except TimeoutError:
                                pass
                        i += 1
                        if self.in_flight >= self.max_in_flight:
                            self._buffer.append(Record(time.time(), 0.0, -1, "", ""))  # dropped
                            continue
                        task = asyncio.create_task(self._one(session, next(bodies)))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    if tasks:
                        await asyncio.wait(tasks, timeout=10)
                finally:
                    flusher.cancel()
                    self._flush(handle)

    async def _one(self, session: aiohttp.ClientSession, body: bytes) -> None:
        self.in_flight += 1
        self.sent += 1
        sent_at = time.time()
        started = time.perf_counter()
        status, version, pod = 0, "", ""
        try:
            async with session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                status = resp.status
                version = resp.headers.get("X-Model-Version", "")
                pod = resp.headers.get("X-Mlcanary-Pod", "")
        except (aiohttp.ClientError, TimeoutError, OSError):
            status = 0
        finally:
            self.in_flight -= 1
        latency = (time.perf_counter() - started) * 1000
        self._buffer.append(Record(sent_at, latency, status, version, pod))

    def _flush(self, handle: IO[str]) -> None:
        if self.row_log is not None:
            self.row_log.flush()
        if not self._buffer:
            return
        records, self._buffer = self._buffer, []
        writer = csv.writer(handle)
        for r in sorted(records, key=lambda r: r.t):
            writer.writerow((f"{r.t:.4f}", f"{r.latency_ms:.2f}", r.status, r.version, r.pod))
        handle.flush()

    async def _flush_every(self, handle: IO[str], seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self._flush(handle)


async def amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    generator = LoadGenerator(
        args.url,
        args.rate,
        Path(args.out),
        shift=args.shift,
        seed=args.seed,
        row_log=Path(args.log_rows) if args.log_rows else None,
        row_log_max=args.log_rows_max,
        append=args.append,
    )
    await generator.run(stop, args.duration)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcanary_local.loadgen", description=__doc__)
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:PORT/NAMESPACE/NAME/predict")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--out", required=True, help="CSV file of every request")
    parser.add_argument("--duration", type=float, help="seconds (default: until SIGTERM)")
    parser.add_argument("--shift", type=float, default=1.0, help="multiply every feature (input drift)")
    parser.add_argument("--log-rows", help="CSV of the most recent rows sent, with their true labels")
    parser.add_argument("--log-rows-max", type=int, default=5000, help="rows kept in --log-rows")
    parser.add_argument("--append", action="store_true", help="continue --out instead of starting it afresh")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
