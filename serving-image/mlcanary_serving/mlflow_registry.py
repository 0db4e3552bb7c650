"""MLflow's REST API, what serving pods and ``mlcanary bundle register`` need (stdlib only: no mlflow).

Serving pods fetch bundles stored by an MLflow tracking server started with ``--serve-artifacts``:
``mlflow-artifacts:/<path>`` is downloaded through ``/api/2.0/mlflow-artifacts/artifacts/<path>``
and ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` is resolved through the Model
Registry first. The server and credentials come from MLflow's own environment variables:
``MLFLOW_TRACKING_URI``, and ``MLFLOW_TRACKING_TOKEN`` (bearer) or ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (basic auth); the credentials are sent only to that server.

``register_bundle`` uploads a bundle directory as a run's artifacts and registers it as a new model
version tagged ``mlcanary.io/version`` (the bundle's semantic version) and ``mlcanary.io/sha256``
(its manifest's sha256), optionally pointing an alias at it.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundle.format import BundleError

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
VERSION_TAG = "mlcanary.io/version"
SHA256_TAG = "mlcanary.io/sha256"
BUNDLE_ARTIFACT_DIR = "bundle"
DEFAULT_EXPERIMENT = "mlcanary-bundles"


class MlflowError(BundleError):
    """The tracking server refused or could not be reached (the message holds no credential)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, tracking_uri: str | None = None) -> MlflowServer:
        env = os.environ if env is None else env
        uri = tracking_uri or env.get("MLFLOW_TRACKING_URI", "")
        if not uri.startswith(("http://", "https://")):
            raise MlflowError("MLFLOW_TRACKING_URI must be the http(s) URL of an MLflow tracking server")
        return cls(
            tracking_uri=uri.rstrip("/"),
            token=env.get("MLFLOW_TRACKING_TOKEN") or None,
            username=env.get("MLFLOW_TRACKING_USERNAME") or None,
            password=env.get("MLFLOW_TRACKING_PASSWORD") or None,
        )

    def __repr__(self) -> str:
        return f"MlflowServer({self.tracking_uri!r}, credentials=<redacted>)"

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None:
            pair = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def owns(self, url: str) -> bool:
        """Whether ``url`` is on this server (credentials go nowhere else)."""
        return url == self.tracking_uri or url.startswith(self.tracking_uri + "/")

    def artifact_url(self, path: str) -> str:
        quoted = urllib.parse.quote(path.strip("/"))
        return f"{self.tracking_uri}{ARTIFACTS_API}/{quoted}"

    # ----------------------------------------------------------------------------------- REST

    def call(self, method: str, endpoint: str, body: Mapping[str, Any] | None = None,
             params: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
        url = f"{self.tracking_uri}{API}/{endpoint}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        return self._send(method, url, data, "application/json")

    def _send(self, method: str, url: str, data: bytes | None, content_type: str) -> dict[str, Any]:
        headers = {"User-Agent": "mlcanary-serving", **self.headers()}
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            code, message = "", ""
            try:
                detail = json.loads(exc.read() or b"{}")
                code, message = str(detail.get("error_code", "")), str(detail.get("message", ""))[:300]
            except ValueError:
                pass
            endpoint = url.split("?", 1)[0].removeprefix(self.tracking_uri)
            raise MlflowError(
                f"{method} {endpoint}: HTTP {exc.code} {code} {message}".rstrip(), code
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise MlflowError(f"cannot reach {self.tracking_uri}: {exc}") from None
        if not raw:
            return {}
        try:
            decoded = json.loads(raw)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}

    def upload(self, path: str, content: bytes) -> None:
        self._send("PUT", self.artifact_url(path), content, "application/octet-stream")

    # ---------------------------------------------------------------------------- resolution

    def download_url(self, artifact_uri: str) -> str:
        """An http(s) URL for a version's artifact location (``mlflow-artifacts:`` or already URL)."""
        if artifact_uri.startswith("mlflow-artifacts:"):
            path = artifact_uri.removeprefix("mlflow-artifacts:")
            if path.startswith("//"):
                path = "/" + path[2:].partition("/")[2]
            return self.artifact_url(path) + "/"
        if artifact_uri.startswith(("http://", "https://")):
            return artifact_uri
        raise MlflowError(f"artifact location {artifact_uri!r} is not served over HTTP by MLflow")

    def resolve_models_uri(self, uri: str) -> str:
        """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> the bundle's http(s) URL."""
        ref = uri.removeprefix("models:").lstrip("/")
        if "@" in ref:
            name, alias = ref.rsplit("@", 1)
            version = str(
                self.call("GET", "registered-models/alias", params={"name": name, "alias": alias})
                .get("model_version", {})
                .get("version", "")
            )
        else:
            name, _, version = ref.rpartition("/")
        if not name or not version:
            raise MlflowError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
        found = self.call("GET", "model-versions/get-download-uri", params={"name": name, "version": version})
        return self.download_url(str(found.get("artifact_uri", "")))


# -------------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class Registered:
    name: str
    version: str  # MLflow's version number
    model_version: str  # the bundle's semantic version
    source: str
    run_id: str
    alias: str | None


def _experiment_id(server: MlflowServer, name: str) -> str:
    try:
        found = server.call("GET", "experiments/get-by-name", params={"experiment_name": name})
        return str(found["experiment"]["experiment_id"])
    except MlflowError as exc:
        if exc.code != "RESOURCE_DOES_NOT_EXIST":
            raise
    return str(server.call("POST", "experiments/create", {"name": name})["experiment_id"])


def register_bundle(
    server: MlflowServer,
    bundle_dir: str | Path,
    model_name: str,
    *,
    alias: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> Registered:
    """Upload a verified bundle directory and register it as a new version of ``model_name``."""
    from .bundle.read import verify_bundle

    bundle = verify_bundle(Path(bundle_dir))
    root = Path(bundle_dir)
    experiment_id = _experiment_id(server, experiment)
    run = server.call(
        "POST",
        "runs/create",
        {
            "experiment_id": experiment_id,
            "start_time": int(time.time() * 1000),
            "run_name": f"{bundle.manifest.name}-{bundle.manifest.version}",
            "tags": [{"key": VERSION_TAG, "value": bundle.manifest.version}],
        },
    )["run"]["info"]
    run_id, artifact_uri = str(run["run_id"]), str(run["artifact_uri"])
    if not artifact_uri.startswith("mlflow-artifacts:"):
        raise MlflowError(
            f"the run's artifacts go to {artifact_uri!r}: start the server with --serve-artifacts so "
            "bundles are uploaded through its HTTP API"
        )
    base = artifact_uri.removeprefix("mlflow-artifacts:")
    if base.startswith("//"):
        base = "/" + base[2:].partition("/")[2]
    for name in ["manifest.json", *bundle.manifest.files]:
        server.upload(f"{base}/{BUNDLE_ARTIFACT_DIR}/{name}", (root / name).read_bytes())
    server.call(
        "POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)}
    )
    try:
        server.call("POST", "registered-models/create", {"name": model_name})
    except MlflowError as exc:
        if exc.code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{artifact_uri}/{BUNDLE_ARTIFACT_DIR}"
    created = server.call(
        "POST",
        "model-versions/create",
        {
            "name": model_name,
            "source": source,
            "run_id": run_id,
            "tags": [
                {"key": VERSION_TAG, "value": bundle.manifest.version},
                {"key": SHA256_TAG, "value": bundle.manifest_sha256},
            ],
        },
    )["model_version"]
    version = str(created["version"])
    if alias:
        server.call(
            "POST", "registered-models/alias", {"name": model_name, "alias": alias, "version": version}
        )
    return Registered(model_name, version, bundle.manifest.version, source, run_id, alias)
