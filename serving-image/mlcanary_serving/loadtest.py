"""The load generator of ``spec.loadTest``: ``python -m mlcanary_serving.loadtest --url URL ...``.

Sends an open-loop stream of prediction requests (request *i* is due at ``i / rps`` seconds, whatever
the answers before it did) over ``--concurrency`` keep-alive HTTP/1.1 connections, for ``--warmup``
(not measured) then ``--duration`` (measured), and prints ONE JSON line with what it measured::

    {"requested_rps": 50.0, "achieved_rps": 49.9, "requests": 2994, "errors": 0, "error_rate": 0.0,
     "latency_p50_seconds": ..., "latency_p95_seconds": ..., "latency_p99_seconds": ...,
     "latency_max_seconds": ..., "duration_seconds": 60.0, "concurrency": 8, "skipped": 0,
     "bodies": 32}

The same line goes to ``--termination-log`` (Kubernetes copies that file into the pod's status, where
the operator reads it). It measures and reports; the operator judges. ``achieved_rps`` counts the
requests *answered* inside the measured window: when every connection is busy (the canary is slow
or the machine cannot generate the rate) requests that fall due are skipped and counted, so a
generator that could not produce the load says so instead of passing quietly.

Request bodies: ``{"features": [row]}`` for each row the bundle ships in ``sample.json`` (real
training rows, see ``build_bundle(sample_rows=...)``), in turn. Standard library only: the serving
image installs nothing for it. Latency quantiles come from a log-bucketed histogram (1% wide
buckets), so memory stays bounded whatever the rate and duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import ssl
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_RPS = 10_000.0
MAX_CONCURRENCY = 1000
MAX_SECONDS = 3600.0 + 600.0  # duration (1h) + warmup (10m): the bounds spec.loadTest allows
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
TERMINATION_MESSAGE_BYTES = 4096
_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Latency histogram: bucket k holds latencies in [FLOOR * GROWTH**k, FLOOR * GROWTH**(k+1)).
FLOOR = 1e-5
GROWTH = 1.01
BUCKETS = math.ceil(math.log(600.0 / FLOOR, GROWTH)) + 1


def seconds(text: str) -> float:
    """A Go-style duration ('1m30s', '250ms') in seconds."""
    if not _DURATION.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 1m or 250ms")
    return sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    total: int = 0
    largest: float = 0.0

    def add(self, latency: float) -> None:
        index = 0 if latency <= FLOOR else min(BUCKETS - 1, int(math.log(latency / FLOOR, GROWTH)))
        self.counts[index] += 1
        self.total += 1
        self.largest = max(self.largest, latency)

    def quantile(self, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile (an over- rather than an under-estimate,
        by at most 1%); the largest latency seen caps it."""
        if self.total == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(FLOOR * GROWTH ** (index + 1), self.largest)
        return self.largest


