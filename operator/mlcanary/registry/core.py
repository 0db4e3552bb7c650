"""spec.model.registry, the pure part: what an alias resolution means for a ModelDeployment.

Given the spec, the status and the latest resolution of the watched alias (or the problem that kept
it from resolving), :func:`decide` returns the new ``status.registry``, the ``RegistryReachable``
condition, the Events to post and, for ``updatePolicy: Apply``, the change to ``spec.model``.
:func:`write_backs` says which finished rollouts still have to be written to the registry.

Worked examples (spec.model.version 1.3.0, alias champion):

* champion -> version 7 tagged ``mlcanary.io/version=1.4.0``, Propose: pendingVersion 1.4.0, one
  Event NewModelVersionAvailable (not repeated while it stays pending); the spec is untouched.
* the same with Apply: :class:`PatchModel` (version 1.4.0 and its URI) and Event ModelVersionApplied,
  once per MLflow version: a later hand edit of the spec is reported as pending, never fought.
* champion -> version 5 without the tag: its semantic version is 5.0.0.
* the registry refuses the credentials: RegistryReachable False (Unauthorized), one Event
  RegistryUnreachable per distinct problem, nothing else changes: the running model stays.

Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mlcanary import conditions as cond
from mlcanary.engine import EmitEvent
from mlcanary.models import (
    MAX_REGISTRY_KNOWN_VERSIONS,
    SEMVER_PATTERN,
    Condition,
    EventReason,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelRegistry,
    RegistryStatus,
    RegistryUpdatePolicy,
    RolloutOutcome,
    RolloutRecord,
)

# Model-version tags the operator reads and writes (MLflow tag keys allow '.', '/' and '-').
VERSION_TAG = "mlcanary.io/version"  # the semantic version of an MLflow version (read)
SHA256_TAG = "mlcanary.io/sha256"  # sha256 of the bundle's manifest.json (read; pinned in spec.model)
OUTCOME_TAG = "mlcanary.io/outcome"  # promoted | rolled-back (written)
REASON_TAG = "mlcanary.io/reason"  # why (written)
DEPLOYMENT_TAG = "mlcanary.io/model-deployment"  # namespace/name that rolled it out (written)
FIELD_MANAGER = "mlcanary-registry"
MAX_WRITTEN_BACK = 16
MAX_MESSAGE = 500
_SHA256 = re.compile(r"^[a-f0-9]{64}$")
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


class ProblemKind(enum.StrEnum):
    """Why the alias did not resolve: the RegistryReachable condition's reason."""

    UNREACHABLE = "Unreachable"  # connection refused, timeout, 5xx
    UNAUTHORIZED = "Unauthorized"  # 401/403: wrong or missing credentials
    NOT_FOUND = "AliasNotFound"  # no such registered model or alias
    NOT_FETCHABLE = "ArtifactNotFetchable"  # the version's artifacts are nowhere a pod can fetch from
    CREDENTIALS_UNAVAILABLE = "CredentialsUnavailable"  # the Secret or its key is missing


@dataclass(frozen=True)
class ResolvedVersion:
    registry_version: str  # MLflow's version number, as text
    model_version: str  # the semantic version spec.model.version takes
    uri: str  # where serving pods fetch the bundle
    sha256: str | None = None


@dataclass(frozen=True)
class RegistryProblem:
    kind: ProblemKind
    message: str  # never holds a credential: built from status codes and MLflow's error codes


@dataclass(frozen=True)
class Poll:
    at: datetime
    result: ResolvedVersion | RegistryProblem


@dataclass(frozen=True)
class PatchModel:
    """Apply: what spec.model becomes (merge patch under the field manager ``mlcanary-registry``)."""

    version: str
    uri: str
    sha256: str | None

    def merge_patch(self) -> dict[str, object]:
        return {"spec": {"model": {"version": self.version, "uri": self.uri, "sha256": self.sha256}}}


