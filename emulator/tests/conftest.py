"""Fixtures for the Kubernetes API emulator tests: an emulator per test, HTTP helpers, a test CRD."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from emulator_kit import Http

from kube_emulator import EmulatorThread, KubernetesEmulator


@pytest.fixture
async def emu() -> AsyncIterator[KubernetesEmulator]:
    async with KubernetesEmulator(bookmark_interval=0.2) as emulator:
        yield emulator


@pytest.fixture
async def http(emu: KubernetesEmulator) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(
        emu.url, headers={"Authorization": f"Bearer {emu.admin_token}"}
    ) as session:
        yield Http(session)


@pytest.fixture
def emu_thread() -> Iterator[EmulatorThread]:
    with EmulatorThread(bookmark_interval=0.2) as emulator:
        yield emulator


@pytest.fixture
def kubeconfig(emu_thread: EmulatorThread, tmp_path: Path) -> Path:
    return emu_thread.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def emu_tls(tmp_path: Path) -> Iterator[EmulatorThread]:
    """An HTTPS emulator: kubectl sends the kubeconfig's token only to https servers."""
    with EmulatorThread(bookmark_interval=0.2, tls=True) as emulator:
        yield emulator


@pytest.fixture
def tls_kubeconfig(emu_tls: EmulatorThread, tmp_path: Path) -> Path:
    return emu_tls.write_kubeconfig(tmp_path / "kubeconfig-tls")
