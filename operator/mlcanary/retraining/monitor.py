"""The one retraining loop of the operator, and the webhook sender. I/O at the edge.

:class:`RetrainingMonitor` evaluates every ModelDeployment's triggers together: each tick subscribes
its object (model name, stable version, trigger kinds, accuracy window), and every
``interval_seconds`` the loop runs one Prometheus query per metric kind (accuracy: per distinct
window) across all subscriptions, stores a :class:`~mlcanary.retraining.core.Sample` per object and
kind, and wakes the subscribed objects so their ticks judge the new samples. A thousand
ModelDeployments with drift triggers cost one input-drift query per interval, not a thousand.

:class:`WebhookSender` delivers a training request as a CloudEvent 1.0 (structured JSON), signed like
spec.notifications (``X-Mlcanary-Signature: sha256=<hex>`` over the body bytes). URL and key are read
from Secrets at send time and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp

from mlcanary.models import RetrainWebhook
from mlcanary.retraining import queries as rq
from mlcanary.retraining.core import MISSING_RUN_GRACE, Sample
from mlcanary.retraining.requests import TrainingRequest, cloudevent

logger = logging.getLogger(__name__)


class RetrainingMonitor:
    def __init__(
        self,
        prometheus_url: str,
        *,
        interval_seconds: float,
        timeout_seconds: float,
        namespace_label: str | None,
        wake: Callable[[str], None] = lambda uid: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.prometheus_url = prometheus_url.rstrip("/")
        self.interval_seconds = interval_seconds
        self.timeout_seconds = timeout_seconds
        self.namespace_label = namespace_label
        self.wake = wake
        self.clock = clock
        self.subscriptions: dict[str, rq.Subscription] = {}
        self._samples: dict[str, dict[str, Sample]] = {}
        self.queries_sent = 0  # every Prometheus request, for tests and figures
        self.evaluations = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def subscribe(self, uid: str, subscription: rq.Subscription | None) -> None:
        if subscription is None or not subscription.kinds:
            self.subscriptions.pop(uid, None)
            self._samples.pop(uid, None)
            return
        if self.subscriptions.get(uid) != subscription:
            self._samples.pop(uid, None)  # another version or trigger set: old readings do not apply
        self.subscriptions[uid] = subscription

    def samples(self, uid: str, now: datetime) -> dict[str, Sample]:
        return {
            kind: sample
            for kind, sample in self._samples.get(uid, {}).items()
            if not rq.stale(sample.at, now, self.interval_seconds)
        }

    def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retraining monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.evaluate()
            except Exception:  # never the end of the loop
                logger.exception("retraining evaluation failed")
            await asyncio.sleep(self.interval_seconds)

    async def evaluate(self) -> None:
        """One evaluation of every subscription: one query per kind, then wake the objects."""
        subscriptions = dict(self.subscriptions)
        if not subscriptions:
            return
        now = self.clock()
        scoped = self.namespace_label is not None
        batch = rq.batch_queries(subscriptions.values(), self.namespace_label)
        answers = await asyncio.gather(*(self._query(q.promql) for q in batch))
        self.evaluations += 1
        for query, result in zip(batch, answers, strict=True):
            if result is None:
                continue  # Prometheus failed: keep the last readings until they go stale
            readings = rq.parse_result(query, result, self.namespace_label)
            for uid, sub in subscriptions.items():
                if query.kind not in sub.kinds or (query.window is not None and query.window != sub.window):
                    continue
                reading = readings.get(sub.key(scoped), rq.Reading(None))
                self._samples.setdefault(uid, {})[query.kind] = Sample(reading.value, now, reading.samples)
        for uid in subscriptions:
            self.wake(uid)

    async def _query(self, promql: str) -> list[Mapping[str, Any]] | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.queries_sent += 1
        try:
            async with (
                asyncio.timeout(self.timeout_seconds),
                # POST (form-encoded, which the query API accepts): the batched selector names every
                # subscribed model, and a thousand of them would overrun a GET's request line.
                self._session.post(
                    f"{self.prometheus_url}/api/v1/query",
                    data={"query": promql, "timeout": f"{self.timeout_seconds:g}s"},
                ) as response,
            ):
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            logger.warning("retraining query failed: %s", type(error).__name__)
            return None
        if not isinstance(body, dict) or body.get("status") != "success":
            logger.warning("retraining query refused: %s", str((body or {}).get("error"))[:200])
            return None
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            return []
        result: list[Mapping[str, Any]] = data.get("result") or []
        return result


class SecretReader(Protocol):
    async def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...


class WebhookSender:
    """Delivers training requests in the background; the outcome of each is kept for the next tick."""

    def __init__(
        self,
        secrets: SecretReader,
        *,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_seconds: float = 1.0,
        wake: Callable[[str], None] = lambda uid: None,
    ) -> None:
        self.secrets = secrets
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.wake = wake
        self.outcomes: dict[tuple[str, str], bool] = {}  # (uid, run) -> delivered
        self._tasks: set[asyncio.Task[None]] = set()

    def outcome(self, uid: str, run: str) -> bool | None:
        return self.outcomes.get((uid, run))

    def send(self, uid: str, webhook: RetrainWebhook, request: TrainingRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._send(uid, webhook, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def forget(self, uid: str) -> None:
        for key in [k for k in self.outcomes if k[0] == uid]:
            del self.outcomes[key]

    async def _send(self, uid: str, webhook: RetrainWebhook, request: TrainingRequest) -> None:
        # Every attempt ends well before the core gives up waiting for an outcome and calls it failed.
        budget = (MISSING_RUN_GRACE - timedelta(seconds=15)).total_seconds()
        try:
            async with asyncio.timeout(budget):
                delivered = await self._deliver(webhook, request)
        except TimeoutError:
            logger.warning(
                "%s/%s: training request %s: no answer within %.0fs",
                request.namespace,
                request.name,
                request.run,
                budget,
            )
            delivered = False
        self.outcomes[(uid, request.run)] = delivered
        if len(self.outcomes) > 10_000:  # bounded: the oldest outcomes were long read
            for key in list(self.outcomes)[:1000]:
                del self.outcomes[key]
        self.wake(uid)

    async def _deliver(self, webhook: RetrainWebhook, request: TrainingRequest) -> bool:
        what = f"{request.namespace}/{request.name}: training request {request.run}"
        try:
            url = await self._secret(request.namespace, webhook.url_secret.name, webhook.url_secret.key)
            key = None
            if webhook.hmac_secret is not None:
                key = await self._secret(request.namespace, webhook.hmac_secret.name, webhook.hmac_secret.key)
        except Exception as error:  # the Secret's name is safe to log, its data is not
            logger.warning("%s: cannot read its Secret: %s", what, type(error).__name__)
            return False
        headers, body = cloudevent(request, key)
        async with aiohttp.ClientSession() as session:
            for attempt in range(self.attempts):
                if attempt:
                    await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
                try:
                    async with (
                        asyncio.timeout(self.timeout_seconds),
                        session.post(url, data=body, headers=headers, allow_redirects=False) as response,
                    ):
                        code = response.status
                except (aiohttp.ClientError, TimeoutError) as error:
                    logger.warning("%s: attempt %d failed: %s", what, attempt + 1, type(error).__name__)
                    continue
                if 200 <= code < 300:
                    return True
                logger.warning("%s: attempt %d answered HTTP %d", what, attempt + 1, code)
                if code < 500 and code not in (408, 429):
                    return False
        return False

    async def _secret(self, namespace: str, name: str, key: str) -> str:
        data = await self.secrets.read_secret(namespace, name)
        if key not in data:
            raise KeyError(key)
        return data[key].strip()
