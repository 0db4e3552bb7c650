"""A real MLflow tracking server with its Model Registry, for the local stack and the tests.

MLflow pins numpy/pandas/flask and more, so it is no dependency of any mlcanary package: it lives
in its own virtualenv (``scripts/install-mlflow.sh`` puts it in ``.venv/tools/mlflow``), the way
Prometheus is a separate binary, and everything of ours talks to it over its REST API only.

SQLite backend and ``--serve-artifacts`` (artifacts under the work directory, served through the
``/api/2.0/mlflow-artifacts/artifacts`` HTTP API), bound to 127.0.0.1 on a free port. ``start()``
returns once ``/health`` answers (10-20 s on a busy 2-core machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mlcanary_local.process import LOCALHOST, free_port, spawn, stop_popen

# Where scripts/install-mlflow.sh installs it, relative to the project's virtualenv.
TOOLS_BINARY = Path(".venv") / "tools" / "mlflow" / "bin" / "mlflow"


class MlflowMissingError(RuntimeError):
    pass


def find_mlflow() -> str:
    """The ``mlflow`` executable: $MLCANARY_MLFLOW, the tools venv beside this interpreter's venv,
    the project's ``.venv/tools``, or PATH."""
    candidates = [
        os.environ.get("MLCANARY_MLFLOW", ""),
        str(Path(sys.prefix) / "tools" / "mlflow" / "bin" / "mlflow"),
        str(Path.cwd() / TOOLS_BINARY),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("mlflow")
    if found is None:
        raise MlflowMissingError(
            "mlflow is not installed: run `make setup` (scripts/install-mlflow.sh installs it in "
            ".venv/tools/mlflow) or set MLCANARY_MLFLOW"
        )
    return found


@dataclass
class MlflowProcess:
    """One MLflow tracking server; ``app_name="basic-auth"`` starts MLflow's own basic-auth app with
    the user ``admin`` / ``admin_password``."""

    work_dir: Path
    port: int = 0
    app_name: str | None = None
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "mlflow.log"

    def start(self, timeout: float = 120.0) -> None:
        binary = find_mlflow()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        argv = [
            binary,
            "server",
            "--host",
            LOCALHOST,
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{(self.work_dir / 'mlflow.db').resolve()}",
            "--serve-artifacts",
            "--artifacts-destination",
            str((self.work_dir / "artifacts").resolve()),
            "--workers",
            "1",
        ]
        env = dict(os.environ)
        if self.app_name:
            argv += ["--app-name", self.app_name]
            # The auth app keeps its users in its own database, here beside the tracking one.
            config = self.work_dir / "basic_auth.ini"
            config.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{(self.work_dir / 'basic_auth.db').resolve()}\n"
                "admin_username = admin\n"
                f"admin_password = {self.admin_password}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
            # The auth app's CSRF protection refuses to start without a static key.
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_urlsafe(32))
        # MLflow 3 starts eight `huey` job consumers by default (GenAI scorers and other server jobs):
        # nothing the registry needs, and ~8 Python processes more on a 2-core machine.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        # MLflow 3 refuses requests whose Host is not allow-listed; ours is 127.0.0.1:port.
        env.setdefault("MLFLOW_SERVER_ALLOWED_HOSTS", f"{LOCALHOST}:{self.port},localhost:{self.port}")
        self.process = spawn(argv, self.log_file, env=env, cwd=self.work_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow exited; see {self.log_file}")
            if self.ready():
                return
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"mlflow not ready after {timeout}s; see {self.log_file}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:  # noqa: S310
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
