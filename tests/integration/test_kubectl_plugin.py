"""``kubectl mlcanary``: the real kubectl binary finds the plugin on PATH and runs it against the
emulator (over HTTPS, as a user with the admin kubeconfig) while the real operator rolls out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
GOOD = {"error-rate": 0.001}
BAD = {"error-rate": 0.5}


@pytest.fixture
def kubectl(cluster: Cluster, tmp_path: Path):  # type: ignore[no-untyped-def]
    if KUBECTL is None:
        pytest.skip("no kubectl binary")
    admin = getattr(cluster, "admin_kubeconfig", cluster.kubeconfig)
    # kubectl finds kubectl-mlcanary on PATH: the virtualenv's bin, where pip put the console script.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KUBECONFIG": str(admin)}
    env["HOME"] = str(tmp_path)

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), "mlcanary", *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    run.env = env  # type: ignore[attr-defined]
    run.admin = admin  # type: ignore[attr-defined]
    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def in_ml(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"]["namespace"] = "ml"
    return manifest


def test_kubectl_mlcanary_follows_and_steers_rollouts(
    cluster: Cluster, operator: OperatorProcess, kubectl: Any, tmp_path: Path
) -> None:
    listed = subprocess.run(
        [str(KUBECTL), "plugin", "list"], env=kubectl.env, capture_output=True, text=True, timeout=30
    )
    assert "kubectl-mlcanary" in listed.stdout, listed.stdout + listed.stderr

    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    cluster.apply(in_ml(model_deployment("fraud", "1.0.0", step_duration="30s")))
    cluster.apply(model_deployment("other", "1.0.0"))
    # status: a first deploy that becomes ready exits 0
    first = kubectl("status", "fraud", "-n", "ml", "--timeout", "40s")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1.0.0 serves" in first.stdout
    cluster.wait_for(
        lambda: cluster.status("other").get("phase") == "Healthy", "other healthy", operator=operator
    )
    everywhere = ok(kubectl("get", "-A"))
    assert "ModelDeployment ml/fraud  Healthy" in everywhere and "ModelDeployment default/other" in everywhere
    assert "ml/fraud" not in ok(kubectl("get"))  # the context's namespace (default) only

    # A canary held at step 1 (stepDuration 30s): the tree shows revisions, route weights, metrics.
    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(in_ml(model_deployment("fraud", "2.0.0", step_duration="30s")))
    cluster.wait_for(
        lambda: any(s.get("measurements") for s in cluster.status("fraud", "ml").get("steps") or []),
        "a round at step 1",
        operator=operator,
    )
    shown = ok(kubectl("get", "fraud", "-n", "ml"))
    assert "Progressing  step 1/3" in shown, shown
    assert "stable   fraud-v1-0-0-" in shown and "route weight 80%" in shown
    assert "canary   fraud-v2-0-0-" in shown and "route weight 20%" in shown
    assert "METRIC" in shown and "error-rate" in shown and "<= 0.05" in shown and "Successful" in shown
    timed_out = kubectl("status", "fraud", "-n", "ml", "--timeout", "1s")
    assert timed_out.returncode == 2, timed_out.stdout + timed_out.stderr

    # -w prints the tree again when it changes: pause, then resume.
    watch = subprocess.Popen(
        [str(KUBECTL), "mlcanary", "get", "fraud", "-n", "ml", "-w"],
        env=kubectl.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        assert "ModelDeployment ml/fraud" in watch.stdout.readline()
        assert "paused" in ok(kubectl("pause", "fraud", "-n", "ml"))
        deadline = time.monotonic() + 30
        seen = ""
        while "ModelDeployment ml/fraud  Paused" not in seen and time.monotonic() < deadline:
            seen += watch.stdout.readline()
        assert "ModelDeployment ml/fraud  Paused" in seen
    finally:
        watch.terminate()
        watch.wait(10)
    assert cluster.mdep("fraud", "ml")["spec"]["rollout"]["paused"] is True
    ok(kubectl("resume", "fraud", "-n", "ml"))
    cluster.wait_for(
        lambda: cluster.status("fraud", "ml").get("phase") == "Progressing", "resumed", operator=operator
    )

    # promote: status exits 0 once 2.0.0 is stable.
    assert "promote requested" in ok(kubectl("promote", "fraud", "-n", "ml"))
    promoted = kubectl("status", "fraud", "-n", "ml", "--timeout", "40s")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert cluster.status("fraud", "ml")["stableVersion"] == "2.0.0"

    # A failing version: status exits 1.
    cluster.set_metrics({"2.0.0": GOOD, "3.0.0": BAD})
    cluster.apply(in_ml(model_deployment("fraud", "3.0.0")))
    failed = kubectl("status", "fraud", "-n", "ml", "--timeout", "40s")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "rolled back: analysis failed: error-rate" in failed.stdout

    # retry: the rejected version rolls out again (and, still bad, is rolled back again); abort.
    ok(kubectl("retry", "fraud", "-n", "ml"))
    cluster.wait_for(
        lambda: cluster.status("fraud", "ml").get("canaryVersion") == "3.0.0", "retried", operator=operator
    )
    cluster.set_metrics({"2.0.0": GOOD, "3.0.0": GOOD})
    cluster.apply(in_ml(model_deployment("fraud", "3.0.0", step_duration="30s")))
    cluster.wait_for(
        lambda: cluster.status("fraud", "ml").get("phase") == "Progressing",
        "v3 in progress",
        operator=operator,
    )
    ok(kubectl("abort", "fraud", "-n", "ml"))
    aborted = kubectl("status", "fraud", "-n", "ml", "--timeout", "40s")
    assert aborted.returncode == 1, aborted.stdout + aborted.stderr
    assert "aborted by the mlcanary.io/abort annotation" in aborted.stdout

    history = ok(kubectl("history", "fraud", "-n", "ml"))
    rows = [line.split()[:4] for line in history.splitlines()[1:]]
    assert [r[1:4] for r in rows] == [
        ["1.0.0", "2.0.0", "Promoted"],
        ["2.0.0", "3.0.0", "RolledBack"],
        ["2.0.0", "3.0.0", "RolledBack"],
    ], history
    assert "error-rate" in ok(kubectl("report", "fraud", "-n", "ml", "-A"))

    # retrain: the mlcanary.io/retrain annotation requests one training Job (spec.retraining).
    retraining = in_ml(model_deployment("fraud", "3.0.0", step_duration="30s"))
    retraining["spec"]["retraining"] = {"jobTemplate": {"image": "trainer:1"}}
    cluster.apply(retraining)
    assert "retrain requested" in ok(kubectl("retrain", "fraud", "-n", "ml"))
    run = cluster.wait_for(
        lambda: (cluster.status("fraud", "ml").get("retraining") or {}).get("lastRun"),
        "the training request",
        operator=operator,
    )
    assert cluster.emu.get_object("jobs", run, "ml") is not None

    # --kubeconfig and --context: the current context points nowhere, the named one at the emulator.
    config = yaml.safe_load(Path(kubectl.admin).read_text())
    good = config["contexts"][0]
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}})
    config["contexts"] = [
        {"name": "emu", "context": {**good["context"], "namespace": "ml"}},
        {"name": "broken", "context": {"cluster": "nowhere", "user": good["context"]["user"]}},
    ]
    config["current-context"] = "broken"
    other_config = tmp_path / "two-contexts.kubeconfig"
    other_config.write_text(yaml.safe_dump(config))
    via_context = ok(kubectl("get", "fraud", "--kubeconfig", str(other_config), "--context", "emu"))
    assert "ModelDeployment ml/fraud" in via_context  # the context's namespace applies too
    broken = kubectl("get", "fraud", "--kubeconfig", str(other_config), timeout=120)
    assert broken.returncode == 3, broken.stdout + broken.stderr
    missing = kubectl("status", "nope", "-n", "ml", "--timeout", "5s")
    assert missing.returncode == 3 and "HTTP 404" in missing.stderr