@dataclass(frozen=True)
class WriteBack:
    """Tags (and optionally an alias) to set on one MLflow model version."""

    registry_version: str
    outcome: Literal["promoted", "rolled-back"]
    reason: str
    set_alias: str | None
    mark: str  # recorded in status.registry.writtenBack once done

    def tags(self, deployment: str) -> dict[str, str]:
        return {OUTCOME_TAG: self.outcome, REASON_TAG: self.reason[:MAX_MESSAGE], DEPLOYMENT_TAG: deployment}


# ------------------------------------------------------------------------------- version mapping


def is_semver(text: str) -> bool:
    return len(text) <= 63 and re.fullmatch(SEMVER_PATTERN, text) is not None


def model_version_for(registry_version: str, tags: Mapping[str, str]) -> str:
    """The semantic version of an MLflow version: its ``mlcanary.io/version`` tag when that is a
    valid one, else ``<n>.0.0`` (MLflow numbers versions 1, 2, 3, ...).

    >>> model_version_for("7", {"mlcanary.io/version": "1.4.0"})
    '1.4.0'
    >>> model_version_for("7", {"mlcanary.io/version": "v1.4"})
    '7.0.0'
    >>> model_version_for("12", {})
    '12.0.0'
    """
    tagged = tags.get(VERSION_TAG, "").strip()
    if tagged and is_semver(tagged):
        return tagged
    return f"{int(registry_version)}.0.0"


def sha256_for(tags: Mapping[str, str]) -> str | None:
    value = tags.get(SHA256_TAG, "").strip().lower()
    return value if _SHA256.fullmatch(value) else None


def fetchable_uri(tracking_uri: str, artifact_uri: str) -> str | None:
    """Where a serving pod fetches ``artifact_uri`` from (a URI spec.model.uri accepts), or None.

    ``mlflow-artifacts:`` locations are served by the tracking server's artifact HTTP API; http(s),
    s3 and file locations are fetched as they are.

    >>> fetchable_uri("http://mlflow:5000/", "mlflow-artifacts:/1/abc/artifacts/bundle")
    'http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/bundle/'
    >>> fetchable_uri("http://mlflow:5000", "s3://models/fraud/7")
    's3://models/fraud/7'
    >>> fetchable_uri("http://mlflow:5000", "dbfs:/models/x") is None
    True
    """
    if artifact_uri.startswith("mlflow-artifacts:"):
        path = artifact_uri.removeprefix("mlflow-artifacts:")
        if path.startswith("//"):  # mlflow-artifacts://host:port/path: the path after the authority
            path = "/" + path[2:].partition("/")[2]
        path = path.strip("/")
        if not path:
            return None
        return f"{tracking_uri.rstrip('/')}{ARTIFACTS_API}/{path}/"
    if re.match(r"^(https?|s3|file)://.+", artifact_uri):
        return artifact_uri
    return None


# -------------------------------------------------------------------------------------- decisions


def _condition(
    status: ModelDeploymentStatus, ok: bool, reason: str, message: str, now: datetime, generation: int
) -> list[Condition]:
    return cond.set_condition(
        status.conditions,
        cond.REGISTRY_REACHABLE,
        "True" if ok else "False",
        reason,
        message[:MAX_MESSAGE],
        now,
        generation,
    )


def _remember(known: dict[str, str], model_version: str, registry_version: str) -> dict[str, str]:
    updated = {k: v for k, v in known.items() if k != model_version}
    updated[model_version] = registry_version
    while len(updated) > MAX_REGISTRY_KNOWN_VERSIONS:  # dicts keep insertion order: drop the oldest
        del updated[next(iter(updated))]
    return updated


