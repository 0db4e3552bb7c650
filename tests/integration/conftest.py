"""Fixtures: the emulator with the CRD registered, and the real operator against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_emulator import EmulatorThread

from .harness import Cluster, OperatorProcess, load_crd


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with EmulatorThread(bookmark_interval=1.0) as emu:
        emu.apply(load_crd())
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        metrics_file = tmp_path / "metrics.json"
        c = Cluster(emu, kubeconfig, metrics_file)
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
