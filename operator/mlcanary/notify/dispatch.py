"""Delivery of notifications in the background: a bounded queue and a few worker tasks.

:meth:`Notifier.submit` never waits: a tick hands its Events over and carries on, so a receiver that
is slow, down or never answers cannot delay a step, a promotion or a rollback. Each delivery reads its
Secrets when it is sent (so a rotated webhook URL applies at once), tries ``attempts`` times with
exponential backoff and a per-attempt timeout, and is counted in
``mlcanary_notifications_total{provider,result}`` (sent, failed, dropped — dropped when the queue is
full). Webhook URLs and HMAC keys are credentials: they are never logged, nor put in status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiohttp

from mlcanary.engine import EmitEvent
from mlcanary.models import ModelDeploymentSpec, ModelDeploymentStatus, NotificationRoute
from mlcanary.notify.messages import Notice, notice_for, render

logger = logging.getLogger(__name__)


class SecretReader(Protocol):
    async def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...


class Counter(Protocol):
    def count_notification(self, provider: str, result: str) -> None: ...


@dataclass(frozen=True)
class Delivery:
    route: NotificationRoute
    route_index: int
    notice: Notice

    @property
    def what(self) -> str:
        """How logs name a delivery: never by its URL."""
        n = self.notice
        return (
            f"{n.namespace}/{n.name}: {n.reason} to notifications[{self.route_index}] ({self.route.provider})"
        )


class Notifier:
    def __init__(
        self,
        secrets: SecretReader,
        counter: Counter,
        *,
        queue_size: int = 256,
        workers: int = 4,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.secrets = secrets
        self.counter = counter
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self.workers = workers
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self._tasks: list[asyncio.Task[None]] = []
        # aiohttp, not httpx: httpx logs every request URL at INFO, and a webhook URL is a credential.
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        self._tasks = [loop.create_task(self._work(), name=f"notifier {i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self) -> None:
        """Wait until every queued delivery has been sent or given up (tests, shutdown)."""
        await self.queue.join()

    # ------------------------------------------------------------------------------------- submit

    def submit(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        events: Iterable[EmitEvent],
        now: datetime,
    ) -> int:
        """Queue a delivery per (Event, route that wants its reason); never waits. Returns how many
        were queued."""
        queued = 0
        for event in events:
            for index, route in enumerate(spec.notifications):
                if event.reason not in route.reasons:
                    continue
                notice = notice_for(
                    event.reason,
                    event.type,
                    event.message,
                    namespace=namespace,
                    name=name,
                    uid=uid,
                    status=status,
                    now=now,
                )
                delivery = Delivery(route, index, notice)
                try:
                    self.queue.put_nowait(delivery)
                except asyncio.QueueFull:
                    self.counter.count_notification(route.provider, "dropped")
                    logger.warning("%s: dropped, the notification queue is full", delivery.what)
                    continue
                queued += 1
        return queued

    # ------------------------------------------------------------------------------------ deliver

    async def _work(self) -> None:
        while True:
            delivery = await self.queue.get()
            try:
                sent = await self._deliver(delivery)
                self.counter.count_notification(delivery.route.provider, "sent" if sent else "failed")
            except Exception:  # a bug must not end the worker
                self.counter.count_notification(delivery.route.provider, "failed")
                logger.exception("%s: delivery failed", delivery.what)
            finally:
                self.queue.task_done()

    async def _deliver(self, delivery: Delivery) -> bool:
        route, notice = delivery.route, delivery.notice
        try:
            url = await self._secret(notice.namespace, route.url_secret.name, route.url_secret.key)
            key = None
            if route.hmac_secret is not None:
                key = await self._secret(notice.namespace, route.hmac_secret.name, route.hmac_secret.key)
        except Exception as error:  # the name of the Secret and key is safe to log; its data is not
            logger.warning("%s: cannot read its Secret: %s", delivery.what, _safe(error))
            return False
        request = render(route.provider, notice, route.mode, key)
        assert self._session is not None, "Notifier.start() was not called"
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                async with (
                    asyncio.timeout(self.timeout_seconds),
                    # No redirects: a webhook that redirects elsewhere is not followed with our payload.
                    self._session.post(
                        url, data=request.body, headers=request.headers, allow_redirects=False
                    ) as response,
                ):
                    code = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                # Client errors can quote the URL: log the error's type only.
                logger.warning("%s: attempt %d failed: %s", delivery.what, attempt + 1, type(error).__name__)
                continue
            if 200 <= code < 300:
                return True
            logger.warning("%s: attempt %d answered HTTP %d", delivery.what, attempt + 1, code)
            if code < 500 and code not in (408, 429):
                return False  # the receiver refuses this request: sending it again will not help
        return False

    async def _secret(self, namespace: str, name: str, key: str) -> str:
        data = await self.secrets.read_secret(namespace, name)
        if key not in data:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return data[key].strip()


def _safe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return str(error.args[0]) if error.args else "KeyError"
    return f"{type(error).__name__}: {getattr(error, 'message', '')}".rstrip(": ")
