"""The Helm chart end to end, as far as this machine allows: `helm template | kubectl apply` into the
Kubernetes API emulator, then the real operator started the way the chart's Deployment starts it
(its args and environment) and a smoke rollout applied with kubectl.

The operator runs as the ServiceAccount the chart created, with the chart's RBAC enforced by the
emulator. What this cannot show: the pod really running the image, and Prometheus scraping (the file
metrics source stands in for analysis)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .chart_rbac import RbacCluster, service_account_kubeconfig
from .harness import REPO, Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "mlcanary"
HEALTH_LUA = REPO / "examples" / "argocd-health.lua"
RELEASE, NAMESPACE = "smoke", "mlcanary-system"
GOOD = {"error-rate": 0.001}


def _tool(name: str) -> str | None:
    local = REPO / ".venv" / "bin" / name
    return str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which(name)


HELM, KUBECTL = _tool("helm"), _tool("kubectl")
needs_tools = pytest.mark.skipif(
    HELM is None or KUBECTL is None, reason="helm/kubectl not installed (make setup installs them)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(*argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    assert KUBECTL is not None
    assert isinstance(cluster, RbacCluster)  # kubectl acts as the cluster admin who installs the chart
    return _run(KUBECTL, "--kubeconfig", str(cluster.admin_kubeconfig), *args, stdin=stdin)


def _argocd_health(obj: dict[str, Any]) -> str:
    from lupa import lua51

    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    status: str = lua.execute(HEALTH_LUA.read_text()).status
    return status


@needs_tools
def test_chart_applies_and_the_operator_it_configures_rolls_out(cluster: Cluster, tmp_path: Path) -> None:
    assert HELM is not None
    rendered = _run(HELM, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds")
    namespace = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    applied = _kubectl(cluster, "apply", "-f", "-", stdin=f"{namespace}---\n{rendered}")
    for expected in (
        "customresourcedefinition.apiextensions.k8s.io/modeldeployments.mlcanary.io",
        f"serviceaccount/{RELEASE}-mlcanary created",
        f"clusterrole.rbac.authorization.k8s.io/{RELEASE}-mlcanary created",
        f"clusterrolebinding.rbac.authorization.k8s.io/{RELEASE}-mlcanary created",
        f"service/{RELEASE}-mlcanary-metrics created",
        f"deployment.apps/{RELEASE}-mlcanary created",
    ):
        assert expected in applied, applied
    deployment = cluster.emu.get_object("deployments", f"{RELEASE}-mlcanary", NAMESPACE)
    assert deployment is not None and deployment["spec"]["strategy"] == {"type": "Recreate"}

    # Run the container the chart describes: its args and environment, with the ports moved to free
    # loopback ports and the file metrics source standing in for Prometheus.
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "run"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    health_port, metrics_port = _free_port(), _free_port()
    args = [a.replace("0.0.0.0:8081", f"127.0.0.1:{health_port}") for a in container["args"]]
    assert f"--liveness=http://127.0.0.1:{health_port}/healthz" in args
    env.update(
        MLCANARY_METRICS_SOURCE=f"file:{cluster.metrics_file}",
        MLCANARY_METRICS_HOST="127.0.0.1",
        MLCANARY_METRICS_PORT=str(metrics_port),
        MLCANARY_TICK_SECONDS="0.3",
    )
    cluster.set_metrics({"2.0.0": GOOD})
    account = f"{NAMESPACE}/{deployment['spec']['template']['spec']['serviceAccountName']}"
    kubeconfig = service_account_kubeconfig(cluster.emu, account, tmp_path / "chart-operator.kubeconfig")
    operator = OperatorProcess(kubeconfig, tmp_path, env=env, args=("-m", "mlcanary.cli", *args))
    operator.start()
    try:

        def probe(port: int, path: str) -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        cluster.wait_for(
            lambda: probe(health_port, "/healthz"), "the liveness/readiness endpoint", operator=operator
        )

        manifest = model_deployment("fraud", "1.0.0", steps=[50])
        _kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
        cluster.wait_for(
            lambda: cluster.status("fraud").get("phase") == "Healthy", "v1 healthy", operator=operator
        )
        assert _argocd_health(cluster.mdep("fraud")) == "Healthy"

        manifest["spec"]["model"].update(version="2.0.0", uri="file:///models/fraud/2.0.0/")
        _kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
        cluster.wait_for(
            lambda: cluster.status("fraud").get("phase") in {"Preparing", "Progressing", "Promoting"},
            "a canary",
            operator=operator,
        )
        cluster.wait_for(
            lambda: (
                cluster.status("fraud").get("stableVersion") == "2.0.0"
                and cluster.status("fraud").get("phase") == "Healthy"
            ),
            "2.0.0 promoted",
            timeout=60,
            operator=operator,
        )
        status = cluster.status("fraud")
        assert [h["outcome"] for h in status["history"]] == ["Promoted"]
        assert _argocd_health(cluster.mdep("fraud")) == "Healthy"
        assert "fraud" in _kubectl(cluster, "get", "modeldeployments", "-n", "default")

        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert (
            'mlcanary_operator_rollouts_total{name="fraud",namespace="default",outcome="promoted"} 1.0'
            in metrics
        )
    finally:
        operator.stop()