def decide(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    poll: Poll | None,
    now: datetime,
    generation: int,
) -> tuple[ModelDeploymentStatus, list[EmitEvent], PatchModel | None]:
    """``status`` with its registry part and RegistryReachable condition brought up to date."""
    registry = spec.model.registry
    if registry is None:  # the block was removed: drop what it reported
        conditions = [c for c in status.conditions if c.type != cond.REGISTRY_REACHABLE]
        return status.model_copy(update={"registry": None, "conditions": conditions}), [], None
    old = status.registry or RegistryStatus()
    new = old.model_copy(deep=True)
    if old.alias != registry.alias:  # following another alias: what the old one said is moot
        new = RegistryStatus(known_versions=old.known_versions, written_back=old.written_back)
    new.alias = registry.alias
    what = f"registered model {registry.registered_model!r} alias {registry.alias!r}"
    if poll is None:  # the first resolution is under way
        return status.model_copy(update={"registry": new}), [], None
    new.last_poll_time = poll.at
    result = poll.result
    events: list[EmitEvent] = []
    if isinstance(result, RegistryProblem):
        message = f"{what}: {result.message}"[:MAX_MESSAGE]
        new.error = message
        if old.error != message:
            events.append(EmitEvent("Warning", EventReason.REGISTRY_UNREACHABLE, message))
        conditions = _condition(status, False, result.kind, message, now, generation)
        return status.model_copy(update={"registry": new, "conditions": conditions}), events, None

    new.error = None
    new.resolved_version = result.registry_version
    new.resolved_model_version = result.model_version
    new.resolved_uri = result.uri
    new.known_versions = _remember(old.known_versions, result.model_version, result.registry_version)
    served = spec.model.version
    message = f"{what} -> version {result.registry_version} ({result.model_version})"
    conditions = _condition(status, True, cond.REASON_REGISTRY_RESOLVED, message, now, generation)
    patch: PatchModel | None = None
    if result.model_version == served:
        new.pending_version = None
        if registry.update_policy == RegistryUpdatePolicy.APPLY:
            new.applied_version = result.registry_version
    elif (
        registry.update_policy == RegistryUpdatePolicy.APPLY
        and old.applied_version != result.registry_version
    ):
        patch = PatchModel(version=result.model_version, uri=result.uri, sha256=result.sha256)
        new.applied_version = result.registry_version
        new.pending_version = None
        events.append(
            EmitEvent(
                "Normal",
                EventReason.MODEL_VERSION_APPLIED,
                f"{message}: spec.model.version {served} -> {result.model_version} (updatePolicy Apply)",
            )
        )
    else:
        # Propose, or Apply after someone set the spec by hand: report the difference, never fight it.
        new.pending_version = result.model_version
        if old.pending_version != result.model_version:
            events.append(
                EmitEvent(
                    "Normal",
                    EventReason.NEW_MODEL_VERSION_AVAILABLE,
                    f"{message} while spec.model.version is {served}: set spec.model.version "
                    f"{result.model_version} and spec.model.uri {result.uri} to roll it out",
                )
            )
    return status.model_copy(update={"registry": new, "conditions": conditions}), events, patch


def _mark(record: RolloutRecord) -> str:
    return f"{record.version}/{record.outcome.value}/{record.finished_at.isoformat()}"


def write_backs(registry: ModelRegistry, status: ModelDeploymentStatus) -> list[WriteBack]:
    """Finished rollouts of versions that came through the alias, not yet written to the registry.

    Superseded rollouts are not outcomes of the version itself and are not written."""
    reg = status.registry
    if reg is None:
        return []
    pending: list[WriteBack] = []
    for record in status.history:
        if record.outcome == RolloutOutcome.SUPERSEDED:
            continue
        registry_version = reg.known_versions.get(record.version)
        mark = _mark(record)
        if registry_version is None or mark in reg.written_back:
            continue
        promoted = record.outcome == RolloutOutcome.PROMOTED
        pending.append(
            WriteBack(
                registry_version=registry_version,
                outcome="promoted" if promoted else "rolled-back",
                reason=record.reason,
                set_alias=registry.promotion_alias if promoted else None,
                mark=mark,
            )
        )
    return pending


def record_written(status: ModelDeploymentStatus, marks: list[str]) -> ModelDeploymentStatus:
    if not marks or status.registry is None:
        return status
    written = [*status.registry.written_back, *marks][-MAX_WRITTEN_BACK:]
    return status.model_copy(
        update={"registry": status.registry.model_copy(update={"written_back": written})}
    )
