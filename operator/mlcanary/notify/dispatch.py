"""Delivery of notifications in the background: bounded queues, one sender task per receiver.

:meth:`Notifier.submit` never waits: a tick hands its Events over and carries on, so a receiver that
is slow, down or never answers cannot delay a step, a promotion or a rollback. Each delivery reads its
Secrets when it is sent (so a rotated webhook URL applies at once), tries ``attempts`` times with
exponential backoff and a per-attempt timeout, and is counted in
``mlcanary_notifications_total{provider,result}`` (sent, failed, dropped — dropped when the queue is
full). Webhook URLs and HMAC keys are credentials: they are never logged, nor put in status.
"""

from __future__ import annotations

import asyncio
import collections
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


LaneKey = tuple[str, str, int]  # (namespace, ModelDeployment, route index): one receiver


class Notifier:
    """Bounded background delivery, one lane (a FIFO and its sender task) per receiver.

    Lanes keep receivers apart: a receiver that never answers holds up only its own lane, never the
    notifications of the other routes, and each receiver gets its notifications in order. A lane's
    task ends when its queue is empty. Bounds: ``queue_size`` notifications pending in all, and
    ``lane_size`` per receiver; past either a new notification is dropped (and counted)."""

    def __init__(
        self,
        secrets: SecretReader,
        counter: Counter,
        *,
        queue_size: int = 256,
        lane_size: int = 32,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.secrets = secrets
        self.counter = counter
        self.queue_size = queue_size
        self.lane_size = min(lane_size, queue_size)
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.pending = 0
        self._lanes: dict[LaneKey, collections.deque[Delivery]] = {}
        self._senders: dict[LaneKey, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        # aiohttp, not httpx: httpx logs every request URL at INFO, and a webhook URL is a credential.
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        # trust_env: webhooks outside the cluster go through HTTPS_PROXY/NO_PROXY when the chart sets them.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds), trust_env=True
        )
        self._started = True
        for key in self._lanes:
            self._ensure_sender(key)

    async def stop(self) -> None:
        self._started = False
        senders = list(self._senders.values())
        for task in senders:
            task.cancel()
        for task in senders:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._senders.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self) -> None:
        """Wait until every queued delivery has been sent or given up (tests, shutdown)."""
        await self._idle.wait()

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
                key = (namespace, name, index)
                lane = self._lanes.setdefault(key, collections.deque())
                if self.pending >= self.queue_size or len(lane) >= self.lane_size:
                    if not lane:
                        del self._lanes[key]
                    self.counter.count_notification(route.provider, "dropped")
                    logger.warning("%s: dropped, the notification queue is full", delivery.what)
                    continue
                lane.append(delivery)
                self.pending += 1
                self._idle.clear()
                self._ensure_sender(key)
                queued += 1
        return queued

    def _ensure_sender(self, key: LaneKey) -> None:
        if self._started and key not in self._senders:
            task = asyncio.get_running_loop().create_task(self._send_lane(key), name=f"notify {key}")
            self._senders[key] = task

    # ------------------------------------------------------------------------------------ deliver

    async def _send_lane(self, key: LaneKey) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                delivery = lane[0]
                try:
                    sent = await self._deliver(delivery)
                    self.counter.count_notification(delivery.route.provider, "sent" if sent else "failed")
                except Exception:  # a bug must not stop the lane
                    self.counter.count_notification(delivery.route.provider, "failed")
                    logger.exception("%s: delivery failed", delivery.what)
                lane.popleft()
                self.pending -= 1
        finally:
            # The lane is empty (or the notifier stops): forget it; submit() starts a new sender.
            if not lane:
                self._lanes.pop(key, None)
            self._senders.pop(key, None)
            if self.pending == 0:
                self._idle.set()

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
