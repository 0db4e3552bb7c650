"""Shadow-phase cost: server CPU per request of a canary pod that also scores the stable's model (the
reference), against a normal pod serving the same model, in the same run.

Three real server processes (``python -m mlcanary_serving``), started once and measured in
interleaved rounds (order rotated each round), medians reported:

* ``normal``: the canary's bundle (ONNX HistGradientBoosting, the demo's v2) alone;
* ``shadow-logreg``: the same, plus ``MLCANARY_REFERENCE_BUNDLE_URI`` = an ONNX logistic regression
  (a cheaper stable, the demo's v1);
* ``shadow-hgb``: the same, plus a reference as expensive as the served model (another HGB).

Each round sends ``--requests`` single-row ``POST /predict`` requests per server from a keep-alive
client (``--concurrency`` threads) and reads the server process tree's CPU time from /proc before
and after. Ratio = shadow CPU per request / normal CPU per request. The client runs on the same
machine: on a shared, noisy machine the absolute figures move between runs, the ratios less so
(the rounds are interleaved so both see the same noise). A measurement script, not a timed test.

    python bench/shadow_bench.py                                 # ~1 min: 5 rounds x 1000 requests
    python bench/shadow_bench.py --rounds 3 --requests 300      # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its children, from /proc."""
    total = 0.0
    todo = [pid]
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stats[int(d.name)] = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        seen.add(p)
        todo += [q for q, f in stats.items() if int(f[1]) == p and q not in seen]
        if p in stats:
            total += int(stats[p][11]) + int(stats[p][12])
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, bundle: Path, reference: Path | None, log: Path) -> None:
        self.name, self.port = name, free_port()
        env = {**os.environ, "MLCANARY_MICROBATCH": "0", "MLCANARY_THREADS": "1"}
        if reference is not None:
            env["MLCANARY_REFERENCE_BUNDLE_URI"] = str(reference)
        self.proc = subprocess.Popen(
            [PY, "-m", "mlcanary_serving", "--bundle", str(bundle), "--port", str(self.port)],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} never became ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def load(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Send every body once (``concurrency`` keep-alive clients); wall seconds."""
    import http.client

    port = int(url.rsplit(":", 1)[1])
    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    errors: list[str] = []

    def worker(chunk: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for body in chunk:
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                errors.append(str(answer.status))
        conn.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[:3]}")
    return time.perf_counter() - started


def compared(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlcanary_shadow_compared_total{")
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/mlcanary-shadow-bench"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from mlcanary_serving.testing import demo_row, make_demo_bundle

    work = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    served = make_demo_bundle(work / "v2-hgb", version="2.0.0", model="hgb", onnx=True).path
    stable_logreg = make_demo_bundle(work / "v1-logreg", version="1.0.0", onnx=True).path
    stable_hgb = make_demo_bundle(work / "v1-hgb", version="1.0.0", model="hgb", onnx=True).path
    servers = [
        Server("normal", served, None, out / "normal.log"),
        Server("shadow-logreg", served, stable_logreg, out / "shadow-logreg.log"),
        Server("shadow-hgb", served, stable_hgb, out / "shadow-hgb.log"),
    ]
    bodies = [json.dumps({"features": demo_row(i % 500)}).encode() for i in range(args.requests)]
    per_request: dict[str, list[float]] = {s.name: [] for s in servers}
    try:
        for s in servers:
            s.wait_ready()
            load(s.url, bodies[:200], args.concurrency)  # warm-up
        for round_ in range(args.rounds):
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for s in order:
                before = cpu_seconds(s.proc.pid)
                load(s.url, bodies, args.concurrency)
                per_request[s.name].append((cpu_seconds(s.proc.pid) - before) / len(bodies) * 1e6)
        checks = {s.name: compared(s.url) for s in servers}
    finally:
        for s in servers:
            s.stop()
    assert checks["normal"] == 0 and checks["shadow-hgb"] > 0, checks  # the shadow pods really compared

    normal = statistics.median(per_request["normal"])
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    lines = [
        f"Shadow bench: {args.rounds} interleaved rounds x {args.requests} single-row POST /predict, "
        f"concurrency {args.concurrency}, load average {loadavg} (shared machine: noisy)",
        "",
        "| pod | server CPU us/request (median) | rounds | ratio to normal |",
        "|---|---|---|---|",
    ]
    results: dict[str, Any] = {"loadavg": loadavg, "rounds": args.rounds, "requests": args.requests}
    for name, values in per_request.items():
        median = statistics.median(values)
        ratio = median / normal
        results[name] = {"cpu_us_per_request": values, "median": median, "ratio": ratio}
        lines.append(f"| {name} | {median:.0f} | {', '.join(f'{v:.0f}' for v in values)} | {ratio:.2f}x |")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
