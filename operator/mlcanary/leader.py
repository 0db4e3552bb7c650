"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics, in asyncio.

Why not ``kubernetes.leaderelection``: it runs in a thread with the synchronous client and calls back
from that thread, while the operator is one asyncio process on its own client layer
(:mod:`mlcanary.kubeapi`); this is the same algorithm (``tryAcquireOrRenew``) in about a hundred lines,
counted and named like every other request of the operator.

- A follower reads the Lease every ``retry_period``. It takes the Lease over when the holder is empty
  or the record it read has not changed for the holder's ``leaseDurationSeconds`` (measured on the
  follower's own monotonic clock from when it first saw that record, so clock skew between pods does
  not matter), by a PUT that carries the ``resourceVersion`` it read: of two followers racing, one
  gets 409 Conflict and stays a follower.
- The leader renews every ``retry_period``. When no renewal has succeeded for ``renew_deadline``
  (< lease duration) it has lost: :meth:`LeaderElector.hold` returns and the caller ends the process.
  The time a renewal counts from is when its request was sent, so the leader gives up before any
  follower can have seen the lease expire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from mlcanary.kubeapi import LEASES, ApiError, Obj, Transport
from mlcanary.settings import LeaderElection

logger = logging.getLogger(__name__)


def micro_time(at: datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self, api: Transport, config: LeaderElection, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime, resourceVersion) last read
        self._observed_at = 0.0
        self._observed_duration = float(config.lease_duration)
        self.is_leader = False
        self.renewed_at = 0.0  # when the last successful acquire/renew was sent (monotonic)

    async def acquire(self) -> None:
        """Return once this process holds the Lease (retrying every jittered ``retry_period``)."""
        logger.info(
            "leader election: %s waits for lease %s/%s",
            self.config.identity,
            self.config.namespace,
            self.config.lease_name,
        )
        while not await self._attempt():  # noqa: ASYNC110 - polling the API server is the algorithm
            await asyncio.sleep(self.config.retry_period * random.uniform(1.0, 1.2))
        logger.info("leader election: %s leads (lease %s)", self.config.identity, self.config.lease_name)

    async def hold(self) -> None:
        """Renew every ``retry_period``; return when the Lease is lost (no renewal for ``renew_deadline``,
        or another holder took it)."""
        last_renewed = self.renewed_at
        while True:
            deadline = last_renewed + self.config.renew_deadline
            # Wake at the deadline at the latest: a leader must not outlive it by a retry period.
            await asyncio.sleep(max(0.0, min(self.config.retry_period, deadline - self.clock())))
            sent = self.clock()
            if sent >= deadline:
                break
            try:
                async with asyncio.timeout(deadline - sent):
                    renewed = await self._attempt()
            except TimeoutError:
                renewed = False
            if renewed:
                last_renewed = self.renewed_at
            elif not self.is_leader:
                break  # someone else holds it now
        self.is_leader = False
        logger.error(
            "leader election: %s lost lease %s/%s",
            self.config.identity,
            self.config.namespace,
            self.config.lease_name,
        )

    async def release(self) -> None:
        """Give the Lease up at a clean shutdown, so a follower takes over at its next retry."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.api.get(LEASES, self.config.namespace, self.config.lease_name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.config.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
            await self.api.replace(lease)
            logger.info("leader election: %s released lease %s", self.config.identity, self.config.lease_name)
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            logger.warning("leader election: could not release the lease: %s", error)

    async def _attempt(self) -> bool:
        """One ``tryAcquireOrRenew``: True when this process holds the Lease afterwards."""
        config = self.config
        now = self.clock()
        try:
            lease = await self.api.get(LEASES, config.namespace, config.lease_name)
            if lease is None:
                await self.api.create(self._lease(None, now))
                return self._took(now)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
            if record != self._observed:
                self._observed, self._observed_at = record, now
                self._observed_duration = float(spec.get("leaseDurationSeconds") or config.lease_duration)
            if holder and holder != config.identity:
                self.is_leader = False
                if now < self._observed_at + self._observed_duration:
                    return False  # held, and renewed within its duration
            await self.api.replace(self._lease(lease, now))
            return self._took(now)
        except ApiError as error:
            if error.conflict:  # another replica created or updated it first
                return False
            logger.warning("leader election: lease request failed: %s", error)
            return False
        except (aiohttp.ClientError, OSError) as error:
            logger.warning("leader election: API server unreachable: %s", error)
            return False

    def _took(self, now: float) -> bool:
        self.is_leader = True
        self.renewed_at = now  # counted from before the read: the server saw it no earlier
        self._observed, self._observed_at = None, now
        return True

    def _lease(self, current: Obj | None, now: float) -> Obj:
        config = self.config
        stamp = micro_time()
        spec = dict((current or {}).get("spec") or {})
        if spec.get("holderIdentity") != config.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if current else 0)
        spec.update(
            holderIdentity=config.identity, leaseDurationSeconds=config.lease_duration, renewTime=stamp
        )
        metadata = dict(current["metadata"]) if current else {}
        metadata.update(name=config.lease_name, namespace=config.namespace)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


async def start_standby_health(endpoint: str) -> Callable[[], Any]:
    """Answer the liveness endpoint (e.g. ``http://0.0.0.0:8081/healthz``) while waiting for the Lease
    (Kopf serves it once it runs): a follower is a healthy replica, not one for the kubelet to restart.
    Returns the coroutine function that frees the port for Kopf."""
    from urllib.parse import urlparse

    from aiohttp import web

    url = urlparse(endpoint)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"leader": False})

    app = web.Application()
    app.router.add_get(url.path or "/", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 80).start()
    return runner.cleanup
