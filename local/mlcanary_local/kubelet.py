"""The local "kubelet": runs every Deployment's pods as real serving processes on 127.0.0.1.

It watches Deployments in the API server (the emulator, with its built-in Deployment controller
off) and keeps, for each, ``spec.replicas`` processes of ``python -m mlcanary_serving`` — the same
code as the serving image — configured from the pod template (its env and args, with ``PORT`` set
to a free port and the host forced to 127.0.0.1). So readiness, crashes and scaling are real:

* each pod is a Pod object (labels from the template plus ``pod-template-hash``; ``status.podIP``
  127.0.0.1; the port in the annotation ``local.mlcanary.io/port``; a ``Ready`` condition from
  probing ``/readyz``);
* the Deployment's ``/status`` gets replicas, updatedReplicas, readyReplicas, availableReplicas and
  observedGeneration, as the Deployment controller would write them;
* a process that exits is restarted with back-off (``restartCount`` grows); a failing ``/healthz``
  (liveness) kills and restarts it;
* scaling down marks the pod unready first (the gateway stops sending to it), waits a drain period,
  then SIGTERMs it (the server finishes in-flight requests) and deletes the Pod object;
* a changed pod template starts new pods and removes the old ones once the new ones are ready
  (rolling update with ``maxUnavailable: 0``);
* a Pod object deleted by someone else (``kubectl delete pod``) stops its process; the Deployment
  then gets a replacement.

It also writes Prometheus ``file_sd`` targets for every running pod (labels namespace, pod,
revision, deployment), so a real Prometheus scrapes them, and runs every Job's pods as processes
(:mod:`mlcanary_local.jobs`), writing the Job's status as the Job controller would.

Run as ``python -m mlcanary_local.kubelet --kubeconfig K --work-dir D --targets F``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from mlcanary.kubeapi import DEPLOYMENTS, PODS, ApiClient, ApiError, Informer, Obj, Transport, load_connection
from mlcanary_local.jobs import JobRunner
from mlcanary_local.process import LOCALHOST, child_kwargs, free_port, signal_group

logger = logging.getLogger("mlcanary_local.kubelet")

PORT_ANNOTATION = "local.mlcanary.io/port"
PID_ANNOTATION = "local.mlcanary.io/pid"
TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_LABEL = "mlcanary.io/revision"
MDEP_LABEL = "mlcanary.io/model-deployment"
NODE_NAME = "local"
# Variables a pod inherits from the kubelet's environment; everything else comes from the template.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def cpu_threads(container: Obj) -> int:
    """Model threads for a pod: its CPU limit (or request) rounded up, at least 1 (a local cgroup)."""
    resources = container.get("resources") or {}
    quantity = (resources.get("limits") or {}).get("cpu") or (resources.get("requests") or {}).get("cpu")
    if not quantity:
        return 1
    text = str(quantity)
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return 1
    return max(1, math.ceil(cores))


def pod_command(template: Obj, port: int) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the serving process for a pod template, listening on 127.0.0.1:port."""
    container = (template.get("spec") or {}).get("containers", [{}])[0]
    args = [str(a) for a in container.get("args") or []]
    rewritten: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in ("--host", "--port") and i + 1 < len(args):
            skip = True
            continue
        if arg.startswith(("--host=", "--port=")):
            continue
        rewritten.append(arg)
    argv = [sys.executable, "-m", "mlcanary_serving", *rewritten, "--host", LOCALHOST, "--port", str(port)]
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env["MLCANARY_THREADS"] = str(cpu_threads(container))
    for var in container.get("env") or []:
        if "value" in var:
            env[str(var["name"])] = str(var["value"])
    env["PORT"] = str(port)
    env["MLCANARY_HOST"] = LOCALHOST
    env["PYTHONUNBUFFERED"] = "1"
    return argv, env


@dataclass
class Probe:
    path: str
    period: float
    failure_threshold: int
    timeout: float = 1.0