@dataclass
class Tally:
    """What the measured window saw."""

    latencies: Histogram = field(default_factory=Histogram)
    answered: int = 0
    errors: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    tls: bool

    @classmethod
    def parse(cls, url: str, endpoint: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url {url!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path.rstrip("/") + "/" + endpoint.lstrip("/")
        return cls(parts.hostname, port, path, parts.scheme == "https")


class Connection:
    """One keep-alive HTTP/1.1 connection (reopened after an error or a ``Connection: close``)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.head = (
            f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            "Content-Type: application/json\r\nUser-Agent: mlcanary-loadtest\r\n"
        ).encode()

    async def post(self, body: bytes) -> int:
        if self.writer is None:
            context = ssl.create_default_context() if self.target.tls else None
            self.reader, self.writer = await asyncio.open_connection(
                self.target.host, self.target.port, ssl=context
            )
        assert self.reader is not None
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed before an answer")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            if length > MAX_RESPONSE_BYTES:
                raise ConnectionError(f"answer of {length} bytes")
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass(frozen=True)
class Plan:
    rps: float
    concurrency: int
    warmup: float
    duration: float
    timeout: float


async def run(target: Target, bodies: Sequence[bytes], plan: Plan) -> Tally:
    """Send the load; tally answers that arrive inside the measured window."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    start = loop.time()
    measure_from, measure_to = start + plan.warmup, start + plan.warmup + plan.duration

    async def worker() -> None:
        connection = Connection(target)
        try:
            while (body := await queue.get()) is not None:
                # perf_counter for latency: uvloop's loop.time() has millisecond resolution.
                sent = time.perf_counter()
                try:
                    ok = 200 <= await asyncio.wait_for(connection.post(body), plan.timeout) < 300
                except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    connection.close()  # its state is unknown after a failure: start afresh
                    ok = False
                latency = time.perf_counter() - sent
                if measure_from <= loop.time() <= measure_to:
                    tally.answered += 1
                    tally.errors += 0 if ok else 1
                    tally.latencies.add(latency)
        finally:
            connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(plan.concurrency)]
    interval = 1.0 / plan.rps
    index = 0
    while (due := start + index * interval) < measure_to:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # Every connection busy and as many requests already waiting: the generator (or the
        # canary) cannot keep up. Skip and count instead of queueing without bound.
        if queue.qsize() >= plan.concurrency:
            if due >= measure_from:
                tally.skipped += 1
        else:
            queue.put_nowait(bodies[index % len(bodies)])
        index += 1
    # Stop at the end of the window: answers after it are not counted, so do not wait for them.
    while not queue.empty():
        queue.get_nowait()
    for _ in workers:
        queue.put_nowait(None)
    remaining = max(0.0, measure_to - loop.time()) + 0.05
    finished, pending = await asyncio.wait(workers, timeout=remaining)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in finished:  # a bug, not a measurement: fail the run (no result) rather than report it
        if (error := task.exception()) is not None:
            raise error
    return tally


def result(tally: Tally, plan: Plan, bodies: int) -> dict[str, Any]:
    answered = tally.answered
    return {
        "requested_rps": plan.rps,
        "achieved_rps": round(answered / plan.duration, 3),
        "requests": answered,
        "errors": tally.errors,
        "error_rate": round(tally.errors / answered, 6) if answered else 0.0,
        "latency_p50_seconds": round(tally.latencies.quantile(0.50), 6),
        "latency_p95_seconds": round(tally.latencies.quantile(0.95), 6),
        "latency_p99_seconds": round(tally.latencies.quantile(0.99), 6),
        "latency_max_seconds": round(tally.latencies.largest, 6),
        "duration_seconds": plan.duration,
        "concurrency": plan.concurrency,
        "skipped": tally.skipped,
        "bodies": bodies,
    }


def load_bodies(args: argparse.Namespace) -> list[bytes]:
    if args.bodies is not None:
        rows = json.loads(Path(args.bodies).read_text())
        rows = rows.get("rows") if isinstance(rows, dict) else rows
    else:
        from mlcanary_serving.fetch import fetch_bundle

        rows = fetch_bundle(args.bundle, expected_sha256=args.sha256).sample_rows()
    if not isinstance(rows, list) or not rows:
        source = args.bodies or f"the bundle {args.bundle} (no sample.json: build it with sample_rows)"
        raise ValueError(f"no request rows in {source}")
    bodies = []
    for index, item in enumerate(rows):
        if isinstance(item, dict):  # a whole request body (e.g. a batch, or features by name)
            bodies.append(json.dumps(item, separators=(",", ":")).encode())
        elif isinstance(item, list):  # one row of feature values
            bodies.append(json.dumps({"features": [item]}, separators=(",", ":")).encode())
        else:
            raise ValueError(
                f"{args.bodies}: item {index} is neither a row (an array) nor a request (an object)"
            )
    return bodies


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlcanary_serving.loadtest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="base URL of the revision's own Service")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="bundle URI whose sample.json rows are the request bodies")
    source.add_argument(
        "--bodies", help="JSON file: a list of rows or of request objects, or {'rows': [...]}"
    )
    parser.add_argument("--sha256", default=None, help="expected manifest sha256 of the bundle")
    parser.add_argument("--endpoint", default="/predict", help="path under --url (default /predict)")
    parser.add_argument("--rps", type=float, required=True, help=f"requests per second (at most {MAX_RPS:g})")
    parser.add_argument("--concurrency", type=int, default=8, help=f"connections (1-{MAX_CONCURRENCY})")
    parser.add_argument("--duration", type=seconds, default=60.0, help="measured time, e.g. 60s")
    parser.add_argument("--warmup", type=seconds, default=10.0, help="unmeasured time first, e.g. 10s")
    parser.add_argument("--timeout", type=seconds, default=5.0, help="per request, e.g. 5s")
    parser.add_argument("--termination-log", default=None, help="also write the result line here")
    args = parser.parse_args(argv)
    if not 0 < args.rps <= MAX_RPS:
        parser.error(f"--rps must be above 0 and at most {MAX_RPS:g}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be 1 to {MAX_CONCURRENCY}")
    if not args.duration > 0 or args.duration + args.warmup > MAX_SECONDS or not 0 < args.timeout <= 60:
        parser.error("--duration must be positive, with --warmup at most 70m in all; --timeout 0-60s")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        target = Target.parse(args.url, args.endpoint)
        bodies = load_bodies(args)
    except Exception as error:  # a bad URL or bundle: say why (the pod's log, its Failed Job)
        print(f"loadtest: {error}", file=sys.stderr)
        return 2
    plan = Plan(args.rps, args.concurrency, args.warmup, args.duration, args.timeout)
    with contextlib.suppress(ImportError):  # the serving image has uvloop (uvicorn[standard])
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    tally = asyncio.run(run(target, bodies, plan))
    line = json.dumps(result(tally, plan, len(bodies)), separators=(", ", ": "))
    print(line, flush=True)
    if args.termination_log:
        try:
            Path(args.termination_log).write_text(line[:TERMINATION_MESSAGE_BYTES])
        except OSError as error:
            print(f"loadtest: could not write {args.termination_log}: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
