"""Fixtures for the serving image's tests: demo bundles, in-process clients, real servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mlcanary_serving.app import create_app
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.settings import Settings
from mlcanary_serving.testing import demo_row, make_demo_bundle

REPO = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer"


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuildResult]:
    """Demo bundles built once per session (treat as read-only; copy before tampering)."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "onnx": make_demo_bundle(root / "logreg-onnx", version="1.0.0"),
        "joblib": make_demo_bundle(root / "logreg-joblib", version="1.1.0", onnx=False),
        "hgb": make_demo_bundle(root / "hgb-onnx", version="2.0.0", model="hgb", onnx=True, archive=True),
        "degenerate": make_demo_bundle(root / "degenerate", version="3.0.0", kind="degenerate"),
    }


@pytest.fixture(scope="session")
def row() -> list[float]:
    return demo_row(0)


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """``make_client(bundle_path, **settings)`` -> a started TestClient (model loaded)."""
    stack = contextlib.ExitStack()

    def factory(bundle: Any, env: dict[str, str] | None = None, **overrides: Any) -> TestClient:
        settings = Settings.from_env(env or {}, bundle_uri=str(bundle), **overrides)
        client = TestClient(create_app(settings, load_in_background=False), raise_server_exceptions=False)
        stack.enter_context(client)
        return client

    with stack:
        yield factory


@pytest.fixture
def client(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> TestClient:
    return make_client(bundles["onnx"].path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text()

    def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not live: {self.log_text()[-2000:]}")

    def wait_state(self, state: str, timeout: float = 60.0) -> dict[str, Any]:
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body: dict[str, Any] = httpx.get(self.url + "/healthz", timeout=2).json()
            if body["state"] == state:
                return body
            time.sleep(0.05)
        raise AssertionError(f"server never reached state {state}: {self.log_text()[-2000:]}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``python -m mlcanary_serving`` for real on 127.0.0.1:<free port>."""
    procs: list[ServerProcess] = []

    def start(args: list[str] | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLCANARY_") and k != "PORT"}
        full_env.update({"MLCANARY_HOST": "127.0.0.1", "PORT": str(port), "MLCANARY_FETCH_RETRIES": "0"})
        full_env.update(env or {})
        log = tmp_path / f"server-{port}.log"
        fh = log.open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlcanary_serving", *(args or [])],
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        sp = ServerProcess(proc, port, log)
        procs.append(sp)
        return sp

    yield start
    for sp in procs:
        sp.proc.terminate()
        try:
            sp.proc.wait(10)
        except subprocess.TimeoutExpired:
            sp.proc.kill()
            sp.proc.wait()
