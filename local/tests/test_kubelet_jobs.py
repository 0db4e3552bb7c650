"""The local kubelet runs Job pods as processes and reports how they ended in the Job's status."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kube_emulator import KubernetesEmulator
from mlcanary.kubeapi import ApiClient, load_connection
from mlcanary_local.jobs import JobRunner, job_command

JOBS = "/apis/batch/v1/namespaces/default/jobs"
SCRIPT = "import os, pathlib, sys; pathlib.Path('out.txt').write_text(os.environ['WORD']); sys.exit(int(os.environ['CODE']))"


def job(name: str, code: int, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "local",
        "command": ["python", "-c"],
        "args": [SCRIPT],
        "env": [{"name": "WORD", "value": name}, {"name": "CODE", "value": str(code)}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}, **spec},
    }


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[tuple[KubernetesEmulator, Path]]:
    # As in the local stack: the emulator's Job simulation is off, processes play the pods.
    async with KubernetesEmulator(deployment_controller=False, tls=True) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        stop = asyncio.Event()
        async with ApiClient(load_connection(str(kubeconfig))) as api:
            task = asyncio.create_task(JobRunner(api, tmp_path).run(stop))
            try:
                yield emu, tmp_path
            finally:
                stop.set()
                await task


async def until_finished(emu: KubernetesEmulator, name: str, within: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        obj = emu.get_object("jobs", name) or {}
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        if "Complete" in conditions or "Failed" in conditions:
            return obj
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {name} did not finish: {emu.get_object('jobs', name)}")


def types(job: dict[str, Any]) -> list[str]:
    return [c["type"] for c in job["status"]["conditions"]]


async def test_exit_zero_completes_the_job(runner: tuple[KubernetesEmulator, Path]) -> None:
    emu, work = runner
    emu.apply(job("twice", 0, completions=2))
    done = await until_finished(emu, "twice")
    assert types(done) == ["SuccessCriteriaMet", "Complete"]
    assert (done["status"]["succeeded"], done["status"]["active"], done["status"].get("failed", 0)) == (
        2,
        0,
        0,
    )
    assert done["status"]["startTime"] and done["status"]["completionTime"]
    [out] = list((work / "jobs" / "default").glob("twice-*/out.txt"))
    assert out.read_text() == "twice"  # the template's env reached the process


async def test_failures_are_retried_up_to_the_backoff_limit(runner: tuple[KubernetesEmulator, Path]) -> None:
    emu, _ = runner
    emu.apply(job("broken", 3, backoffLimit=1))
    done = await until_finished(emu, "broken")
    assert types(done) == ["FailureTarget", "Failed"]
    assert done["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    assert done["status"]["failed"] == 2  # the first try and one retry


async def test_the_active_deadline_kills_the_pod(runner: tuple[KubernetesEmulator, Path]) -> None:
    emu, _ = runner
    slow = job("slow", 0, activeDeadlineSeconds=1)
    slow["spec"]["template"]["spec"]["containers"][0]["args"] = ["import time; time.sleep(60)"]
    started = asyncio.get_running_loop().time()
    emu.apply(slow)
    done = await until_finished(emu, "slow")
    assert done["status"]["conditions"][-1]["reason"] == "DeadlineExceeded"
    assert asyncio.get_running_loop().time() - started < 20


def test_python_means_this_interpreter_and_a_command_is_required() -> None:
    argv, env = job_command(job("x", 0)["spec"]["template"])
    assert argv[:2] == [sys.executable, "-c"] and env["CODE"] == "0"
    with pytest.raises(ValueError, match="no command"):
        job_command({"spec": {"containers": [{"name": "c", "image": "i"}]}})


REPORT = (
    "import sys; open(sys.argv[1], 'w').write('{\"ok\": 1}'); print('log line'); sys.exit(int(sys.argv[2]))"
)


async def test_each_attempt_is_a_pod_object_ending_with_its_termination_message(
    runner: tuple[KubernetesEmulator, Path],
) -> None:
    emu, _ = runner
    reporting = job("reporting", 0)
    container = reporting["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [REPORT, "/dev/termination-log", "0"]  # the default path, given a local file
    reporting["spec"]["template"]["metadata"] = {"labels": {"team": "ml"}}
    emu.apply(reporting)
    done = await until_finished(emu, "reporting")
    [pod] = [
        p for p in emu.objects("pods", "default") if p["metadata"]["labels"].get("job-name") == "reporting"
    ]
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == done["metadata"]["uid"]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (0, '{"ok": 1}')
    assert pod["status"]["phase"] == "Succeeded"


async def test_fallback_to_logs_on_error_takes_the_log_tail_when_the_file_is_empty(
    runner: tuple[KubernetesEmulator, Path],
) -> None:
    emu, _ = runner
    crashing = job("crashing", 0, backoffLimit=0)
    container = crashing["spec"]["template"]["spec"]["containers"][0]
    container["args"] = ["import sys; print('boom: no bundle'); sys.exit(2)"]
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    emu.apply(crashing)
    await until_finished(emu, "crashing")
    [pod] = [
        p for p in emu.objects("pods", "default") if p["metadata"]["labels"].get("job-name") == "crashing"
    ]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2 and "boom: no bundle" in terminated["message"]
    assert pod["status"]["phase"] == "Failed"


READ = "import sys; print(open(sys.argv[1]).read()); sys.exit(0 if open(sys.argv[1]).read() == 'the bodies' else 7)"


def with_bodies(name: str, config_map: str, key: str) -> dict[str, Any]:
    obj = job(name, 0)
    pod = obj["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"] = [READ, "/etc/mlcanary/load-test/bodies.json"]
    container["volumeMounts"] = [{"name": "bodies", "mountPath": "/etc/mlcanary/load-test", "readOnly": True}]
    pod["volumes"] = [
        {"name": "bodies", "configMap": {"name": config_map, "items": [{"key": key, "path": "bodies.json"}]}}
    ]
    return obj


async def test_a_config_map_volume_is_written_as_files_and_the_mount_path_points_at_them(
    runner: tuple[KubernetesEmulator, Path],
) -> None:
    emu, work = runner
    emu.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lt", "namespace": "default"},
               "data": {"rows.json": "the bodies", "other": "x"}})  # fmt: skip
    emu.apply(with_bodies("mounted", "lt", "rows.json"))
    done = await until_finished(emu, "mounted")
    assert types(done)[-1] == "Complete"  # the process read the key's content at the mount path
    [local] = list((work / "jobs" / "default").glob("mounted-*/volumes/bodies/bodies.json"))
    assert local.read_text() == "the bodies" and not (local.parent / "other").exists()  # items chosen


@pytest.mark.parametrize(("config_map", "key"), [("absent", "rows.json"), ("lt2", "absent-key")])
async def test_a_missing_config_map_or_key_fails_the_job(
    runner: tuple[KubernetesEmulator, Path], config_map: str, key: str
) -> None:
    emu, _ = runner
    emu.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lt2", "namespace": "default"},
               "data": {"rows.json": "the bodies"}})  # fmt: skip
    name = f"missing-{config_map}"
    emu.apply(with_bodies(name, config_map, key))
    done = await until_finished(emu, name)
    assert types(done)[-1] == "Failed"
