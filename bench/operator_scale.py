"""The operator's idle cost at scale: API requests, CPU and memory with many settled ModelDeployments.

Runs, in one run and on the same machine, the real operator (``kopf run -m mlcanary.handlers``, as in
production) against the Kubernetes API emulator holding ``--objects`` Healthy ModelDeployments:

* **cached** — as shipped: children read from watch-fed informers, settled objects ticked every
  ``MLCANARY_IDLE_SECONDS`` (300 s) and woken by changes;
* **naive** — the v0.1 behaviour, for comparison: every object ticked every ``tick_seconds`` (10 s)
  and every read a request (``MLCANARY_CHILD_CACHE=false``, ``MLCANARY_IDLE_SECONDS=10``).

For each it waits until every object is Healthy, lets it settle, then measures an idle window:
requests the operator sent (counted by the emulator, per verb; watch streams apart), status writes,
Prometheus queries, the operator process's CPU (from /proc) and its resident memory. Analysis goes
to a Prometheus stand-in on 127.0.0.1 that answers every query at once (a healthy canary: no
errors, 1,000 requests) and counts them.

``--rollouts K`` then (as shipped only) changes the version of K of the objects at once, with 2 s
steps and 1 s analysis intervals, and waits until every one is promoted: the p50 and p99 of
``mlcanary_reconcile_duration_seconds`` over those ticks come from the operator's own /metrics
(before/after difference of the histogram, interpolated within buckets like ``histogram_quantile``).
Analysis rounds run beside the ticks, so the figure holds no Prometheus wait.

It prints the figures, the ratio naive / cached, and the targets (<= 60 requests per idle minute per
1,000 objects, no status write and no Prometheus query while idle, <= 5% of a core, <= 150 MiB,
p99 reconcile <= 100 ms with the rollouts).

    .venv/bin/python bench/operator_scale.py                    # 1,000 objects, 60 s idle window
    .venv/bin/python bench/operator_scale.py --objects 1000 --idle 90 --modes cached --rollouts 50
    .venv/bin/python bench/operator_scale.py --objects 200 --idle 30 --modes cached
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kube_emulator import EmulatorThread

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "modeldeployments.mlcanary.io.yaml"
NAMESPACES = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MODES: dict[str, dict[str, str]] = {
    "cached": {},
    "naive": {"MLCANARY_CHILD_CACHE": "false", "MLCANARY_IDLE_SECONDS": "10"},
}


@dataclass
class Figures:
    mode: str
    objects: int
    healthy_after: float
    idle_seconds: float
    requests: Counter[str]
    watches: int
    cpu_seconds: float
    rss_mib: float
    prometheus_queries: int = 0
    rollouts: int = 0
    rollouts_took: float = 0.0
    reconcile_ticks: int = 0
    reconcile_p50: float = float("nan")
    reconcile_p99: float = float("nan")
    rollout_requests: Counter[str] = field(default_factory=Counter)
    rss_after_rollouts: float = float("nan")

    @property
    def per_minute(self) -> float:
        return sum(self.requests.values()) * 60 / self.idle_seconds

    @property
    def per_minute_per_1000(self) -> float:
        return self.per_minute * 1000 / self.objects

    @property
    def status_writes_per_minute(self) -> float:
        return self.requests["patch modeldeployments/status"] * 60 / self.idle_seconds

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.idle_seconds


def model_deployment(index: int) -> dict[str, Any]:
    name = f"model-{index:04d}"
    return {
        "apiVersion": "mlcanary.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": f"team-{index % NAMESPACES}"},
        "spec": {
            "model": {"name": name, "version": "1.0.0", "uri": f"s3://models/{name}/1.0.0/"},
            "serving": {"replicas": 1},
            "analysis": {
                "interval": "1m",
                "metrics": [{"name": "errors", "builtin": "errorRate", "max": 0.01}],
            },
        },
    }


class PrometheusStandIn:
    """Answers every instant query at once, as a healthy canary: no server errors in 1,000 requests
    (what the built-in errorRate reads); counts the queries."""

    def __init__(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if self.path.startswith("/api/v1/query"):
                    with stand_in.lock:
                        stand_in.queries += 1
                body = json.dumps(
                    {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": [{"metric": {"outcome": "ok"}, "value": [time.time(), "1000"]}],
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.queries = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> PrometheusStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HISTOGRAM = "mlcanary_reconcile_duration_seconds"


def reconcile_buckets(metrics_url: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the operator's reconcile histogram."""
    text = httpx.get(metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == HISTOGRAM:
            return sorted(
                (float(sample.labels["le"]), sample.value)
                for sample in family.samples
                if sample.name == f"{HISTOGRAM}_bucket"
            )
    raise RuntimeError(f"{HISTOGRAM} not found at {metrics_url}")


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """``histogram_quantile``: linear interpolation within the bucket holding the rank."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            span = cumulative - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / span if span else 1.0)
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def new_version(index: int) -> dict[str, Any]:
    """The object's next version, with short steps and analysis rounds so the rollout runs quickly."""
    manifest = model_deployment(index)
    name = manifest["metadata"]["name"]
    manifest["spec"]["model"].update(version="2.0.0", uri=f"s3://models/{name}/2.0.0/")
    manifest["spec"]["rollout"] = {"stepDuration": "2s", "scaleDownDelay": "1s"}
    manifest["spec"]["analysis"]["interval"] = "1s"
    return manifest


def run_rollouts(
    emu: EmulatorThread, rollouts: int, metrics_url: str, process: subprocess.Popen[bytes]
) -> dict[str, Any]:
    before = reconcile_buckets(metrics_url)
    emu.reset_requests()
    started = time.monotonic()
    for index in range(rollouts):
        emu.apply(new_version(index))
    # Poll the rolled-out objects one by one: listing all of them copies every object under the
    # emulator's lock, which stalls the API server the operator is being timed against.
    keys = [
        (meta["name"], meta["namespace"])
        for meta in (model_deployment(index)["metadata"] for index in range(rollouts))
    ]
    deadline = started + 600
    while True:
        found = [emu.get_object("modeldeployments", name, namespace) for name, namespace in keys]
        done = [
            o
            for o in found
            if o is not None
            and (o.get("status") or {}).get("stableVersion") == "2.0.0"
            and (o.get("status") or {}).get("phase") == "Healthy"
        ]
        if len(done) == rollouts:
            break
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"rollouts: {len(done)} of {rollouts} promoted")
        time.sleep(0.5)
    took = time.monotonic() - started
    after = reconcile_buckets(metrics_url)
    delta = [(bound, count - dict(before).get(bound, 0.0)) for bound, count in after]
    requests, _ = count(emu.requests())
    return {
        "rollouts": rollouts,
        "rollouts_took": took,
        "reconcile_ticks": int(delta[-1][1]),
        "reconcile_p50": quantile(0.5, delta),
        "reconcile_p99": quantile(0.99, delta),
        "rollout_requests": requests,
        "rss_after_rollouts": rss_mib(process.pid),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count(snapshot: dict[str, Any]) -> tuple[Counter[str], int]:
    requests: Counter[str] = Counter()
    for row in snapshot["requests"]:
        requests[f"{row['verb']} {row['resource']}"] += int(row["count"])
    watches = sum(int(row["count"]) for row in snapshot["watches"])
    return requests, watches


def run_mode(mode: str, objects: int, idle: float, settle: float, work: Path, rollouts: int = 0) -> Figures:
    with EmulatorThread() as emu, PrometheusStandIn() as prometheus:
        emu.apply(yaml.safe_load(CRD.read_text()))
        for namespace in range(NAMESPACES):
            emu.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"team-{namespace}"}})
        for index in range(objects):
            emu.apply(model_deployment(index))
        kubeconfig = emu.write_kubeconfig(work / f"{mode}.kubeconfig")
        metrics_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MLCANARY_METRICS_SOURCE": "prometheus",
            "MLCANARY_PROMETHEUS_URL": prometheus.url,
            "MLCANARY_METRICS_PORT": str(metrics_port),
            "MLCANARY_METRICS_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            # Rollouts tick every second (10 s as shipped): more ticks in flight, not fewer.
            **({"MLCANARY_TICK_SECONDS": "1"} if rollouts else {}),
            **MODES[mode],
        }
        log = (work / f"{mode}.log").open("wb")
        started = time.monotonic()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--all-namespaces",
                "-m",
                "mlcanary.handlers",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = started + 600
            while True:
                phases = Counter(
                    (o.get("status") or {}).get("phase") for o in emu.objects("modeldeployments")
                )
                if phases["Healthy"] == objects:
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(
                        f"{mode}: not every object became Healthy: {dict(phases)} (log {log.name})"
                    )
                time.sleep(1)
            healthy_after = time.monotonic() - started
            time.sleep(settle)  # the last first-deploy writes and their echoes
            emu.reset_requests()
            queries_before = prometheus.queries
            cpu_before, window_start = cpu_seconds(process.pid), time.monotonic()
            time.sleep(idle)
            cpu_used, window = cpu_seconds(process.pid) - cpu_before, time.monotonic() - window_start
            requests, watches = count(emu.requests())
            figures = Figures(
                mode,
                objects,
                healthy_after,
                window,
                requests,
                watches,
                cpu_used,
                rss_mib(process.pid),
                prometheus_queries=prometheus.queries - queries_before,
            )
            if rollouts:
                print(f"{mode}: {rollouts} concurrent rollouts ...", flush=True)
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                for key, value in run_rollouts(emu, rollouts, url, process).items():
                    setattr(figures, key, value)
            return figures
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            log.close()


def report(results: list[Figures]) -> None:
    print()
    print(
        f"{'mode':<8} {'objects':>7} {'healthy':>8} {'req/idle min':>13} {'per 1,000':>10} "
        f"{'status writes/min':>18} {'CPU (core)':>11} {'RSS MiB':>8}"
    )
    for r in results:
        print(
            f"{r.mode:<8} {r.objects:>7} {r.healthy_after:>7.0f}s {r.per_minute:>13.1f} "
            f"{r.per_minute_per_1000:>10.1f} {r.status_writes_per_minute:>18.1f} "
            f"{100 * r.cpu_share:>10.1f}% {r.rss_mib:>8.0f}"
        )
    for r in results:
        top = ", ".join(f"{what}={n}" for what, n in r.requests.most_common(5)) or "none"
        print(
            f"  {r.mode}: requests in the {r.idle_seconds:.0f}s window: {top}; watch streams opened: {r.watches}"
        )
        print(
            f"  {r.mode}: idle: status writes {r.requests['patch modeldeployments/status']}, "
            f"Prometheus queries {r.prometheus_queries}"
        )
    for r in results:
        if r.rollouts:
            writes = r.rollout_requests["patch modeldeployments/status"]
            print(
                f"\n{r.rollouts} concurrent rollouts beside {r.objects - r.rollouts} idle objects: all promoted "
                f"in {r.rollouts_took:.0f}s; {r.reconcile_ticks} ticks, reconcile p50 "
                f"{1000 * r.reconcile_p50:.1f} ms, p99 {1000 * r.reconcile_p99:.1f} ms "
                f"(mlcanary_reconcile_duration_seconds, no Prometheus wait); {writes} status writes; "
                f"RSS after {r.rss_after_rollouts:.0f} MiB"
            )
    by_mode = {r.mode: r for r in results}
    if {"cached", "naive"} <= set(by_mode):
        cached, naive = by_mode["cached"], by_mode["naive"]
        ratio = naive.per_minute / cached.per_minute if cached.per_minute else float("inf")
        print(
            f"\nnaive / cached: requests {ratio:.0f}x, CPU {naive.cpu_share / max(cached.cpu_share, 1e-9):.1f}x, "
            f"RSS {naive.rss_mib / cached.rss_mib:.2f}x"
        )
    if "cached" in by_mode:
        cached = by_mode["cached"]
        checks = [
            ("requests per idle minute per 1,000 objects <= 60", cached.per_minute_per_1000 <= 60),
            ("no status write while idle", cached.requests["patch modeldeployments/status"] == 0),
            ("no Prometheus query while idle", cached.prometheus_queries == 0),
            ("CPU <= 5% of a core", cached.cpu_share <= 0.05),
            ("RSS <= 150 MiB", cached.rss_mib <= 150),
        ]
        if cached.rollouts:
            checks += [
                ("p99 reconcile <= 100 ms during the rollouts", cached.reconcile_p99 <= 0.1),
                ("RSS <= 150 MiB after the rollouts", cached.rss_after_rollouts <= 150),
            ]
        for text, ok in checks:
            print(f"target {text}: {'met' if ok else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window measured, seconds")
    parser.add_argument("--settle", type=float, default=20.0, help="wait after all are Healthy, seconds")
    parser.add_argument("--modes", default="cached,naive")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--rollouts", type=int, default=0, help="then roll out this many objects at once (cached mode)"
    )
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="mlcanary-scale-") as tmp:
        for mode in args.modes.split(","):
            print(f"{mode}: {args.objects} ModelDeployments ...", flush=True)
            rollouts = min(args.rollouts, args.objects) if mode == "cached" else 0
            results.append(run_mode(mode, args.objects, args.idle, args.settle, Path(tmp), rollouts))
    report(results)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {**r.__dict__, "requests": dict(r.requests), "rollout_requests": dict(r.rollout_requests)}
                    for r in results
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
