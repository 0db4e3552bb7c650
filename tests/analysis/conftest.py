"""Fixtures for the analysis tests: a real Prometheus serving the deterministic scenario history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .promkit import RunningPrometheus, backfill, require_prometheus, run_prometheus
from .scenarios import build_history
from .tenants import build_tenant_history


@pytest.fixture(scope="session")
def scenario_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    """Prometheus on 127.0.0.1:<ephemeral port> over the backfilled scenario history."""
    require_prometheus()
    work: Path = tmp_path_factory.mktemp("prometheus-scenarios")
    data = work / "data"
    backfill(build_history(), data)
    with run_prometheus(work, data) as server:
        yield server


@pytest.fixture(scope="session")
def tenant_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    """Prometheus over two namespaces' series (see :mod:`tests.analysis.tenants`)."""
    require_prometheus()
    work: Path = tmp_path_factory.mktemp("prometheus-tenants")
    data = work / "data"
    backfill(build_tenant_history(), data)
    with run_prometheus(work, data) as server:
        yield server
