"""The operator's idle cost at scale: API requests, CPU and memory with many settled ModelDeployments.

Runs, in one run and on the same machine, the real operator (``kopf run -m mlcanary.handlers``, as in
production) against the Kubernetes API emulator holding ``--objects`` Healthy ModelDeployments:

* **cached** — as shipped: children read from watch-fed informers, settled objects ticked every
  ``MLCANARY_IDLE_SECONDS`` (300 s) and woken by changes;
* **naive** — the v0.1 behaviour, for comparison: every object ticked every ``tick_seconds`` (10 s)
  and every read a request (``MLCANARY_CHILD_CACHE=false``, ``MLCANARY_IDLE_SECONDS=10``).

For each it waits until every object is Healthy, lets it settle, then measures an idle window:
requests the operator sent (counted by the emulator, per verb; watch streams apart), status writes,
the operator process's CPU (from /proc) and its resident memory. It prints the figures, the ratio
naive / cached, and the targets of the hardening issue (<= 60 requests per idle minute per 1,000
objects, <= 5% of a core, <= 150 MiB).

    .venv/bin/python bench/operator_scale.py                    # 1,000 objects, 60 s idle window
    .venv/bin/python bench/operator_scale.py --objects 200 --idle 30 --modes cached
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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


def run_mode(mode: str, objects: int, idle: float, settle: float, work: Path) -> Figures:
    with EmulatorThread() as emu:
        emu.apply(yaml.safe_load(CRD.read_text()))
        for namespace in range(NAMESPACES):
            emu.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"team-{namespace}"}})
        for index in range(objects):
            emu.apply(model_deployment(index))
        kubeconfig = emu.write_kubeconfig(work / f"{mode}.kubeconfig")
        metrics = work / "metrics.json"
        metrics.write_text("{}")
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MLCANARY_METRICS_SOURCE": f"file:{metrics}",
            "MLCANARY_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
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
            cpu_before, window_start = cpu_seconds(process.pid), time.monotonic()
            time.sleep(idle)
            cpu_used, window = cpu_seconds(process.pid) - cpu_before, time.monotonic() - window_start
            requests, watches = count(emu.requests())
            return Figures(
                mode, objects, healthy_after, window, requests, watches, cpu_used, rss_mib(process.pid)
            )
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
            ("CPU <= 5% of a core", cached.cpu_share <= 0.05),
            ("RSS <= 150 MiB", cached.rss_mib <= 150),
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
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="mlcanary-scale-") as tmp:
        for mode in args.modes.split(","):
            print(f"{mode}: {args.objects} ModelDeployments ...", flush=True)
            results.append(run_mode(mode, args.objects, args.idle, args.settle, Path(tmp)))
    report(results)
    if args.json:
        args.json.write_text(
            json.dumps([{**r.__dict__, "requests": dict(r.requests)} for r in results], indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
