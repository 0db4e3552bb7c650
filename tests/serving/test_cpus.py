"""Thread pools are sized from the CPUs the process is given, not the machine's core count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlcanary_serving import cpus


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset")
def test_affinity_is_respected() -> None:
    code = "from mlcanary_serving.cpus import available_cpus; print(available_cpus())"
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1"


def test_cgroup_quota_caps_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(cpus, "_cgroup_cpu_quota", lambda: 1.5)
    assert cpus.available_cpus() == 2
    monkeypatch.setattr(cpus, "_cgroup_cpu_quota", lambda: 0.25)
    assert cpus.available_cpus() == 1
    monkeypatch.setattr(cpus, "_cgroup_cpu_quota", lambda: None)
    assert cpus.available_cpus() == 16


def test_cgroup_v2_file_is_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = Path.read_text

    def fake(self: Path, *a: object, **k: object) -> str:
        if str(self) == "/sys/fs/cgroup/cpu.max":
            return "250000 100000\n"
        return real(self)

    monkeypatch.setattr(Path, "read_text", fake)
    assert cpus._cgroup_cpu_quota() == 2.5


def test_server_process_imports_no_numpy_before_sizing_threads() -> None:
    code = "import sys, mlcanary_serving.__main__, mlcanary_serving.cpus; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
