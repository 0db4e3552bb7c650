"""Jobs as local processes: the local kubelet's Job runner.

Each Job's pod template (first container: ``command`` + ``args``, ``env`` values) runs as a process on
this machine, ``completions`` times one after another; a non-zero exit is a failed pod, retried with
a short backoff until ``backoffLimit``; ``activeDeadlineSeconds`` kills it. The Job's status is written
as the real Job controller writes it (active/succeeded/failed, ``Complete`` or ``Failed`` with their
reasons), with the status shapes of :mod:`kube_emulator.workloads`. ``python``/``python3`` as the
command mean this interpreter. CronJobs need nothing here: the API emulator creates their Jobs.

Each attempt is also a Pod object (labels ``job-name``, ``batch.kubernetes.io/job-name`` and
``controller-uid`` as the Job controller sets them, owned by the Job) whose container status ends
``terminated`` with the exit code and the termination message, as a kubelet writes it: the file at
the container's ``terminationMessagePath`` (a process has no container filesystem, so that path is
given a file in the pod's work directory, and an argument equal to it is rewritten to that file),
or with ``terminationMessagePolicy: FallbackToLogsOnError`` and a failed exit, the log's tail.

ConfigMap volumes are what a kubelet makes of them: the keys (or the ``items`` chosen, under their
``path``) written as files into a directory of the pod's work directory, and an argument under the
container's ``mountPath`` rewritten to that directory. A missing ConfigMap or key fails the attempt
(a kubelet would leave the pod ContainerCreating; here the Job's deadline would be the only bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kube_emulator.workloads import finished, job_failed_status, job_succeeded_status
from mlcanary.kubeapi import CONFIGMAPS, JOBS, PODS, ApiError, Informer, Obj, Transport
from mlcanary_local.process import child_kwargs, signal_group

logger = logging.getLogger(__name__)

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_BYTES = 4096  # what a kubelet keeps of the file (and of the log's tail)
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


def termination_message(container: Obj, exit_code: int, message_file: Path, log: Path) -> str:
    """What a kubelet puts in ``state.terminated.message``: the message file, or with
    FallbackToLogsOnError and a failed exit, the log's tail when the file is empty."""
    message = message_file.read_bytes()[:TERMINATION_MESSAGE_BYTES] if message_file.exists() else b""
    policy = container.get("terminationMessagePolicy") or "File"
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0 and log.exists():
        message = log.read_bytes()[-TERMINATION_MESSAGE_BYTES:]
    return message.decode(errors="replace")


def _mounted(arg: str, mounts: dict[str, Path]) -> str:
    """An argument naming a file under a mounted volume, pointed at the volume's local directory."""
    for mount_path, local in mounts.items():
        if arg == mount_path or arg.startswith(mount_path + "/"):
            return str(local) + arg[len(mount_path) :]
    return arg


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

    async def _config_map_volumes(
        self, namespace: str, pod_spec: Obj, container: Obj, workdir: Path
    ) -> dict[str, Path]:
        """Write the ConfigMap volumes the container mounts; mountPath -> local directory."""
        by_name = {str(v.get("name")): v for v in pod_spec.get("volumes") or [] if v.get("configMap")}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = by_name.get(str(mount.get("name")))
            if volume is None:
                continue
            source = volume["configMap"]
            config_map = await self.api.get(CONFIGMAPS, namespace, str(source.get("name")))
            if config_map is None:
                raise LookupError(f"configmap {source.get('name')!r} not found (volume {volume['name']!r})")
            data: dict[str, str] = config_map.get("data") or {}
            items = source.get("items") or [{"key": key, "path": key} for key in data]
            target = workdir / "volumes" / str(volume["name"])
            target.mkdir(parents=True, exist_ok=True)
            for item in items:
                key, path = str(item["key"]), str(item.get("path") or item["key"])
                if key not in data:
                    raise LookupError(f"configmap {source.get('name')!r} has no key {key!r}")
                if path.startswith("/") or ".." in Path(path).parts:
                    raise LookupError(f"volume {volume['name']!r}: item path {path!r} leaves the volume")
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                (target / path).write_text(data[key])
            mounts[str(mount["mountPath"]).rstrip("/")] = target
        return mounts

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
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        container = (pod_spec.get("containers") or [{}])[0]
        try:
            mounts = await self._config_map_volumes(meta["namespace"], pod_spec, container, workdir)
        except LookupError as error:
            logger.warning("job %s/%s: %s", meta["namespace"], meta["name"], error)
            await self._status(job, job_failed_status(job, _now(), "BackoffLimitExceeded", failed + 1))
            return
        argv = [_mounted(arg, mounts) for arg in argv]
        while True:
            await self._status(job, {**status, "active": 1, "succeeded": succeeded, "failed": failed})
            timeout = None if ends_at is None else max(0.0, ends_at - loop.time())
            pod = await self._create_pod(job, container)
            message_file = workdir / f"termination-log-{succeeded + failed}"
            message_file.unlink(missing_ok=True)
            path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
            pod_argv = [str(message_file) if arg == path else arg for arg in argv]
            code = await self._run_pod(pod_argv, env, workdir, timeout)
            await self._finish_pod(pod, container, code, message_file, workdir / "pod.log")
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

    async def _create_pod(self, job: Obj, container: Obj) -> Obj | None:
        """The Pod object of one attempt (best effort: the Job runs without it)."""
        meta = job["metadata"]
        template_meta = ((job.get("spec") or {}).get("template") or {}).get("metadata") or {}
        name, uid = str(meta["name"]), str(meta["uid"])
        labels = {
            **(template_meta.get("labels") or {}),
            "job-name": name,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "batch.kubernetes.io/controller-uid": uid,
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name[:57]}-{secrets.token_hex(3)[:5]}",
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": True}
                ],
            },
            "spec": {"restartPolicy": "Never", "containers": [container]},
        }
        try:
            return await self.api.create(pod)
        except ApiError as error:
            logger.warning("job %s/%s: could not create its Pod object: %s", meta["namespace"], name, error)
            return None

    async def _finish_pod(
        self, pod: Obj | None, container: Obj, code: int | None, message_file: Path, log: Path
    ) -> None:
        """The attempt's container terminated: exit code and termination message, as a kubelet."""
        if pod is None:
            return
        exit_code = 137 if code is None else code
        message = termination_message(container, exit_code, message_file, log)
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "finishedAt": _now(),
        }
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {"name": container.get("name") or "job", "ready": False, "state": {"terminated": terminated}}
            ],
        }
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.api.patch(
                PODS, meta["namespace"], meta["name"], {"status": status}, subresource="status"
            )

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
