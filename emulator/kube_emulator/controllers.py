"""Minimal controllers for Jobs, CronJobs and HPAs, on the emulator's event loop.

* :class:`JobSimulator` (with the emulator's built-in controllers, like the Deployment faker): a Job
  runs for ``emulator.mlcanary.io/job-duration`` seconds (default 0.1) and ends as the annotation
  ``emulator.mlcanary.io/job-outcome`` says: ``succeed`` (default), ``fail`` (every pod fails until
  ``backoffLimit``) or ``never`` (runs until ``activeDeadlineSeconds``). The local stack runs real
  processes instead (its kubelet writes the same status).
* :class:`CronJobController`, :class:`TtlController` (ttlSecondsAfterFinished) and
  :class:`HpaStatusController` run always: they only create, delete and write status, as the real
  controllers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from kube_emulator.errors import ApiError
from kube_emulator.store import Event, Obj, Store, now_rfc3339
from kube_emulator.workloads import (
    CRONJOBS,
    DURATION_ANNOTATION,
    HPAS,
    JOBS,
    OUTCOME_ANNOTATION,
    SCHEDULED_ANNOTATION,
    finished,
    job_failed_status,
    job_succeeded_status,
    parse_time,
)

logger = logging.getLogger(__name__)


class Controller:
    """Runs :meth:`sync` on the store's event loop: soon after an event of its resources, and every
    ``period`` seconds. Callbacks, not a task per wake-up: a controller with nothing to watch costs
    nothing per request."""

    keys: tuple[tuple[str, str], ...] = ()
    # Events of these resources matter only while objects of this one exist (e.g. HPAs for Deployments).
    needs: tuple[str, str] | None = None
    period = 1.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)
        self._tick()

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def poke(self) -> None:
        if self._loop is not None and not self._pending:
            self._pending = True
            self._loop.call_soon(self._run)

    def _on_event(self, event: Event) -> None:
        if event.key in self.keys and (
            self.needs is None or event.key == self.needs or self.store.has_objects(self.needs)
        ):
            self.poke()

    def _tick(self) -> None:
        if self._loop is None:
            return
        self.poke()
        self._timer = self._loop.call_later(self.period, self._tick)

    def _run(self) -> None:
        self._pending = False
        if self._loop is None:
            return
        try:
            self.sync()
        except ApiError:
            self._loop.call_later(0.01, self.poke)  # a racing write: again shortly
        except Exception:
            logger.exception("%s failed", type(self).__name__)

    def sync(self) -> None:
        raise NotImplementedError

    def _info(self, key: tuple[str, str]) -> Any:
        info = self.store.registry.preferred(key)
        assert info is not None
        return info

    def _write_status(self, key: tuple[str, str], obj: Obj, status: dict[str, Any]) -> None:
        if obj.get("status") == status:
            return
        meta = obj["metadata"]
        self.store.update(
            self._info(key),
            meta.get("namespace"),
            meta["name"],
            {**obj, "status": status},
            subresource="status",
        )


class JobSimulator(Controller):
    """Runs no pods: each Job succeeds or fails after a while, as its annotations say."""

    keys = (JOBS,)
    period = 0.05

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._started: dict[str, float] = {}  # uid -> when it started (status times are whole seconds)

    def sync(self) -> None:
        now = self.store.clock()
        stamp = now_rfc3339(self.store.clock)
        live = set()
        for job in list(self.store.iter_objects(JOBS)):
            uid = str(job["metadata"]["uid"])
            live.add(uid)
            spec = job.get("spec") or {}
            if finished(job) or job["metadata"].get("deletionTimestamp") or spec.get("suspend"):
                continue
            status = dict(job.get("status") or {})
            if "startTime" not in status:
                self._started[uid] = now
                active = min(int(spec.get("parallelism") or 1), int(spec.get("completions") or 1))
                self._write_status(JOBS, job, {**status, "startTime": stamp, "active": active})
                continue
            started = self._started.setdefault(uid, parse_time(str(status["startTime"])))
            notes = job["metadata"].get("annotations") or {}
            outcome = str(notes.get(OUTCOME_ANNOTATION, "succeed"))
            try:
                duration = float(notes.get(DURATION_ANNOTATION, 0.1))
            except ValueError:
                duration = 0.1
            deadline = spec.get("activeDeadlineSeconds")
            if deadline is not None and now - started >= float(deadline):
                failed = int(status.get("failed") or 0)
                self._write_status(JOBS, job, job_failed_status(job, stamp, "DeadlineExceeded", failed))
            elif outcome == "never" or now - started < duration:
                continue
            elif outcome == "fail":
                failed = int(spec.get("backoffLimit") or 0) + 1
                self._write_status(JOBS, job, job_failed_status(job, stamp, "BackoffLimitExceeded", failed))
            else:
                self._write_status(JOBS, job, job_succeeded_status(job, stamp))
        for uid in set(self._started) - live:
            del self._started[uid]


class TtlController(Controller):
    """Deletes finished Jobs ``ttlSecondsAfterFinished`` after they ended (their pods go with them)."""

    keys = (JOBS,)
    period = 0.5

    def sync(self) -> None:
        now = self.store.clock()
        for job in list(self.store.iter_objects(JOBS)):
            ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
            if ttl is None or not finished(job) or job["metadata"].get("deletionTimestamp"):
                continue
            status = job.get("status") or {}
            ended = status.get("completionTime") or next(
                (
                    c.get("lastTransitionTime")
                    for c in status.get("conditions") or []
                    if c.get("type") == "Failed"
                ),
                None,
            )
            if ended and now - parse_time(str(ended)) >= float(ttl):
                meta = job["metadata"]
                self.store.delete(
                    self._info(JOBS), meta.get("namespace"), meta["name"], propagation="Background"
                )


class CronJobController(Controller):
    """Creates each CronJob's Jobs on schedule (in its time zone), keeps status and the history limits."""

    keys = (CRONJOBS, JOBS)
    needs = CRONJOBS
    period = 1.0

    def sync(self) -> None:
        now = self.store.clock()
        for cronjob in list(self.store.iter_objects(CRONJOBS)):
            if not cronjob["metadata"].get("deletionTimestamp"):
                self._sync_one(cronjob, now)

    def _jobs_of(self, cronjob: Obj) -> list[Obj]:
        uid = cronjob["metadata"]["uid"]
        namespace = cronjob["metadata"].get("namespace", "")
        return [
            job
            for job in self.store.select(JOBS, namespace)
            if any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in job["metadata"].get("ownerReferences") or []
            )
        ]

    def _sync_one(self, cronjob: Obj, now: float) -> None:
        spec = cronjob.get("spec") or {}
        meta = cronjob["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        jobs = self._jobs_of(cronjob)
        active = [j for j in jobs if not finished(j)]
        status = dict(cronjob.get("status") or {})
        succeeded = [j for j in jobs if finished(j) == "Complete"]
        if succeeded:
            latest = max(str((j.get("status") or {}).get("completionTime") or "") for j in succeeded)
            if latest and latest > str(status.get("lastSuccessfulTime") or ""):
                status["lastSuccessfulTime"] = latest
        due = None if spec.get("suspend") else self._due(spec, status, meta, now)
        if due is not None:
            policy = spec.get("concurrencyPolicy", "Allow")
            if policy == "Forbid" and active:
                due = None  # skipped, as the real controller does; the next time may run
            else:
                if policy == "Replace":
                    for job in active:
                        self.store.delete(
                            self._info(JOBS), namespace, job["metadata"]["name"], propagation="Background"
                        )
                    active = []
                created = self._create_job(cronjob, due)
                if created is not None:
                    active.append(created)
            if due is not None:
                scheduled = due
                status["lastScheduleTime"] = now_rfc3339(lambda: scheduled)
        status["active"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": j["metadata"]["name"],
                "namespace": namespace,
                "uid": j["metadata"]["uid"],
                "resourceVersion": j["metadata"].get("resourceVersion"),
            }
            for j in sorted(active, key=lambda j: j["metadata"]["name"])
        ]
        if not status["active"]:
            status.pop("active")
        self._trim_history(spec, jobs)
        current = self.store.peek(CRONJOBS, namespace, name)
        if current is not None:
            self._write_status(CRONJOBS, current, status)

    def _due(
        self, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any], now: float
    ) -> float | None:
        """The latest missed schedule time (epoch seconds), or None."""
        since = status.get("lastScheduleTime") or meta.get("creationTimestamp")
        start = parse_time(str(since)) if since else now
        zone = zoneinfo.ZoneInfo(str(spec.get("timeZone") or "UTC"))
        iterator = croniter(str(spec.get("schedule")), datetime.fromtimestamp(start, zone))
        due = None
        for _ in range(1000):  # a long-missed schedule: only the latest time runs
            candidate = iterator.get_next(float)
            if candidate > now:
                break
            due = candidate
        deadline = spec.get("startingDeadlineSeconds")
        if due is not None and deadline is not None and now - due > float(deadline):
            return None
        return due

    def _create_job(self, cronjob: Obj, due: float) -> Obj | None:
        meta = cronjob["metadata"]
        template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
        job_meta = dict(template.get("metadata") or {})
        name = f"{meta['name']}-{int(due // 60)}"
        job_meta.update(
            name=name,
            namespace=meta.get("namespace"),
            labels=dict(job_meta.get("labels") or {}),
            annotations={
                **(job_meta.get("annotations") or {}),
                SCHEDULED_ANNOTATION: datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            ownerReferences=[
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        )
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": job_meta,
            "spec": dict(template.get("spec") or {}),
        }
        if self.store.peek(JOBS, str(meta.get("namespace", "")), name) is not None:
            return None  # already created for this time
        return self.store.create(self._info(JOBS), meta.get("namespace"), body).obj

    def _trim_history(self, spec: Mapping[str, Any], jobs: list[Obj]) -> None:
        for outcome, limit in (
            ("Complete", "successfulJobsHistoryLimit"),
            ("Failed", "failedJobsHistoryLimit"),
        ):
            done = sorted(
                (j for j in jobs if finished(j) == outcome),
                key=lambda j: str(j["metadata"].get("creationTimestamp")) + j["metadata"]["name"],
            )
            keep = int(spec.get(limit, 3 if outcome == "Complete" else 1))
            for job in done[: max(0, len(done) - keep)]:
                meta = job["metadata"]
                with contextlib.suppress(ApiError):
                    self.store.delete(
                        self._info(JOBS), meta.get("namespace"), meta["name"], propagation="Background"
                    )


class HpaStatusController(Controller):
    """Writes a minimal HPA status: the target's replicas, clamped to the bounds; no metrics API here."""

    keys = (HPAS, ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets"))
    needs = HPAS
    period = 5.0
    _TARGETS = {
        "Deployment": ("apps", "deployments"),
        "StatefulSet": ("apps", "statefulsets"),
        "ReplicaSet": ("apps", "replicasets"),
    }

    def sync(self) -> None:
        stamp = now_rfc3339(self.store.clock)
        for hpa in list(self.store.iter_objects(HPAS)):
            spec = hpa.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            key = self._TARGETS.get(str(ref.get("kind")))
            target = (
                self.store.peek(key, hpa["metadata"].get("namespace", ""), str(ref.get("name")))
                if key
                else None
            )
            old = hpa.get("status") or {}
            previous = {c.get("type"): c for c in old.get("conditions") or []}

            if target is None:
                status: dict[str, Any] = {
                    "currentReplicas": 0,
                    "desiredReplicas": 0,
                    "conditions": [
                        _hpa_condition(
                            previous,
                            stamp,
                            "AbleToScale",
                            "False",
                            "FailedGetScale",
                            f'the HPA controller was unable to get the target\'s current scale: {ref.get("kind")} "{ref.get("name")}" not found',
                        )
                    ],
                }
            else:
                current = int((target.get("spec") or {}).get("replicas") or 0)
                desired = min(
                    max(current, int(spec.get("minReplicas") or 1)), int(spec.get("maxReplicas") or 1)
                )
                status = {
                    "currentReplicas": current,
                    "desiredReplicas": desired,
                    "conditions": [
                        _hpa_condition(
                            previous,
                            stamp,
                            "AbleToScale",
                            "True",
                            "SucceededGetScale",
                            "the HPA controller was able to get the target's current scale",
                        ),
                        _hpa_condition(
                            previous,
                            stamp,
                            "ScalingActive",
                            "False",
                            "FailedGetResourceMetric",
                            "the API emulator serves no metrics API",
                        ),
                    ],
                }
            self._write_status(HPAS, hpa, status)


def _hpa_condition(
    previous: Mapping[str, Mapping[str, Any]], stamp: str, kind: str, state: str, reason: str, message: str
) -> dict[str, str]:
    same = previous.get(kind)
    since = str(same["lastTransitionTime"]) if same and same.get("status") == state else stamp
    return {"type": kind, "status": state, "reason": reason, "message": message, "lastTransitionTime": since}
