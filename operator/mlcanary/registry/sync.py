"""spec.model.registry in a tick: subscribe to the shared poller, apply :mod:`core`'s decision, write
outcomes back. Called by :mod:`mlcanary.reconcile`; the decisions are in :mod:`mlcanary.registry.core`.

Credentials are read from the Secret when the subscription starts or changes and again when the
registry refuses them (at most once per poll interval), not at every tick: an idle ModelDeployment
still costs no API request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mlcanary.durations import parse_duration
from mlcanary.engine import EmitEvent
from mlcanary.kube import MODEL_DEPLOYMENTS, Kube
from mlcanary.kubeapi.client import MERGE_PATCH
from mlcanary.models import EventReason, ModelDeploymentSpec, ModelDeploymentStatus, ModelRegistry
from mlcanary.registry import core
from mlcanary.registry.client import Credentials, RegistryError
from mlcanary.registry.core import ProblemKind, RegistryProblem
from mlcanary.registry.poller import PollKey, RegistryPoller

logger = logging.getLogger(__name__)


class CredentialsError(Exception):
    pass


async def read_credentials(kube: Kube, namespace: str, registry: ModelRegistry) -> Credentials:
    """The registry's credentials from its Secret; the error names the Secret and key, never data."""
    try:
        if registry.bearer_token_secret is not None:
            ref = registry.bearer_token_secret
            data = await kube.read_secret(namespace, ref.name)
            if ref.key not in data:
                raise CredentialsError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
            return Credentials(token=data[ref.key].strip())
        if registry.basic_auth_secret is not None:
            data = await kube.read_secret(namespace, registry.basic_auth_secret)
            missing = [k for k in ("username", "password") if k not in data]
            if missing:
                raise CredentialsError(
                    f"Secret {namespace}/{registry.basic_auth_secret} has no key {', '.join(missing)}"
                )
            return Credentials(username=data["username"], password=data["password"])
    except CredentialsError:
        raise
    except Exception as error:  # e.g. the Secret does not exist, or reading Secrets is not allowed
        raise CredentialsError(
            f"cannot read the registry's Secret: {type(error).__name__}: {error}"
        ) from None
    return Credentials()


def _config(namespace: str, registry: ModelRegistry) -> str:
    return hashlib.sha256(f"{namespace}\0{registry.model_dump_json()}".encode()).hexdigest()[:16]


