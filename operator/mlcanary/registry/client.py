"""The MLflow REST API, the calls the operator makes (httpx; no mlflow package).

``GET registered-models/alias`` resolves an alias to a model version (tags and source included);
``GET model-versions/get-download-uri`` is asked only when the source is not a location a pod can
fetch from (a ``models:/`` or ``runs:/`` source). Write-back: ``POST model-versions/set-tag`` and
``POST registered-models/alias``. Every failure becomes a :class:`RegistryProblem` whose message
holds a status code and MLflow's error code, never a header or a credential.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import httpx

from mlcanary.registry.core import (
    ProblemKind,
    RegistryProblem,
    ResolvedVersion,
    fetchable_uri,
    model_version_for,
    sha256_for,
)

API = "/api/2.0/mlflow"


@dataclass(frozen=True)
class Credentials:
    """What authenticates us to MLflow: a bearer token, or basic auth (username, password)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None:
            pair = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def fingerprint(self) -> str:
        """Identifies the credentials in a poller key without holding them."""
        material = f"{self.token or ''}\0{self.username or ''}\0{self.password or ''}".encode()
        return hashlib.sha256(material).hexdigest()[:16]

    def __repr__(self) -> str:  # never printed by accident
        return "Credentials(<redacted>)"


class RegistryError(Exception):
    def __init__(self, problem: RegistryProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class MlflowClient:
    """One tracking server, one set of credentials."""

    def __init__(
        self,
        tracking_uri: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.tracking_uri,
            headers={"User-Agent": "mlcanary-operator", **(credentials or Credentials()).headers()},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        self.requests = 0  # counted for the polling-cost figure and tests

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.requests += 1
        try:
            response = await self._http.request(method, f"{API}/{path}", **kwargs)
        except httpx.TimeoutException:
            raise RegistryError(
                RegistryProblem(ProblemKind.UNREACHABLE, f"{self.tracking_uri}: {path} timed out")
            ) from None
        except httpx.HTTPError as error:
            raise RegistryError(
                RegistryProblem(
                    ProblemKind.UNREACHABLE, f"cannot reach {self.tracking_uri}: {type(error).__name__}"
                )
            ) from None
        if response.status_code in (401, 403):
            raise RegistryError(
                RegistryProblem(
                    ProblemKind.UNAUTHORIZED,
                    f"{self.tracking_uri} refused the credentials (HTTP {response.status_code}) on {path}",
                )
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or "")
        if (
            response.status_code == 404
            or body.get("error_code") == "RESOURCE_DOES_NOT_EXIST"
            # MLflow answers an unknown alias with 400 INVALID_PARAMETER_VALUE "... alias x not found."
            or (response.status_code == 400 and "not found" in message)
        ):
            raise RegistryError(
                RegistryProblem(
                    ProblemKind.NOT_FOUND,
                    f"{path}: not found ({body.get('error_code') or response.status_code}): "
                    f"{str(body.get('message') or '')[:200]}",
                )
            )
        if response.status_code >= 300:
            raise RegistryError(
                RegistryProblem(
                    ProblemKind.UNREACHABLE,
                    f"{path}: HTTP {response.status_code} {body.get('error_code') or ''} "
                    f"{str(body.get('message') or '')[:200]}".rstrip(),
                )
            )
        return body

    async def alias_version(self, model: str, alias: str) -> dict[str, Any]:
        body = await self._call("GET", "registered-models/alias", params={"name": model, "alias": alias})
        version = body.get("model_version")
        if not isinstance(version, dict) or "version" not in version:
            raise RegistryError(
                RegistryProblem(ProblemKind.NOT_FOUND, f"alias {alias!r} of {model!r} resolved to nothing")
            )
        return version

    async def download_uri(self, model: str, version: str) -> str:
        body = await self._call(
            "GET", "model-versions/get-download-uri", params={"name": model, "version": version}
        )
        return str(body.get("artifact_uri") or "")

    async def resolve(self, model: str, alias: str, known: ResolvedVersion | None = None) -> ResolvedVersion:
        """Alias -> version -> semantic version and fetchable URI. One request when the version's
        source is fetchable (or the version is ``known``), two otherwise."""
        version = await self.alias_version(model, alias)
        number = str(version["version"])
        tags = {str(t.get("key")): str(t.get("value")) for t in version.get("tags") or []}
        semver = model_version_for(number, tags)
        uri = fetchable_uri(self.tracking_uri, str(version.get("source") or ""))
        if uri is None and known is not None and known.registry_version == number:
            uri = known.uri
        if uri is None:
            artifact = await self.download_uri(model, number)
            uri = fetchable_uri(self.tracking_uri, artifact)
            if uri is None:
                raise RegistryError(
                    RegistryProblem(
                        ProblemKind.NOT_FETCHABLE,
                        f"version {number} is stored at {artifact[:200]!r}, which serving pods cannot "
                        "fetch (mlflow-artifacts:, http(s)://, s3:// or file:// are supported)",
                    )
                )
        return ResolvedVersion(
            registry_version=number, model_version=semver, uri=uri, sha256=sha256_for(tags)
        )

    async def set_tag(self, model: str, version: str, key: str, value: str) -> None:
        await self._call(
            "POST",
            "model-versions/set-tag",
            json={"name": model, "version": version, "key": key, "value": value},
        )

    async def set_alias(self, model: str, alias: str, version: str) -> None:
        await self._call(
            "POST", "registered-models/alias", json={"name": model, "alias": alias, "version": version}
        )
