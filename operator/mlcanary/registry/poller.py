"""One poll loop per (tracking URI, registered model, alias, credentials), shared by every
ModelDeployment that follows it: a thousand ModelDeployments on one alias cost one request per
interval (the shortest interval any of them asks for), not a thousand.

A loop resolves the alias, keeps the latest :class:`Poll`, and wakes its subscribers when what it
says changed (another version, another problem); their ticks read it with :meth:`latest`. A loop
ends when its last subscriber leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlcanary.registry.client import Credentials, MlflowClient, RegistryError
from mlcanary.registry.core import Poll, ProblemKind, RegistryProblem, ResolvedVersion

logger = logging.getLogger(__name__)

PollKey = tuple[str, str, str, str]  # (tracking URI, registered model, alias, credentials fingerprint)
ClientFactory = Callable[[str, Credentials, float], MlflowClient]


def default_client(tracking_uri: str, credentials: Credentials, timeout: float) -> MlflowClient:
    return MlflowClient(tracking_uri, credentials, timeout=timeout)


@dataclass
class Subscription:
    key: PollKey
    interval: float
    wake: Callable[[], None]
    config: str  # what the subscriber's registry block and Secret looked like (re-subscribe on change)


@dataclass
class _Loop:
    key: PollKey
    client: MlflowClient
    latest: Poll | None = None
    task: asyncio.Task[None] | None = None
    subscribers: set[str] = field(default_factory=set)
    kick: asyncio.Event = field(default_factory=asyncio.Event)


def _same(a: Poll | None, b: Poll) -> bool:
    return a is not None and a.result == b.result


class RegistryPoller:
    def __init__(
        self,
        client_factory: ClientFactory = default_client,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client_factory = client_factory
        self._clock = clock
        self._loops: dict[PollKey, _Loop] = {}
        self._subscriptions: dict[str, Subscription] = {}

    # ---------------------------------------------------------------------------- subscribers

    def config_of(self, uid: str) -> str | None:
        sub = self._subscriptions.get(uid)
        return sub.config if sub is not None else None

    def subscribe(
        self,
        uid: str,
        key: PollKey,
        credentials: Credentials,
        *,
        interval: float,
        timeout: float,
        wake: Callable[[], None],
        config: str,
    ) -> None:
        previous = self._subscriptions.get(uid)
        if previous is not None and previous.key != key:
            self.unsubscribe(uid)
        self._subscriptions[uid] = Subscription(key, interval, wake, config)
        loop = self._loops.get(key)
        if loop is None:
            client = self._client_factory(key[0], credentials, timeout)
            loop = self._loops[key] = _Loop(key, client)
            loop.task = asyncio.get_running_loop().create_task(self._run(loop), name=f"registry {key[1]}")
        loop.subscribers.add(uid)
        loop.kick.set()  # a shorter interval applies at once

    def unsubscribe(self, uid: str) -> None:
        sub = self._subscriptions.pop(uid, None)
        if sub is None:
            return
        loop = self._loops.get(sub.key)
        if loop is None:
            return
        loop.subscribers.discard(uid)
        if not loop.subscribers:
            del self._loops[sub.key]
            if loop.task is not None:
                loop.task.cancel()

    def latest(self, uid: str) -> Poll | None:
        sub = self._subscriptions.get(uid)
        loop = self._loops.get(sub.key) if sub is not None else None
        return loop.latest if loop is not None else None

    def client_of(self, uid: str) -> MlflowClient | None:
        """The client of the loop ``uid`` follows (its credentials), for writing back outcomes."""
        sub = self._subscriptions.get(uid)
        loop = self._loops.get(sub.key) if sub is not None else None
        return loop.client if loop is not None else None

    def requests(self) -> int:
        """Registry requests made by the loops alive now (for figures and tests)."""
        return sum(loop.client.requests for loop in self._loops.values())

    def loops(self) -> int:
        return len(self._loops)

    async def stop(self) -> None:
        for uid in list(self._subscriptions):
            self.unsubscribe(uid)
        await asyncio.sleep(0)

    # ----------------------------------------------------------------------------------- loop

    def _interval(self, loop: _Loop) -> float:
        intervals = [self._subscriptions[u].interval for u in loop.subscribers if u in self._subscriptions]
        return min(intervals) if intervals else 60.0

    async def _run(self, loop: _Loop) -> None:
        _, model, alias, _ = loop.key
        try:
            while True:
                loop.kick.clear()
                known = loop.latest.result if loop.latest is not None else None
                try:
                    result: ResolvedVersion | RegistryProblem = await loop.client.resolve(
                        model, alias, known if isinstance(known, ResolvedVersion) else None
                    )
                except RegistryError as error:
                    result = error.problem
                except Exception as error:  # a bug or an odd answer: reported, the loop goes on
                    logger.exception("registry poll of %s@%s failed", model, alias)
                    result = RegistryProblem(ProblemKind.UNREACHABLE, f"{type(error).__name__}")
                poll = Poll(at=self._clock(), result=result)
                # Refused credentials wake the followers at every poll, not only on a change: their
                # ticks re-read the Secret (at most once per interval), so a fixed Secret is picked
                # up within an interval even by an idle ModelDeployment.
                refused = isinstance(result, RegistryProblem) and result.kind == ProblemKind.UNAUTHORIZED
                changed = not _same(loop.latest, poll) or refused
                loop.latest = poll
                if changed:
                    for uid in list(loop.subscribers):
                        sub = self._subscriptions.get(uid)
                        if sub is not None:
                            sub.wake()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(loop.kick.wait(), timeout=self._interval(loop))
                # A kick (a new subscriber) only re-reads the interval; it does not poll early.
                while loop.kick.is_set():
                    loop.kick.clear()
                    remaining = self._interval(loop) - (self._clock() - poll.at).total_seconds()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(loop.kick.wait(), timeout=remaining)
        finally:
            with contextlib.suppress(Exception):
                await loop.client.close()
