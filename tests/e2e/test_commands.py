"""The commands a newcomer runs: ``mlcanary demo --quick`` tells the whole story and exits 0 with a
summary and a PNG; Ctrl-C stops everything it started; ``mlcanary local up|status|down`` leaves
nothing behind and kubectl works against it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MLCANARY = [sys.executable, "-m", "mlcanary.cli"]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), children of children included."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def wait_gone(pids: set[int], within: float = 20) -> set[int]:
    deadline = time.monotonic() + within
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


@pytest.mark.timeout(540)
def test_demo_quick_tells_the_whole_story(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [*MLCANARY, "demo", "--quick", "--out", str(out)], capture_output=True, text=True, timeout=480
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    text = result.stdout
    for expected in (
        "Healthy      stable 1.0.0",
        # the default router is gatewayAPI: exact weights, 5 -> 20 -> 50
        "2.0.0 step 1/4: canary weight 5%",
        "2.0.0 step 3/4: canary weight 50%",
        "Healthy      stable 2.0.0",
        "3.0.0 rolled back: analysis failed: prediction-drift",
        "4.0.0 rolled back: analysis failed: error-rate",
        "5.0.0 rolled back having answered 0 user requests: load test failed: p95 latency",
        "Shadowing    shadow: 100% of prediction requests mirrored",
        "6.0.0 rolled back having answered 0 user requests: shadow phase failed: shadow-agreement",
        # the closed loop: registry -> drift -> retraining Job -> new version in MLflow -> canary
        "registry: alias champion resolves to 2.0.0",
        "RetrainRequested: inputDrift",
        "registry: 2.1.0 registered by the training Job, alias champion moved to it",
        "2.1.0 retrained on drifted data (Job Succeeded) and promoted",
        "story complete",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text[-3000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["skipped"] == []
    assert [a["version"] for a in summary["acts"]] == [
        "1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0", "6.0.0", "2.1.0"
    ]  # fmt: skip
    versions = {v["version"]: v for v in summary["versions"]}
    assert {v: row["outcome"] for v, row in versions.items()} == {
        "1.0.0": "Replaced",
        "2.0.0": "Promoted",
        "3.0.0": "RolledBack",
        "4.0.0": "RolledBack",
        "5.0.0": "RolledBack",
        "6.0.0": "RolledBack",
        "2.1.0": "Promoted",
    }
    # the zero-exposure gates: caught having served no user request (counted in requests.csv)
    assert versions["5.0.0"]["requests"] == 0 and versions["6.0.0"]["requests"] == 0
    assert versions["3.0.0"]["requests"] > 0  # the same degenerate model without a gate met users
    png = (out / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 50_000


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with log.open("w") as handle:
        demo = subprocess.Popen(
            [*MLCANARY, "demo", "--quick", "--out", str(tmp_path / "demo")],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Preparing    waiting for canary 2.0.0" not in log.read_text():  # every kind of process is up
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(2)
        started = alive(descendants(demo.pid))
        assert len(started) >= 8, f"expected the stack and its pods, got {started}"
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        demo.wait(60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, log.read_text()[-3000:]
    assert not wait_gone(started), f"left running: {alive(started)}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (make setup installs it)")
def test_local_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    work = tmp_path / "local"
    up = subprocess.run(
        [*MLCANARY, "local", "--work-dir", str(work), "up"], capture_output=True, text=True, timeout=120
    )
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((work / "state.json").read_text())
    supervisor = int(state["pid"])
    try:
        started = alive(descendants(supervisor))
        assert len(started) >= 6, started  # emulator, Prometheus, kubelet, gateway, route-status, operator
        assert state["api"].startswith("https://127.0.0.1:")  # kubectl sends its token over https only
        for url in (state["gateway"], state["prometheus"]):
            assert url.startswith("http://127.0.0.1:")
        status = subprocess.run(
            [*MLCANARY, "local", "--work-dir", str(work), "status"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0 and "NOT RUNNING" not in status.stdout, status.stdout
        kubectl = subprocess.run(
            ["kubectl", "--kubeconfig", state["kubeconfig"], "get", "crd", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "modeldeployments.mlcanary.io" in kubectl.stdout, kubectl.stdout + kubectl.stderr
    finally:
        down = subprocess.run(
            [*MLCANARY, "local", "--work-dir", str(work), "down"], capture_output=True, text=True, timeout=90
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert not wait_gone({supervisor, *started}), "processes left after local down"