class RegistrySync:
    """Per-operator state of the registry feature: the poller and when each Secret was last read."""

    def __init__(self, poller: RegistryPoller | None = None) -> None:
        self.poller = poller or RegistryPoller()
        self._secret_read_at: dict[str, float] = {}
        self._credentials_problem: dict[str, RegistryProblem] = {}
        self._write_back_reported: dict[str, str] = {}
        self._retry: dict[str, asyncio.TimerHandle] = {}

    def forget(self, uid: str) -> None:
        self.poller.unsubscribe(uid)
        self._secret_read_at.pop(uid, None)
        self._credentials_problem.pop(uid, None)
        self._write_back_reported.pop(uid, None)
        retry = self._retry.pop(uid, None)
        if retry is not None:
            retry.cancel()

    async def _ensure_subscribed(
        self, kube: Kube, uid: str, namespace: str, registry: ModelRegistry, wake: Callable[[], None]
    ) -> None:
        interval = parse_duration(registry.poll_interval).total_seconds()
        config = _config(namespace, registry)
        latest = self.poller.latest(uid)
        refused = (
            latest is not None
            and isinstance(latest.result, RegistryProblem)
            and latest.result.kind == ProblemKind.UNAUTHORIZED
        )
        read_recently = time.monotonic() - self._secret_read_at.get(uid, 0.0) < interval
        if self.poller.config_of(uid) == config and not (refused and not read_recently):
            return
        if uid in self._credentials_problem and self.poller.config_of(uid) is None and read_recently:
            return  # the Secret was unreadable a moment ago: try again after an interval
        self._secret_read_at[uid] = time.monotonic()
        try:
            credentials = await read_credentials(kube, namespace, registry)
        except CredentialsError as error:
            self.poller.unsubscribe(uid)
            self._credentials_problem[uid] = RegistryProblem(ProblemKind.CREDENTIALS_UNAVAILABLE, str(error))
            # Nothing watches Secrets: try again after an interval even if the object is idle.
            previous = self._retry.pop(uid, None)
            if previous is not None:
                previous.cancel()
            self._retry[uid] = asyncio.get_running_loop().call_later(interval + 0.1, wake)
            return
        self._credentials_problem.pop(uid, None)
        key: PollKey = (
            registry.tracking_uri.rstrip("/"),
            registry.registered_model,
            registry.alias,
            credentials.fingerprint(),
        )
        self.poller.subscribe(
            uid,
            key,
            credentials,
            interval=interval,
            timeout=parse_duration(registry.timeout).total_seconds(),
            wake=wake,
            config=config,
        )

    async def observe(
        self,
        kube: Kube,
        obj: dict[str, Any],
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        now: datetime,
        generation: int,
        wake: Callable[[str], None],
    ) -> tuple[ModelDeploymentStatus, list[EmitEvent], core.PatchModel | None]:
        """The registry part of a tick: the status with status.registry and RegistryReachable set."""
        meta = obj["metadata"]
        uid = str(meta["uid"])
        registry = spec.model.registry
        if registry is None:
            self.forget(uid)
            return core.decide(spec, status, None, now, generation)
        await self._ensure_subscribed(kube, uid, meta["namespace"], registry, lambda: wake(uid))
        problem = self._credentials_problem.get(uid)
        poll = core.Poll(at=now, result=problem) if problem is not None else self.poller.latest(uid)
        return core.decide(spec, status, poll, now, generation)

    async def apply_model(self, kube: Kube, obj: dict[str, Any], patch: core.PatchModel) -> dict[str, Any]:
        """updatePolicy Apply: patch spec.model under our own field manager; the patched object."""
        meta = obj["metadata"]
        kube.writes += 1
        patched: dict[str, Any] = await kube.api.request(
            "PATCH",
            MODEL_DEPLOYMENTS.path(meta["namespace"], meta["name"]),
            body=patch.merge_patch(),
            params={"fieldManager": core.FIELD_MANAGER},
            content_type=MERGE_PATCH,
        )
        return patched

    async def write_back(
        self, spec: ModelDeploymentSpec, obj: dict[str, Any], status: ModelDeploymentStatus
    ) -> tuple[ModelDeploymentStatus, list[EmitEvent]]:
        """Tag the registry's versions with the outcomes of finished rollouts (and set the promotion
        alias); what fails is retried at the next tick and reported once per message."""
        registry = spec.model.registry
        if registry is None:
            return status, []
        pending = core.write_backs(registry, status)
        if not pending:
            return status, []
        uid = str(obj["metadata"]["uid"])
        loop_client = self.poller.client_of(uid)
        if loop_client is None:
            return status, []
        meta = obj["metadata"]
        deployment = f"{meta['namespace']}/{meta['name']}"
        done: list[str] = []
        events: list[EmitEvent] = []
        for item in pending:
            try:
                for key, value in item.tags(deployment).items():
                    await loop_client.set_tag(registry.registered_model, item.registry_version, key, value)
                if item.set_alias is not None:
                    await loop_client.set_alias(
                        registry.registered_model, item.set_alias, item.registry_version
                    )
            except RegistryError as error:
                message = f"writing outcome {item.outcome} to version {item.registry_version}: {error.problem.message}"
                if self._write_back_reported.get(uid) != message:
                    self._write_back_reported[uid] = message
                    logger.warning("%s: %s", deployment, message)
                    events.append(EmitEvent("Warning", EventReason.REGISTRY_UNREACHABLE, message[:500]))
                break
            done.append(item.mark)
        if done and len(done) == len(pending):
            self._write_back_reported.pop(uid, None)
        return core.record_written(status, done), events
