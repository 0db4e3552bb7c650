"""Shared harness: the Kubernetes API emulator in a thread and the real operator as a subprocess.

The operator is started exactly as in production (`python -m kopf run --standalone -A -m
mlcanary.handlers`), pointed at the emulator by KUBECONFIG, with short ticks and, unless a test
asks for Prometheus, the file-backed metrics source that tests rewrite while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kube_emulator import EmulatorThread

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "modeldeployments.mlcanary.io.yaml"


class OperatorProcess:
    """The real operator in a subprocess; logs go to a file that failing tests print."""

    KOPF_RUN = ("-m", "kopf", "run", "--standalone", "--all-namespaces", "-m", "mlcanary.handlers")

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = KOPF_RUN,
    ) -> None:
        self.args = args
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "operator.log"
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MLCANARY_TICK_SECONDS": "0.3",
            "MLCANARY_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a node failure."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    """The emulator plus helpers to read and write ModelDeployments as a user would."""

    def __init__(self, emulator: EmulatorThread, kubeconfig: Path, metrics_file: Path) -> None:
        self.emu = emulator
        self.kubeconfig = kubeconfig
        self.metrics_file = metrics_file

    def set_metrics(self, values: dict[str, dict[str, Any]]) -> None:
        tmp = self.metrics_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.replace(self.metrics_file)  # atomic: the operator never reads half a file

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.emu.apply(manifest)

    def mdep(self, name: str, namespace: str = "default") -> dict[str, Any]:
        obj = self.emu.get_object("modeldeployments", name, namespace)
        assert obj is not None, f"modeldeployment {namespace}/{name} is gone"
        return obj

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.mdep(name, namespace).get("status") or {}

    def deployments(self, namespace: str = "default") -> list[dict[str, Any]]:
        return self.emu.objects("deployments", namespace)

    def services(self, namespace: str = "default") -> list[dict[str, Any]]:
        return self.emu.objects("services", namespace)

    def events(self, namespace: str = "default") -> list[dict[str, Any]]:
        return self.emu.objects("events", namespace)

    def wait_for(
        self,
        predicate: Callable[[], Any],
        what: str,
        timeout: float = 30.0,
        operator: OperatorProcess | None = None,
        interval: float = 0.05,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        logs = operator.logs()[-4000:] if operator else ""
        raise AssertionError(f"timed out waiting for {what}\n--- operator log tail ---\n{logs}")


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def model_deployment(
    name: str,
    version: str,
    *,
    namespace: str = "default",
    steps: list[int] | None = None,
    step_duration: str = "1s",
    interval: str = "1s",
    metrics: list[dict[str, Any]] | None = None,
    replicas: int = 4,  # the replicas router serves 20% with 1 canary pod beside 4
    traffic: dict[str, Any] | None = None,
    **rollout: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "mlcanary.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": name, "version": version, "uri": f"file:///models/{name}/{version}/"},
            "serving": {"replicas": replicas},
            "rollout": {
                "steps": steps or [20, 50],
                "stepDuration": step_duration,
                "progressDeadline": rollout.pop("progress_deadline", "20s"),
                "scaleDownDelay": rollout.pop("scale_down_delay", "1s"),
                **rollout,
            },
            "analysis": {
                "interval": interval,
                "metrics": metrics
                if metrics is not None
                else [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
            },
            "traffic": traffic or {"replicas": {"settleTime": "200ms"}},
        },
    }
