"""Prometheus memory under the issue's query, with and without query limits (issue 11 item 5).

    .venv/bin/python -m tests.analysis.bench_query_limits [--series 1000] [--concurrent 3]

Backfills ``--series`` counters over two hours, starts a real Prometheus twice on the same data --
with its defaults (no limits) and with the limits docs/analysis.md recommends -- and sends the query
that grew a shared Prometheus to 2.5 GiB, once alone and ``--concurrent`` times at once (what rounds
repeated every interval do). Prints the peak RSS of Prometheus, the time to the answer and the
answer. A watchdog kills Prometheus above ``--kill-above-mib`` (the machine is shared).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .promkit import History, RunningPrometheus, backfill, require_prometheus, run_prometheus

ISSUE_QUERY = 'count(count_over_time({__name__=~".+"}[30m:1ms]))'
RECOMMENDED = ("--query.max-samples=5000000", "--query.timeout=30s", "--query.max-concurrency=4")
T0 = 1_735_689_600
T_END = T0 + 7200


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_during(
    server: RunningPrometheus, kill_above: float, work: Callable[[], list[str]]
) -> tuple[float, float, list[str]]:
    peak, stop = [rss_mib(server.process.pid)], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib(server.process.pid))
            if peak[0] > kill_above:
                server.process.kill()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    answers = work()
    elapsed = time.monotonic() - started
    stop.set()
    watcher.join()
    return peak[0], elapsed, answers


def ask(url: str) -> str:
    try:
        answer = httpx.get(
            f"{url}/api/v1/query",
            params={"query": ISSUE_QUERY, "time": str(T_END), "timeout": "9"},
            timeout=120,
        )
    except httpx.HTTPError as error:
        return f"no answer ({type(error).__name__})"
    body = answer.json()
    return f"{answer.status_code} {body.get('error') or body['data']['result']}"[:90]


def run(series: int, concurrent: int, kill_above: float) -> None:
    require_prometheus()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        history = History(spans=[(T0, T_END)], step=15)
        for i in range(series):
            history.counter("load_total", {"series": str(i)}, 1.0)
        backfill(history, work / "data")
        print(f"{series} series over 2 h at 15 s; query: {ISSUE_QUERY}")
        print(f"{'Prometheus':<28} {'queries':>7} {'RSS before':>10} {'peak RSS':>9} {'seconds':>8}  answer")
        peaks: dict[str, float] = {}
        for name, limits in (("defaults (no limits)", ()), ("recommended limits", RECOMMENDED)):
            for n in (1, concurrent):
                run_dir = work / f"{name[:8].strip()}-{n}"
                run_dir.mkdir()
                with run_prometheus(run_dir, work / "data", query_limits=limits) as server:
                    before = rss_mib(server.process.pid)

                    def burst(url: str = server.url, n: int = n) -> list[str]:
                        with ThreadPoolExecutor(n) as pool:
                            return list(pool.map(lambda _: ask(url), range(n)))

                    peak, elapsed, answers = peak_during(server, kill_above, burst)
                    killed = " (killed by the watchdog)" if server.process.poll() is not None else ""
                    peaks[f"{name}/{n}"] = peak
                    print(
                        f"{name:<28} {n:>7} {before:>8.0f} M {peak:>7.0f} M {elapsed:>8.2f}  {answers[0]}{killed}"
                    )
        for n in (1, concurrent):
            ratio = peaks[f"defaults (no limits)/{n}"] / max(peaks[f"recommended limits/{n}"], 1)
            print(f"peak RSS ratio, defaults / recommended limits, {n} at once: {ratio:.1f}x")
        print("limits:", " ".join(RECOMMENDED))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=3)
    parser.add_argument("--kill-above-mib", type=float, default=6144)
    args = parser.parse_args()
    run(args.series, args.concurrent, args.kill_above_mib)


if __name__ == "__main__":
    main()