def probes(template: Obj, max_period: float) -> tuple[Probe, Probe | None]:
    """Readiness and liveness probes of the template; periods capped at the kubelet's setting."""
    container = (template.get("spec") or {}).get("containers", [{}])[0]
    ready_spec = (container.get("readinessProbe") or {}).get("httpGet") and container["readinessProbe"]
    live_spec = (container.get("livenessProbe") or {}).get("httpGet") and container["livenessProbe"]

    def make(spec: Obj, default_path: str) -> Probe:
        return Probe(
            path=str(spec["httpGet"].get("path") or default_path),
            period=min(float(spec.get("periodSeconds") or 10), max_period),
            failure_threshold=int(spec.get("failureThreshold") or 3),
            timeout=float(spec.get("timeoutSeconds") or 1),
        )

    readiness = make(ready_spec, "/readyz") if ready_spec else Probe("/readyz", max_period, 1)
    liveness = make(live_spec, "/healthz") if live_spec else None
    return readiness, liveness


@dataclass
class LocalPod:
    namespace: str
    name: str
    deployment: str
    deployment_uid: str
    hash: str
    template: Obj
    workdir: Path
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    restarts: int = 0
    terminating: bool = False
    seen_in_api: bool = False
    created_in_api: bool = False
    started_at: str = field(default_factory=_now)
    created: float = field(default_factory=time.monotonic)
    last_state: Obj = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def labels(self) -> dict[str, str]:
        meta = self.template.get("metadata") or {}
        return {**(meta.get("labels") or {}), TEMPLATE_HASH_LABEL: self.hash}


@dataclass
class KubeletConfig:
    work_dir: Path
    targets_file: Path | None = None
    probe_period: float = 0.5  # upper bound of every probe's period (template periods are minutes-scale)
    drain_seconds: float = 1.0  # unready -> SIGTERM: time for the gateway to stop routing to the pod
    grace_seconds: float = 10.0  # SIGTERM -> SIGKILL
    max_backoff: float = 10.0


