"""Namespaced mode (`mlcanary run -n NS`, what the chart's Roles-only install runs): Kopf's cluster-wide
scanning is off, the watched namespace is served, another namespace is left alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chart_rbac import RbacCluster
from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration


@pytest.fixture
def namespaced_operator(cluster: Cluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    assert isinstance(cluster, RbacCluster)
    process = OperatorProcess(
        cluster.operator_kubeconfig(watch_namespaces=["ml"]),  # the chart's Roles-only RBAC
        tmp_path,
        env={"MLCANARY_METRICS_SOURCE": f"file:{cluster.metrics_file}"},
        args=("-m", "mlcanary.cli", "run", "--tick-seconds", "0.3", "--metrics-port", "0", "-n", "ml"),
    )
    process.start()
    yield process
    process.stop()


def test_only_the_watched_namespace_is_reconciled(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    cluster.apply(model_deployment("fraud", "1.0.0", namespace="ml"))
    cluster.apply(model_deployment("fraud", "1.0.0", namespace="other"))
    cluster.wait_for(
        lambda: cluster.status("fraud", "ml").get("phase") == "Healthy",
        "healthy in ml",
        operator=namespaced_operator,
    )
    time.sleep(1.5)
    assert cluster.status("fraud", "other") == {}, "a namespace outside --namespace must not be touched"
    assert cluster.deployments("other") == []
    assert "Traceback" not in namespaced_operator.logs()
