"""A real Prometheus (the Debian package's binary) for the local stack.

Generated configuration: one job scraping every local pod through ``file_sd_configs`` (the kubelet
rewrites the targets file as pods come and go, with labels namespace, pod, revision, deployment,
model_deployment), one job for the operator's own /metrics when it has a port. Storage lives in a
temporary directory; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlcanary_local.process import LOCALHOST, free_port, spawn, stop_popen

POD_JOB = "mlcanary-pods"
OPERATOR_JOB = "mlcanary-operator"


class PrometheusMissingError(RuntimeError):
    pass


def find_prometheus() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if path is None:
        raise PrometheusMissingError(
            "prometheus is not installed: run `make setup` (or `sudo apt-get install prometheus`)"
        )
    return path


def config_text(targets_file: Path, scrape_interval: float = 1.0, operator_port: int | None = None) -> str:
    interval = f"{max(1, round(scrape_interval * 1000))}ms"
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {
                "job_name": POD_JOB,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }
    if operator_port:
        config["scrape_configs"].append(
            {"job_name": OPERATOR_JOB, "static_configs": [{"targets": [f"{LOCALHOST}:{operator_port}"]}]}
        )
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class PrometheusProcess:
    """One Prometheus server. ``start()`` returns once it answers /-/ready."""

    work_dir: Path
    targets_file: Path
    scrape_interval: float = 1.0
    operator_port: int | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.work_dir / "prometheus.yml"

    def write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.targets_file.write_text("[]")
        self.config_file.write_text(config_text(self.targets_file, self.scrape_interval, self.operator_port))

    def start(self, timeout: float = 30.0) -> None:
        binary = find_prometheus()
        self.write_config()
        if not self.port:
            self.port = free_port()
        argv = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
            # The limits docs/analysis.md recommends for a shared Prometheus: no query (a custom one,
            # or a mistake) may exhaust the machine the whole local stack runs on.
            "--query.max-samples=5000000",
            "--query.timeout=30s",
            "--query.max-concurrency=4",
        ]
        self.process = spawn(argv, self.work_dir / "prometheus.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited; see {self.work_dir / 'prometheus.log'}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {timeout}s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_popen(self.process, grace=10)
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def query(url: str, promql: str, at: float | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Instant query; returns the result vector."""
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    return _api(url, "query", params, timeout)


def query_range(
    url: str, promql: str, start: float, end: float, step: float, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Range query; returns the result matrix (``[{metric, values: [[t, "v"], ...]}]``)."""
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
    return _api(url, "query_range", params, timeout)


def _api(url: str, endpoint: str, params: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    full = f"{url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(full, timeout=timeout) as response:  # noqa: S310 - our own 127.0.0.1
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus {endpoint} failed: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
