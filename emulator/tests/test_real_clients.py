"""Real processes against the emulator: ``kopf run``, ``kubectl`` and the emulator's own CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from emulator_kit import deployment, wait_until, widget, widget_crd

from kube_emulator import EmulatorThread

pytestmark = pytest.mark.integration

OPERATOR = textwrap.dedent(
    """
    import kopf
    import kubernetes


    @kopf.on.startup()
    def configure(settings, **_):
        settings.posting.enabled = False
        settings.watching.server_timeout = 30


    @kopf.on.create("example.com", "v1", "widgets")
    def create_child(spec, name, namespace, patch, **_):
        child = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-child"},
            "data": {"size": str(spec["size"])},
        }
        kopf.adopt(child)
        kubernetes.config.load_kube_config()
        kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, child)
        patch.status["phase"] = "Ready"
        return {"child": child["metadata"]["name"]}


    @kopf.on.update("example.com", "v1", "widgets", field="spec.size")
    def resize(new, name, namespace, **_):
        kubernetes.config.load_kube_config()
        kubernetes.client.CoreV1Api().patch_namespaced_config_map(
            f"{name}-child", namespace, {"data": {"size": str(new)}}
        )


    @kopf.on.delete("example.com", "v1", "widgets")
    def goodbye(**_):
        pass
    """
)


@pytest.fixture
def kopf_operator(
    emu_thread: EmulatorThread, kubeconfig: Path, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    emu_thread.apply(widget_crd())
    (tmp_path / "operator.py").write_text(OPERATOR)
    log = (tmp_path / "kopf.log").open("wb")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "-A",
            "--verbose",
            str(tmp_path / "operator.py"),
        ],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        print((tmp_path / "kopf.log").read_text()[-5000:])


def test_kopf_operator_creates_children_patches_status_and_is_garbage_collected(
    emu_thread: EmulatorThread, kopf_operator: subprocess.Popen[bytes]
) -> None:
    emu_thread.apply({**widget("w1", size=2), "metadata": {"name": "w1", "namespace": "default"}})

    def handled() -> dict[str, Any] | None:
        parent = emu_thread.get_object("widgets", "w1")
        child = emu_thread.get_object("configmaps", "w1-child")
        if parent and child and (parent.get("status") or {}).get("phase") == "Ready":
            return {"parent": parent, "child": child}
        return None

    state = wait_until(handled, timeout=30)
    parent, child = state["parent"], state["child"]
    assert child["data"] == {"size": "2"}
    assert child["metadata"]["ownerReferences"][0]["uid"] == parent["metadata"]["uid"]
    assert parent["status"]["create_child"] == {"child": "w1-child"}
    assert "kopf.zalando.org/KopfFinalizerMarker" in parent["metadata"]["finalizers"]
    assert parent["metadata"]["generation"] == 1

    patched = emu_thread.apply(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 5}}
    )
    assert patched["metadata"]["generation"] == 2
    wait_until(
        lambda: (emu_thread.get_object("configmaps", "w1-child") or {}).get("data") == {"size": "5"},
        timeout=30,
    )

    emu_thread.delete("widgets", "w1")
    wait_until(lambda: emu_thread.get_object("widgets", "w1") is None, timeout=30)
    assert emu_thread.get_object("configmaps", "w1-child") is None, (
        "the child is garbage-collected with its owner"
    )
    assert kopf_operator.poll() is None, "the operator is still running"


# --------------------------------------------------------------------------------------------- kubectl


def _kubectl() -> str | None:
    path = shutil.which("kubectl")
    if path is None:
        return None
    try:
        probe = subprocess.run([path, "version", "--client"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if probe.returncode == 0 else None


KUBECTL = _kubectl()


@pytest.mark.skipif(KUBECTL is None, reason="no working kubectl binary")
def test_kubectl_apply_get_wait_annotate_delete(
    emu_tls: EmulatorThread, tls_kubeconfig: Path, tmp_path: Path
) -> None:
    assert KUBECTL is not None
    emu_thread = emu_tls
    env = {**os.environ, "KUBECONFIG": str(tls_kubeconfig), "HOME": str(tmp_path)}

    def kubectl(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        return result

    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all([widget_crd()]))
    kubectl("apply", "-f", str(manifests))
    widget_file = tmp_path / "widget.yaml"
    widget_file.write_text(yaml.safe_dump(widget("w1", size=3)))
    kubectl("apply", "-f", str(widget_file))
    deploy_file = tmp_path / "deploy.yaml"
    deploy_file.write_text(yaml.safe_dump(deployment("web", replicas=2)))
    kubectl("apply", "-f", str(deploy_file))

    listing = kubectl("get", "wdg").stdout
    assert "w1" in listing and "SIZE" in listing
    as_json = json.loads(kubectl("get", "wdg", "w1", "-o", "json").stdout)
    assert as_json["spec"] == {"size": 3, "color": "red"}

    # client-side apply again: GET, then a PATCH with the last-applied annotation
    changed = deployment("web", replicas=3, image="model:2")
    deploy_file.write_text(yaml.safe_dump(changed))
    kubectl("apply", "-f", str(deploy_file))
    dep = emu_thread.get_object("deployments", "web")
    assert dep is not None
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "model:2"
    assert "kubectl.kubernetes.io/last-applied-configuration" in dep["metadata"]["annotations"]
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")

    kubectl("annotate", "wdg", "w1", "team=ml")
    kubectl("label", "wdg", "w1", "tier=gold")
    assert "w1" in kubectl("get", "wdg", "-l", "tier=gold", "-o", "name").stdout

    waiter = subprocess.Popen(
        [KUBECTL, "wait", "--for=condition=Ready", "wdg/w1", "--timeout=30s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = subprocess.Popen(
        [KUBECTL, "get", "wdg", "-w"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.0)
        assert waiter.poll() is None, "kubectl wait must block until the condition holds"
        current = emu_thread.get_object("widgets", "w1")
        assert current is not None
        emu_thread.apply(
            {**current, "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}}
        )
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err
        assert "condition met" in out
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
        time.sleep(0.5)
        watcher.terminate()
        watched, _ = watcher.communicate(timeout=10)
    lines = [line for line in watched.splitlines() if line.startswith("w1")]
    assert len(lines) >= 2 and "True" in lines[-1], watched

    kubectl("delete", "wdg", "w1", "--timeout=20s")
    assert emu_thread.get_object("widgets", "w1") is None
    kubectl("delete", "-f", str(deploy_file))
    assert emu_thread.objects("deployments") == []
    assert "NotFound" in kubectl("get", "wdg", "w1", check=False).stderr


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_prints_the_url_and_writes_a_kubeconfig(tmp_path: Path) -> None:
    from kubernetes import client, config

    path = tmp_path / "kubeconfig"
    manifests = tmp_path / "crds"
    manifests.mkdir()
    (manifests / "widgets.yaml").write_text(yaml.safe_dump(widget_crd()))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kube_emulator",
            "--port",
            "0",
            "--kubeconfig",
            str(path),
            "--apply",
            str(manifests),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:") and not url.endswith(":0")
        kube = yaml.safe_load(path.read_text())
        assert kube["current-context"] == kube["contexts"][0]["name"]
        assert kube["clusters"][0]["cluster"]["server"] == url
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
        with client.ApiClient(configuration) as api:
            assert (
                client.CustomObjectsApi(api).list_namespaced_custom_object(
                    "example.com", "v1", "default", "widgets"
                )["items"]
                == []
            )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
