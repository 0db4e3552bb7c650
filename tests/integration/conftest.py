"""Fixtures: the emulator with the CRD registered, and the real operator against it.

The emulator serves HTTPS and authorizes by RBAC; the operator runs as a ServiceAccount bound by exactly
the Helm chart's rendered RBAC (cluster-wide mode; ``cluster.operator_kubeconfig(["ns"])`` for the
namespaced mode), so a verb missing from the chart fails here as on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_emulator import EmulatorThread

from .chart_rbac import RbacCluster
from .harness import Cluster, OperatorProcess, load_crd


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with EmulatorThread(bookmark_interval=1.0, tls=True) as emu:
        emu.apply(load_crd())
        c = RbacCluster(emu, tmp_path, tmp_path / "metrics.json")
        c.set_metrics({})
        yield c


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster.kubeconfig, tmp_path, env={"MLCANARY_METRICS_SOURCE": f"file:{cluster.metrics_file}"}
    )
    process.start()
    yield process
    process.stop()