class Kubelet:
    def __init__(self, api: Transport, config: KubeletConfig) -> None:
        self.api = api
        self.config = config
        self.pods: dict[tuple[str, str], LocalPod] = {}
        self.deployments = Informer(api, DEPLOYMENTS, compact=False)
        self.pod_objects = Informer(api, PODS, compact=False)
        self.dirty = asyncio.Event()
        self._status_written: dict[tuple[str, str], Obj] = {}
        self._targets_written: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._terminations: set[asyncio.Task[None]] = set()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        return self._http

    # ------------------------------------------------------------------------------ main loop

    async def run(self, stop: asyncio.Event) -> None:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        jobs = asyncio.create_task(JobRunner(self.api, self.config.work_dir).run(stop), name="jobs")
        try:
            await self._run_deployments(stop)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await jobs

    async def _run_deployments(self, stop: asyncio.Event) -> None:
        self.deployments.start()
        self.pod_objects.start()
        await asyncio.wait_for(self.deployments.synced.wait(), 60)
        await asyncio.wait_for(self.pod_objects.synced.wait(), 60)
        await self._adopt_leftovers()
        try:
            while not stop.is_set():
                self.dirty.clear()
                self.deployments.changed.clear()
                self.pod_objects.changed.clear()
                try:
                    await self.reconcile()
                except Exception:
                    logger.exception("reconcile failed")
                waits = [
                    asyncio.create_task(e.wait())
                    for e in (self.dirty, self.deployments.changed, self.pod_objects.changed, stop)
                ]
                await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop every pod (drain skipped: the whole node goes away) and the watches."""
        await asyncio.gather(*(self._stop_pod(p, drain=False) for p in list(self.pods.values())))
        for task in list(self._terminations):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._write_targets()
        await self.deployments.stop()
        await self.pod_objects.stop()
        if self._http is not None:
            await self._http.close()

    async def _adopt_leftovers(self) -> None:
        """Pod objects from an earlier kubelet run have no process behind them: delete them."""
        for (namespace, name), obj in self.pod_objects.items():
            if (obj.get("spec") or {}).get("nodeName") == NODE_NAME:
                with contextlib.suppress(ApiError):
                    await self.api.delete(PODS, namespace, name)

    async def reconcile(self) -> None:
        wanted: set[tuple[str, str]] = set()
        for (namespace, name), deployment in self.deployments.items():
            if (deployment.get("metadata") or {}).get("deletionTimestamp"):
                continue
            wanted.add((namespace, name))
            await self._reconcile_deployment(namespace, name, deployment)
        for pod in list(self.pods.values()):
            if (pod.namespace, pod.deployment) not in wanted and not pod.terminating:
                self._terminate(pod, drain=False)
        self._forget_deleted_pods()
        self._write_targets()

    def _forget_deleted_pods(self) -> None:
        """A Pod object that disappeared from the API (deleted by a user) stops its process."""
        for pod in list(self.pods.values()):
            present = (pod.namespace, pod.name) in self.pod_objects
            if present:
                pod.seen_in_api = True
            elif pod.seen_in_api and not pod.terminating:
                logger.info("pod %s/%s deleted through the API: stopping it", pod.namespace, pod.name)
                self._terminate(pod, drain=True, delete_object=False)

    async def _reconcile_deployment(self, namespace: str, name: str, deployment: Obj) -> None:
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        current_hash = template_hash(template)
        mine = [p for p in self.pods.values() if p.namespace == namespace and p.deployment == name]
        live = [p for p in mine if not p.terminating]
        current = [p for p in live if p.hash == current_hash]
        old = [p for p in live if p.hash != current_hash]
        # Scale the current template to `desired`.
        for _ in range(desired - len(current)):
            current.append(self._start_pod(namespace, name, deployment, template, current_hash))
        if len(current) > desired:
            # Remove unready pods first, then the youngest (like the ReplicaSet controller).
            victims = sorted(current, key=lambda p: (p.ready, -p.created))
            for pod in victims[: len(current) - desired]:
                self._terminate(pod, drain=True)
                current.remove(pod)
        # Rolling update: old pods go once enough new ones are ready (unready old pods go at once).
        ready_current = sum(p.ready for p in current)
        ready_old = [p for p in old if p.ready]
        for pod in old:
            if not pod.ready:
                self._terminate(pod, drain=False)
        surplus = ready_current + len(ready_old) - desired
        for pod in ready_old[: max(0, surplus)]:
            self._terminate(pod, drain=True)
        await self._write_deployment_status(namespace, name, deployment, current, current_hash)

    async def _write_deployment_status(
        self, namespace: str, name: str, deployment: Obj, current: list[LocalPod], current_hash: str
    ) -> None:
        meta = deployment["metadata"]
        live = [p for p in self.pods.values() if p.namespace == namespace and p.deployment == name]
        live = [p for p in live if not p.terminating]
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        ready = sum(p.ready for p in live)
        updated = len(current)
        available = ready >= desired
        status: Obj = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(live),
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, desired - ready),
        }
        previous = self._status_written.get((namespace, name))
        if previous is not None and previous["counts"] == status:
            conditions = previous["conditions"]
        else:
            conditions = [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "lastUpdateTime": _now(),
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable"
                    if updated == desired == ready
                    else "ReplicaSetUpdated",
                    "lastUpdateTime": _now(),
                    "lastTransitionTime": _now(),
                },
            ]
        live_status = deployment.get("status") or {}
        in_api = {k: live_status.get(k, 0) for k in status}
        if previous is not None and previous["counts"] == status and in_api == status:
            return
        body = {"status": {**status, "conditions": conditions}}
        try:
            await self.api.patch(DEPLOYMENTS, namespace, name, body, subresource="status")
            self._status_written[(namespace, name)] = {"counts": status, "conditions": conditions}
        except ApiError as error:
            if error.status != 404:
                logger.warning("deployment %s/%s status: %s", namespace, name, error)

    # --------------------------------------------------------------------------- one pod

    def _start_pod(self, namespace: str, deployment: str, obj: Obj, template: Obj, hash_: str) -> LocalPod:
        name = f"{deployment}-{hash_[:5]}-{secrets.token_hex(3)}"[:63]
        workdir = self.config.work_dir / "pods" / f"{namespace}_{name}"
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        pod = LocalPod(
            namespace=namespace,
            name=name,
            deployment=deployment,
            deployment_uid=str(obj["metadata"].get("uid") or ""),
            hash=hash_,
            template=template,
            workdir=workdir,
        )
        self.pods[(namespace, name)] = pod
        pod.task = asyncio.create_task(self._run_pod(pod), name=f"pod {namespace}/{name}")
        logger.info("pod %s/%s: starting", namespace, name)
        return pod

    async def _run_pod(self, pod: LocalPod) -> None:
        readiness, liveness = probes(pod.template, self.config.probe_period)
        try:
            await self._create_pod_object(pod)
            while not pod.terminating:
                await self._spawn(pod)
                await self._probe_until_exit(pod, readiness, liveness)
                if pod.terminating:
                    return
                code = pod.process.returncode if pod.process else None
                pod.ready = False
                pod.restarts += 1
                backoff = min(self.config.max_backoff, 0.5 * 2 ** (pod.restarts - 1))
                logger.warning(
                    "pod %s/%s: exited with %s; restart %d in %.1fs",
                    pod.namespace,
                    pod.name,
                    code,
                    pod.restarts,
                    backoff,
                )
                await self._write_pod_status(pod, waiting="CrashLoopBackOff", exit_code=code)
                self.dirty.set()
                await asyncio.sleep(backoff)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("pod %s/%s failed", pod.namespace, pod.name)

    async def _spawn(self, pod: LocalPod) -> None:
        pod.port = free_port()
        argv, env = pod_command(pod.template, pod.port)
        env["TMPDIR"] = str(pod.workdir / "tmp")
        log = (pod.workdir / "server.log").open("ab")
        try:
            pod.process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                cwd=str(pod.workdir),
                **child_kwargs(),
            )
        finally:
            log.close()
        self.dirty.set()
        await self._write_pod_status(pod)

    async def _get(self, pod: LocalPod, probe: Probe) -> bool:
        try:
            async with self.http.get(
                f"http://{LOCALHOST}:{pod.port}{probe.path}",
                timeout=aiohttp.ClientTimeout(total=probe.timeout),
            ) as response:
                await response.read()
                return 200 <= response.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _probe_until_exit(self, pod: LocalPod, readiness: Probe, liveness: Probe | None) -> None:
        process = pod.process
        assert process is not None
        exited = asyncio.create_task(process.wait())
        ready_failures = 0
        live_failures = 0
        started = time.monotonic()
        next_live = started + (liveness.period if liveness else 0)
        try:
            while not exited.done() and not pod.terminating:
                ok = await self._get(pod, readiness)
                ready_failures = 0 if ok else ready_failures + 1
                # Ready on the first success; unready after failureThreshold failures in a row.
                new_ready = ok or (pod.ready and ready_failures < readiness.failure_threshold)
                if exited.done() or pod.terminating:
                    break
                if new_ready != pod.ready:
                    pod.ready = new_ready
                    logger.info("pod %s/%s: ready=%s", pod.namespace, pod.name, new_ready)
                    self.dirty.set()
                    await self._write_pod_status(pod)
                if liveness is not None and time.monotonic() >= next_live and pod.ready:
                    next_live = time.monotonic() + liveness.period
                    if await self._get(pod, liveness):
                        live_failures = 0
                    else:
                        live_failures += 1
                        if live_failures >= liveness.failure_threshold:
                            logger.warning("pod %s/%s: liveness failed; killing", pod.namespace, pod.name)
                            signal_group(process.pid, signal.SIGKILL)
                            await exited
                            break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), readiness.period)
        finally:
            if not exited.done():
                exited.cancel()

    # --------------------------------------------------------------------------- API objects

    def _pod_object(self, pod: LocalPod) -> Obj:
        meta = pod.template.get("metadata") or {}
        annotations = {**(meta.get("annotations") or {}), PORT_ANNOTATION: str(pod.port)}
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": pod.deployment,
            "uid": pod.deployment_uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "labels": pod.labels,
                "annotations": annotations,
                "ownerReferences": [owner] if pod.deployment_uid else [],
            },
            "spec": {**(pod.template.get("spec") or {}), "nodeName": NODE_NAME},
        }

    async def _create_pod_object(self, pod: LocalPod) -> None:
        try:
            await self.api.create(self._pod_object(pod))
            pod.created_in_api = True
        except ApiError as error:
            logger.warning("pod %s/%s: could not create the Pod object: %s", pod.namespace, pod.name, error)

    async def _write_pod_status(
        self, pod: LocalPod, waiting: str | None = None, exit_code: int | None = None
    ) -> None:
        if not pod.created_in_api:
            return
        ready = "True" if pod.ready and not pod.terminating else "False"
        state: Obj
        if waiting:
            state = {"waiting": {"reason": waiting, "message": f"exit code {exit_code}"}}
        elif pod.running:
            state = {"running": {"startedAt": _now()}}
        else:
            state = {"terminated": {"exitCode": exit_code or 0, "reason": "Completed"}}
        status = {
            "phase": "Running" if pod.running else "Pending",
            "hostIP": LOCALHOST,
            "podIP": LOCALHOST,
            "podIPs": [{"ip": LOCALHOST}],
            "startTime": pod.started_at,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ],
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": ready == "True",
                    "started": pod.running,
                    "restartCount": pod.restarts,
                    "image": ((pod.template.get("spec") or {}).get("containers") or [{}])[0].get("image", ""),
                    "state": state,
                }
            ],
        }
        meta_patch = {"annotations": {PORT_ANNOTATION: str(pod.port)}}
        if pod.process is not None:
            meta_patch["annotations"][PID_ANNOTATION] = str(pod.process.pid)
        if {"status": status, "meta": meta_patch} == pod.last_state:
            return
        try:
            if pod.last_state.get("meta") != meta_patch:
                await self.api.patch(PODS, pod.namespace, pod.name, {"metadata": meta_patch})
            await self.api.patch(PODS, pod.namespace, pod.name, {"status": status}, subresource="status")
            pod.last_state = {"status": status, "meta": meta_patch}
        except ApiError as error:
            if error.status != 404:
                logger.warning("pod %s/%s status: %s", pod.namespace, pod.name, error)

    # --------------------------------------------------------------------------- stopping

    def _terminate(self, pod: LocalPod, drain: bool, delete_object: bool = True) -> None:
        if pod.terminating:
            return
        pod.terminating = True
        self.dirty.set()
        task = asyncio.create_task(self._stop_pod(pod, drain, delete_object))
        self._terminations.add(task)
        task.add_done_callback(self._terminations.discard)

    async def _stop_pod(self, pod: LocalPod, drain: bool, delete_object: bool = True) -> None:
        pod.terminating = True
        was_ready = pod.ready
        pod.ready = False
        logger.info("pod %s/%s: stopping", pod.namespace, pod.name)
        if pod.task is not None and pod.task is not asyncio.current_task():
            pod.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pod.task
        if delete_object:
            await self._write_pod_status(pod)  # unready: routers stop sending to it
        if drain and was_ready:
            await asyncio.sleep(self.config.drain_seconds)
        process = pod.process
        if process is not None and process.returncode is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.config.grace_seconds)
            except TimeoutError:
                signal_group(process.pid, signal.SIGKILL)
                await process.wait()
            signal_group(process.pid, signal.SIGKILL)  # anything left in its group
        if delete_object and pod.created_in_api:
            with contextlib.suppress(ApiError, aiohttp.ClientError):
                await self.api.delete(PODS, pod.namespace, pod.name)
        self.pods.pop((pod.namespace, pod.name), None)
        shutil.rmtree(pod.workdir / "tmp", ignore_errors=True)
        self.dirty.set()
        self._write_targets()

    # --------------------------------------------------------------------------- Prometheus

    def targets(self) -> list[Obj]:
        groups = []
        for pod in sorted(self.pods.values(), key=lambda p: (p.namespace, p.name)):
            if not pod.running:
                continue
            labels = pod.labels
            groups.append(
                {
                    "targets": [f"{LOCALHOST}:{pod.port}"],
                    "labels": {
                        "namespace": pod.namespace,
                        "pod": pod.name,
                        "deployment": pod.deployment,
                        "revision": labels.get(REVISION_LABEL, pod.deployment),
                        "model_deployment": labels.get(MDEP_LABEL, ""),
                    },
                }
            )
        return groups

    def _write_targets(self) -> None:
        if self.config.targets_file is None:
            return
        text = json.dumps(self.targets(), indent=1)
        if text == self._targets_written:
            return
        path = self.config.targets_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        self._targets_written = text


async def amain(args: argparse.Namespace) -> int:
    config = KubeletConfig(
        work_dir=Path(args.work_dir),
        targets_file=Path(args.targets) if args.targets else None,
        probe_period=args.probe_period,
        drain_seconds=args.drain_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ApiClient(load_connection(args.kubeconfig)) as api:
        await api.wait_ready()
        await Kubelet(api, config).run(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcanary_local.kubelet", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--work-dir", required=True, help="pods' working directories and logs")
    parser.add_argument("--targets", help="Prometheus file_sd targets file to keep up to date")
    parser.add_argument("--probe-period", type=float, default=0.5, help="longest probe period (s)")
    parser.add_argument("--drain-seconds", type=float, default=1.0, help="unready -> SIGTERM (s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s kubelet: %(message)s",
    )
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
