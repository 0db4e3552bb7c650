"""Jobs as local processes: the local kubelet's Job runner.

Each Job's pod template (first container: ``command`` + ``args``, ``env`` values) runs as a process on
this machine, ``completions`` times one after another; a non-zero exit is a failed pod, retried with
a short backoff until ``backoffLimit``; ``activeDeadlineSeconds`` kills it. The Job's status is written
as the real Job controller writes it (active/succeeded/failed, ``Complete`` or ``Failed`` with their
reasons), with the status shapes of :mod:`kube_emulator.workloads`. ``python``/``python3`` as the
command mean this interpreter. CronJobs need nothing here: the API emulator creates their Jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kube_emulator.workloads import finished, job_failed_status, job_succeeded_status
from mlcanary.kubeapi import JOBS, ApiError, Informer, Obj, Transport
from mlcanary_local.process import child_kwargs, signal_group

logger = logging.getLogger(__name__)

INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE")
MAX_BACKOFF = 2.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_command(template: Obj) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a Job pod's process."""
    container = ((template.get("spec") or {}).get("containers") or [{}])[0]
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if not argv:
        raise ValueError("the container has no command: a local Job needs one (there is no image here)")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    for var in container.get("env") or []:
        if "value" in var:
            env[str(var["name"])] = str(var["value"])
    env["PYTHONUNBUFFERED"] = "1"
    return argv, env


class JobRunner:
    """Watches Jobs and runs each unfinished one's pods as processes."""

    def __init__(self, api: Transport, work_dir: Path) -> None:
        self.api = api
        self.work_dir = work_dir
        self.jobs = Informer(api, JOBS, compact=False)
        self.running: dict[str, asyncio.Task[None]] = {}  # by uid

    async def run(self, stop: asyncio.Event) -> None:
        self.jobs.start()
        try:
            while not stop.is_set():
                self.jobs.changed.clear()
                self.reconcile()
                waits = [asyncio.create_task(e.wait()) for e in (self.jobs.changed, stop)]
                await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                for wait in waits:
                    wait.cancel()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        for task in self.running.values():
            task.cancel()
        for task in list(self.running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.running.clear()
        await self.jobs.stop()

    def reconcile(self) -> None:
        live = set()
        for _, job in self.jobs.items():
            meta = job["metadata"]
            uid = str(meta["uid"])
            live.add(uid)
            if uid in self.running or finished(job) or meta.get("deletionTimestamp"):
                continue
            if (job.get("spec") or {}).get("suspend"):
                continue
            self.running[uid] = asyncio.create_task(self._run_job(job), name=f"job {meta['name']}")
        for uid in set(self.running) - live:  # the Job was deleted: its pod goes with it
            self.running.pop(uid).cancel()
        for uid, task in list(self.running.items()):
            if task.done():
                del self.running[uid]

    async def _status(self, job: Obj, status: dict[str, Any]) -> None:
        meta = job["metadata"]
        with contextlib.suppress(ApiError):  # the Job may be gone already
            await self.api.patch(
                JOBS, meta["namespace"], meta["name"], {"status": status}, subresource="status"
            )

    async def _run_job(self, job: Obj) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        completions = int(spec.get("completions") or 1)
        limit = spec.get("backoffLimit")
        backoff_limit = int(limit) if limit is not None else 6
        deadline = spec.get("activeDeadlineSeconds")
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + float(deadline) if deadline is not None else None
        workdir = self.work_dir / "jobs" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        status: dict[str, Any] = dict(job.get("status") or {})
        status.setdefault("startTime", _now())
        succeeded, failed = int(status.get("succeeded") or 0), int(status.get("failed") or 0)
        try:
            argv, env = job_command(spec.get("template") or {})
        except ValueError as error:
            logger.warning("job %s/%s: %s", meta["namespace"], meta["name"], error)
            await self._status(job, job_failed_status(job, _now(), "BackoffLimitExceeded", failed + 1))
            return
        env["TMPDIR"] = str(workdir)
        while True:
            await self._status(job, {**status, "active": 1, "succeeded": succeeded, "failed": failed})
            timeout = None if ends_at is None else max(0.0, ends_at - loop.time())
            code = await self._run_pod(argv, env, workdir, timeout)
            if code is None:
                await self._status(job, job_failed_status(job, _now(), "DeadlineExceeded", failed))
                return
            if code == 0:
                succeeded += 1
                if succeeded >= completions:
                    done = job_succeeded_status({**job, "status": status}, _now())
                    await self._status(job, {**done, "succeeded": succeeded, "failed": failed})
                    return
                continue
            failed += 1
            logger.info(
                "job %s/%s: pod exited with %s (%d failed)", meta["namespace"], meta["name"], code, failed
            )
            if failed > backoff_limit:
                await self._status(job, job_failed_status(job, _now(), "BackoffLimitExceeded", failed))
                return
            await asyncio.sleep(min(MAX_BACKOFF, 0.1 * 2 ** (failed - 1)))

    @staticmethod
    async def _run_pod(
        argv: list[str], env: dict[str, str], workdir: Path, seconds: float | None
    ) -> int | None:
        """The exit code of one pod's process; None when the deadline killed it."""
        with (workdir / "pod.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                cwd=str(workdir),
                **child_kwargs(),
            )
        try:
            return await asyncio.wait_for(process.wait(), seconds)
        except TimeoutError:
            return None
        finally:
            if process.returncode is None:
                signal_group(process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await process.wait()
