"""Several operator replicas with leader election, against the emulator, as ServiceAccounts bound by the
chart's RBAC with ``leaderElection.enabled=true``.

Every replica runs ``python -m mlcanary.cli run --leader-election`` under its own pod name, which is
also its User-Agent: the emulator counts writes per object and User-Agent, which tells the replicas
apart although they share one ServiceAccount. Short Lease timings (2 s / 1.5 s / 0.2 s) keep these
tests to seconds; the algorithm is the same at 15 s / 10 s / 2 s.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .chart_rbac import OPERATOR_NAMESPACE, RbacCluster, chart_rbac, granted
from .harness import REPO, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration

RELEASE = "ha"
LEASE = f"{RELEASE}-mlcanary"  # the chart names the Lease like the release
SETS = ("leaderElection.enabled=true", "replicaCount=3")
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, TICK = 2, 1.5, 0.2, 0.3
GOOD = {"error-rate": 0.001}
LEASE_TRIPLES = {(verb, "coordination.k8s.io", "leases") for verb in ("get", "create", "update")}


class Replicas:
    def __init__(self, cluster: RbacCluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.kubeconfig = cluster.operator_kubeconfig(sets=SETS, release=RELEASE)
        self.tmp_path = tmp_path
        self.processes: dict[str, OperatorProcess] = {}
        self.health: dict[str, int] = {}

    def start(self, name: str, health_port: int) -> OperatorProcess:
        workdir = self.tmp_path / name
        workdir.mkdir(exist_ok=True)
        process = OperatorProcess(
            self.kubeconfig,
            workdir,
            env={
                "MLCANARY_METRICS_SOURCE": f"file:{self.cluster.metrics_file}",
                "MLCANARY_TICK_SECONDS": str(TICK),
                "MLCANARY_POD_NAME": name,
                "MLCANARY_LEADER_ELECTION_NAMESPACE": OPERATOR_NAMESPACE,
                "MLCANARY_LEADER_ELECTION_LEASE_NAME": LEASE,
                "MLCANARY_LEADER_ELECTION_LEASE_DURATION_SECONDS": str(LEASE_DURATION),
                "MLCANARY_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": str(RENEW_DEADLINE),
                "MLCANARY_LEADER_ELECTION_RETRY_PERIOD_SECONDS": str(RETRY_PERIOD),
            },
            args=(
                "-m",
                "mlcanary.cli",
                "run",
                "--leader-election",
                f"--liveness=http://127.0.0.1:{health_port}/healthz",
            ),
        )
        process.start()
        self.processes[name] = process
        self.health[name] = health_port
        return process

    def lease(self) -> dict[str, Any]:
        return self.cluster.emu.get_object("leases", LEASE, OPERATOR_NAMESPACE) or {}

    def holder(self) -> str | None:
        holder: str | None = (self.lease().get("spec") or {}).get("holderIdentity")
        return holder

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.logs()[-2500:]}" for n, p in self.processes.items())

    def writers(self, name: str) -> Counter[str]:
        """Writes by User-Agent to the ModelDeployment ``name`` (its status) and to its children."""
        rows = self.cluster.emu.requests()["writes"]
        return Counter(
            {
                row["userAgent"]: row["count"]
                for row in rows
                if row["userAgent"].startswith("mlcanary-operator/")
                and (row["name"] == name or row["name"].startswith(f"{name}-"))
                and row["resource"] != "leases"
            }
        )


@pytest.fixture
def replicas(cluster: RbacCluster, tmp_path: Path) -> Iterator[Replicas]:
    group = Replicas(cluster, tmp_path)
    yield group
    for process in group.processes.values():
        process.stop()


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _healthz(port: int) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return response.status, response.read().decode()


def _step_events(cluster: RbacCluster, name: str) -> Counter[str]:
    """Messages of the steps' Events (StepStarted for the first, StepAdvanced after a passed step),
    with how often each was reported."""
    out: Counter[str] = Counter()
    for event in cluster.events():
        if (
            event.get("reason") in ("StepStarted", "StepAdvanced")
            and (event.get("involvedObject") or {}).get("name") == name
        ):
            out[event.get("message", "")] += int(event.get("count") or 1)
    return out


def test_the_chart_grants_exactly_the_lease_verbs_by_name(cluster: RbacCluster) -> None:
    plain, account = chart_rbac("it")
    elected, elected_account = chart_rbac(RELEASE, sets=SETS)
    extra = granted(elected, elected_account) - granted(plain, account)
    assert extra == LEASE_TRIPLES
    role = next(o for o in elected if o["kind"] == "Role" and "leader-election" in o["metadata"]["name"])
    assert role["metadata"]["namespace"] == OPERATOR_NAMESPACE
    by_verbs = {tuple(rule["verbs"]): rule.get("resourceNames") for rule in role["rules"]}
    assert by_verbs == {("get", "update"): [LEASE], ("create",): None}


def test_three_replicas_one_writer_and_a_sigkilled_leader_is_replaced_mid_rollout(
    cluster: RbacCluster, replicas: Replicas
) -> None:
    names = ["op-0", "op-1", "op-2"]
    for name, port in zip(names, _free_ports(3), strict=True):
        replicas.start(name, port)
    leader = cluster.wait_for(replicas.holder, "a leader", timeout=20, interval=0.05)
    assert leader in names
    followers = [n for n in names if n != leader]
    # Followers answer the liveness probe without running Kopf (the kubelet must not restart them).
    port = replicas.health[followers[0]]
    cluster.wait_for(lambda: _try_healthz(port), "a follower's /healthz", timeout=20)
    assert _healthz(port) == (200, json.dumps({"leader": False}))
    # `kubectl get lease` shows who leads.
    kubectl = subprocess.run(
        [
            *(str(REPO / ".venv" / "bin" / "kubectl"), "--kubeconfig", str(cluster.admin_kubeconfig)),
            *("get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert kubectl.stdout == leader, kubectl.stderr

    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "1.0.0"))
    cluster.wait_for(lambda: cluster.status("fraud").get("phase") == "Healthy", "v1 healthy", timeout=40)
    cluster.apply(model_deployment("fraud", "2.0.0", steps=[20, 50], step_duration="3s"))
    status = cluster.wait_for(
        lambda: (lambda s: s if s.get("currentStep") == 1 and s.get("phase") == "Progressing" else None)(
            cluster.status("fraud")
        ),
        "step 1",
        timeout=30,
    )
    step1_started = datetime.fromisoformat(status["stepStartedAt"])
    before = replicas.writers("fraud")
    assert set(before) == {f"mlcanary-operator/{leader}"}, f"writers before the kill: {before}"

    replicas.processes[leader].kill()
    killed_at = time.monotonic()
    successor = cluster.wait_for(
        lambda: (lambda h: h if h not in (None, leader) else None)(replicas.holder()),
        "a new leader",
        timeout=LEASE_DURATION * 4,
        interval=0.02,
    )
    # A follower sees the lease expire within the lease duration and one retry after the kill.
    took_over = time.monotonic() - killed_at
    assert took_over <= LEASE_DURATION + RETRY_PERIOD * 1.2 + 0.5, took_over
    status = cluster.wait_for(
        lambda: (lambda s: s if s.get("currentStep") == 2 else None)(cluster.status("fraud")),
        "step 2 under the new leader",
        timeout=20,
    )
    # Step 1 kept its start (not restarted by the new leader, not skipped): step 2 began one step
    # duration after step 1, give or take one tick plus the takeover.
    step2_started = datetime.fromisoformat(status["stepStartedAt"])
    assert 3.0 <= (step2_started - step1_started).total_seconds() <= 3.0 + took_over + 4 * TICK + 0.5
    cluster.wait_for(
        lambda: (lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "2.0.0")(
            cluster.status("fraud")
        ),
        "v2 promoted by the new leader",
        timeout=30,
    )
    steps = _step_events(cluster, "fraud")
    assert (
        sorted(steps) == sorted(m for m in steps if m.startswith(("step 1:", "step 2:"))) and len(steps) == 2
    )
    assert set(steps.values()) == {1}, f"a step started twice: {steps}"
    after = replicas.writers("fraud")
    # The killed leader wrote nothing more; the successor wrote the rest; the third replica nothing.
    assert set(after) == {f"mlcanary-operator/{leader}", f"mlcanary-operator/{successor}"}, after
    assert after[f"mlcanary-operator/{leader}"] == before[f"mlcanary-operator/{leader}"]
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{LEASE}"
    rows = cluster.emu.requests()["requests"]
    used = {(r["verb"], r["group"], r["resource"]) for r in rows if r["user"] == user}
    assert used >= LEASE_TRIPLES, "every Lease verb the chart grants was used"

    # A clean shutdown (SIGTERM, as in a rolling upgrade) releases the Lease: the last replica takes
    # over within a retry or two instead of waiting out the lease duration.
    last = next(n for n in names if n not in (leader, successor))
    stopping = replicas.processes[successor]
    assert stopping.process is not None
    stopping.stop()
    assert stopping.process.returncode == 0, stopping.logs()[-2000:]
    stopped_at = time.monotonic()
    cluster.wait_for(lambda: replicas.holder() == last, "the last replica leads", timeout=10, interval=0.02)
    assert time.monotonic() - stopped_at < LEASE_DURATION, "released, not expired"


def test_a_leader_that_loses_its_lease_exits_and_its_follower_waits(
    cluster: RbacCluster, replicas: Replicas
) -> None:
    ports = _free_ports(2)
    replicas.start("op-a", ports[0])
    leader_process = replicas.processes["op-a"]
    cluster.wait_for(lambda: replicas.holder() == "op-a", "op-a leads", timeout=20)
    replicas.start("op-b", ports[1])
    cluster.wait_for(lambda: _try_healthz(ports[1]), "op-b answers as a follower", timeout=20)
    # Someone else takes the Lease (an admin, or a replica the leader could not reach in time).
    lease = replicas.lease()
    lease["spec"] = {**lease["spec"], "holderIdentity": "intruder", "leaseDurationSeconds": 300}
    cluster.emu.apply(lease)
    taken_at = time.monotonic()
    assert leader_process.process is not None
    code = leader_process.process.wait(timeout=RENEW_DEADLINE + 5)
    assert code != 0, "losing the lease ends the process with a failure (the kubelet restarts it)"
    assert time.monotonic() - taken_at <= RETRY_PERIOD * 2 + 1.0
    assert "lost the lease" in leader_process.logs()
    time.sleep(LEASE_DURATION)
    assert replicas.holder() == "intruder", "the follower waits while the holder's lease is fresh"
    assert replicas.processes["op-b"].process is not None
    assert replicas.processes["op-b"].process.poll() is None


def _try_healthz(port: int) -> bool:
    try:
        return _healthz(port)[0] == 200
    except OSError:
        return False
