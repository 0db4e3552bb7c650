"""Load generator figure: requested vs achieved rate of ``python -m mlcanary_serving.loadtest``.

Starts the real serving server (demo logistic-regression bundle, one worker) on 127.0.0.1, then runs
the generator exactly as a load test Job does (a process, one JSON line out) at increasing rates and
prints requested vs achieved, the ratio, p95 and the requests it had to skip. Below the rate this
machine can serve the ratio should be >= 0.95; above it the generator must say so (ratio < 0.95,
``skipped`` > 0) rather than report the requested rate. The server and the generator share this
machine's cores: the ceiling found is the pair's, not the server's alone.

    python bench/loadtest_bench.py                          # rates 50 200 500 1000 2000, 5 s each
    python bench/loadtest_bench.py --rates 100 400 --duration 3 --concurrency 16

A measurement script, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} not ready within {within:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 200, 500, 1000, 2000])
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--warmup", default="1s")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    from mlcanary_serving.testing import make_demo_bundle

    work = Path(tempfile.mkdtemp(prefix="loadtest-bench-"))
    bundle = make_demo_bundle(work / "bundle", version="1.0.0").path
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCANARY_")}
    env.update({"MLCANARY_HOST": "127.0.0.1", "PORT": str(port), "MLCANARY_WORKERS": "1"})
    server = subprocess.Popen(
        [PY, "-m", "mlcanary_serving", "--bundle", str(bundle)],
        env=env,
        stdout=(work / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_ready(url)
        print(f"cores: {os.cpu_count()}, server: 1 worker, generator concurrency {args.concurrency}")
        print("| requested rps | achieved rps | ratio | p95 ms | p99 ms | errors | skipped |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for rate in args.rates:
            argv = ["--url", url, "--bundle", str(bundle), "--rps", f"{rate:g}"]
            argv += [
                "--concurrency",
                str(args.concurrency),
                "--duration",
                args.duration,
                "--warmup",
                args.warmup,
            ]
            done = subprocess.run(
                [PY, "-m", "mlcanary_serving.loadtest", *argv],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(done.stdout)
            ratio = r["achieved_rps"] / r["requested_rps"]
            rows.append({**r, "ratio": ratio})
            print(
                f"| {r['requested_rps']:g} | {r['achieved_rps']:.1f} | {ratio:.3f} | "
                f"{r['latency_p95_seconds'] * 1000:.1f} | {r['latency_p99_seconds'] * 1000:.1f} | "
                f"{r['errors']} | {r['skipped']} |",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(10)
    reached = [r["requested_rps"] for r in rows if r["ratio"] >= 0.95]
    print(f"\nhighest rate reached at >= 95%: {max(reached):g} rps" if reached else "\nno rate reached 95%")
    short = [r for r in rows if r["ratio"] < 0.95]
    if short:
        honest = all(r["skipped"] > 0 or r["errors"] > 0 for r in short)
        print(f"rates short of 95%: {len(short)}; each reported its shortfall (skipped/errors): {honest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
