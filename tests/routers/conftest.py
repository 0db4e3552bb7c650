"""Fixtures for the router integration tests, on top of the shared integration harness.

``mesh_cluster`` is the shared emulator (with the ModelDeployment CRD) plus the upstream Gateway API
and Istio CRDs read from ``../shared/upstream-crds``; ``route_status`` runs the local stand-in
gateway controller (``python -m mlcanary_local.route_status``) against it; ``operator`` is the real
operator as in production, from the shared harness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .kit import GATEWAY_CRDS, ISTIO_CRDS, UPSTREAM, iter_yaml


class RouteStatusProcess:
    """The stand-in gateway controller in a subprocess; stop() simulates a gateway that went away."""

    def __init__(self, kubeconfig: Path, workdir: Path, istio: bool = False) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = workdir / "route-status.log"
        self.istio = istio
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        args = [sys.executable, "-m", "mlcanary_local.route_status", "--kubeconfig", str(self.kubeconfig)]
        args += ["--interval", "0.2"] + (["--istio"] if self.istio else [])
        self.process = subprocess.Popen(
            args,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


# The emulators of the running tests by URL: a hand edit is made as their admin (a user with rights),
# over their HTTPS with their CA, as kubectl would.
_EMULATORS: dict[str, Any] = {}


def merge_patch(url: str, path: str, patch: dict[str, Any]) -> dict[str, Any]:
    """What ``kubectl patch --type merge`` sends: a user's hand edit, through the API."""
    emulator = _EMULATORS[url]
    request = urllib.request.Request(
        url + path,
        data=json.dumps(patch).encode(),
        method="PATCH",
        headers={
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
            "Authorization": f"Bearer {emulator.admin_token}",
        },
    )
    certificate = emulator.emulator.certificate
    context = certificate.client_context() if certificate is not None else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


@pytest.fixture
def mesh_cluster(cluster: Any) -> Any:
    if not UPSTREAM.is_dir():
        pytest.skip(f"upstream CRDs not available at {UPSTREAM} (../shared is absent)")
    for path in (GATEWAY_CRDS, ISTIO_CRDS):
        for crd in iter_yaml(path):
            cluster.apply(crd)
    _EMULATORS[cluster.emu.url] = cluster.emu
    return cluster


@pytest.fixture
def route_status(mesh_cluster: Any, tmp_path: Path) -> Iterator[RouteStatusProcess]:
    # A gateway controller has its own identity, not the operator's: run it as the admin.
    process = RouteStatusProcess(getattr(mesh_cluster, "admin_kubeconfig", mesh_cluster.kubeconfig), tmp_path)
    process.start()
    yield process
    process.stop()


# The shared harness's fixtures, reused as they are (tests/integration is a sibling package).
try:
    from integration.conftest import cluster, operator
except ImportError:  # pragma: no cover - the harness is not there: integration tests are skipped

    @pytest.fixture
    def cluster() -> Any:
        pytest.skip("tests/integration harness not available")

    @pytest.fixture
    def operator() -> Any:
        pytest.skip("tests/integration harness not available")
