"""One loop per ModelDeployment, woken by what changes and paced by what is in flight.

A tick runs when something changed — the object (spec, annotations), one of its children (the
informers see a hand edit or a pod becoming ready within moments), a finished analysis round — and
otherwise every ``tick_seconds`` while a rollout is in flight, or every ``idle_seconds`` once the
object is settled (Healthy, RolledBack or Paused, nothing retiring, traffic confirmed, nothing
written). An idle object therefore costs no API request and almost no CPU between changes.

A tick that fails for any reason (an API error, a bug) is reported — the ``Reconciled`` condition
and an Event — an abort is still acted on (:func:`mlcanary.reconcile.report_failure`), and the tick
is tried again after ``tick_seconds``.

Nothing here imports Kopf: :mod:`mlcanary.handlers` runs :meth:`Runner.run` as a Kopf daemon per
object and forwards Kopf's events to :meth:`Runner.notify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlcanary import routers
from mlcanary.kubeapi.informer import newer, resource_version
from mlcanary.reconcile import OperatorContext, TickResult, reconcile, report_failure
from mlcanary.resources import LABEL_MDEP

logger = logging.getLogger(__name__)


class Stopper(Protocol):
    """When the loop must end: an asyncio.Event, or Kopf's daemon flag (without importing Kopf)."""

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[Any]: ...


@dataclass
class ObjectLoop:
    uid: str
    namespace: str
    name: str
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    ticks: int = 0
    failures: int = 0


class Runner:
    def __init__(self, ctx: OperatorContext, *, min_gap: float = 0.1, concurrent_ticks: int = 2) -> None:
        self.ctx = ctx
        self.loops: dict[str, ObjectLoop] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self.min_gap = min(min_gap, ctx.settings.tick_seconds)
        # At most this many ticks at once (like controller-runtime's MaxConcurrentReconciles): when
        # a thousand objects start together their requests queue here, not in the connection pool
        # where they would time out. Two: ticks share one event loop and mostly wait on the API
        # server, so more at once only stretch each other (50 concurrent rollouts on the emulator:
        # p99 tick 91 ms with 2, 150 ms with 4, 250 ms with 8 and 16) and finish no sooner (8 s).
        self._ticking = asyncio.Semaphore(concurrent_ticks)
        ctx.wake = self.wake
        # Loops whose last tick did not settle; when the first wave (a start with objects to deploy)
        # has settled, what lives then is frozen out of the collector's full passes (see settled()).
        self._unsettled: set[str] = set()
        self._frozen_after_first_wave = False

    # ------------------------------------------------------------------------------- wake-ups

    def wake(self, uid: str) -> None:
        loop = self.loops.get(uid)
        if loop is not None:
            loop.woken.set()

    def notify(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event of a ModelDeployment (from Kopf)."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid"))
        if event_type == "DELETED":
            self.forget(uid, str(meta.get("namespace")), str(meta.get("name")))
            return
        written = self.ctx.last_written.get(uid)
        if written is not None and not newer(resource_version(written), resource_version(dict(body))):
            # The watch has caught up with our last status write: Kopf's body is fresh again.
            del self.ctx.last_written[uid]
            if resource_version(written) == resource_version(dict(body)):
                return  # the echo of our own write: nothing new to act on
        self.wake(uid)

    def notify_child(self, event_type: str, child: Mapping[str, Any]) -> None:
        """An informer event of a child object: wake its ModelDeployment's loop."""
        meta = child.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(LABEL_MDEP)
        if owner is None:
            return
        uid = self._by_name.get((str(meta.get("namespace")), str(owner)))
        if uid is not None:
            self.wake(uid)

    def forget(self, uid: str, namespace: str, name: str) -> None:
        """The ModelDeployment is gone: drop its state and its metric series."""
        self.ctx.forget(uid)
        self._unsettled.discard(uid)
        self.ctx.metrics.forget(namespace, name)
        routers.forget(namespace, name)
        loop = self.loops.pop(uid, None)
        if loop is not None:
            self._by_name.pop((loop.namespace, loop.name), None)
            loop.woken.set()

    # ----------------------------------------------------------------------------------- loop

    async def run(self, body: Mapping[str, Any], stopped: Stopper) -> None:
        """Tick the object until ``stopped`` is set. ``body`` is kept up to date by the caller."""
        meta = body["metadata"]
        loop = ObjectLoop(uid=str(meta["uid"]), namespace=str(meta["namespace"]), name=str(meta["name"]))
        self.loops[loop.uid] = loop
        self._by_name[(loop.namespace, loop.name)] = loop.uid
        try:
            while not stopped.is_set() and self.loops.get(loop.uid) is loop:
                loop.woken.clear()
                # Only the delay outlives the tick: a thousand idle loops must not each hold a status.
                delay = self._delay(await self._tick(loop, body))
                await self._sleep(loop, stopped, delay)
        finally:
            if self.loops.get(loop.uid) is loop:
                del self.loops[loop.uid]
                self._by_name.pop((loop.namespace, loop.name), None)

    async def _tick(self, loop: ObjectLoop, body: Mapping[str, Any]) -> TickResult | None:
        async with self._ticking:
            result = await self._tick_now(loop, body)
        self._settled(loop.uid, result is not None and result.settled)
        return result

    def _settled(self, uid: str, settled: bool) -> None:
        """Track settled loops; once every loop has settled after the first wave, ``gc.freeze()``.

        A full collection walks every live container: with hundreds of objects' caches, bodies and
        statuses that is a ~100 ms pause inside some tick (measured: the tail of the reconcile
        duration). Frozen objects are skipped by the cyclic collector (acyclic ones are still freed
        by reference counting), so a full pass then walks only what changed since."""
        if settled:
            self._unsettled.discard(uid)
        else:
            self._unsettled.add(uid)
            return
        if not self._unsettled and not self._frozen_after_first_wave and self.loops:
            self._frozen_after_first_wave = True
            gc.collect()
            gc.freeze()

    async def _tick_now(self, loop: ObjectLoop, body: Mapping[str, Any]) -> TickResult | None:
        obj = copy.deepcopy(dict(body))
        loop.ticks += 1
        try:
            result = await reconcile(obj, self.ctx, reread=loop.failures > 0)
        except Exception as error:  # any failure is reported, never the end of the loop
            loop.failures += 1
            self.ctx.metrics.tick_failures.inc()
            logger.exception("%s/%s: tick failed", loop.namespace, loop.name)
            await report_failure(obj, self.ctx, error)
            return None
        loop.failures = 0
        return result

    def _delay(self, result: TickResult | None) -> float:
        settings = self.ctx.settings
        if result is None or result.status is None or not result.settled:
            return settings.tick_seconds
        return max(settings.tick_seconds, settings.idle_seconds)

    async def _sleep(self, loop: ObjectLoop, stopped: Stopper, delay: float) -> None:
        """Sleep ``delay`` seconds, or until woken (after ``min_gap``, so bursts coalesce) or stopped."""
        woken = asyncio.ensure_future(loop.woken.wait())
        done = asyncio.ensure_future(_awaited(stopped.wait()))
        try:
            await asyncio.wait({woken, done}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, done):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if loop.woken.is_set() and not stopped.is_set():
            await asyncio.sleep(self.min_gap)


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable
