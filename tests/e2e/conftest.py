"""End-to-end fixtures: one local stack for the whole e2e session (emulator, kubelet running real
serving processes, gateway, real Prometheus, real operator), model bundles trained once, and a
:class:`Rollout` helper per test (its own namespace and model name, its own load generator).

Time is compressed by configuration only: a 0.5 s operator tick, 1 s scrapes, and ModelDeployments
with a 4 s ``stepDuration`` and ``interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from integration.chart_rbac import chart_rbac
from mlcanary.kubeapi import DEPLOYMENTS, MODEL_DEPLOYMENTS, ApiClient, load_connection
from mlcanary_local.demo.story import Bundle, Timing, build_bundles, manifest
from mlcanary_local.loadgen import Record, read_records
from mlcanary_local.process import spawn, stop_popen
from mlcanary_local.stack import LocalStack, StackConfig

Obj = dict[str, Any]

TIMING = Timing(
    replicas=4,  # replicas router: step 25% = 1 of 4 pods, 50% = 2 of 4
    rate=80,
    step_duration="4s",
    interval="4s",
    progress_deadline="40s",
    scale_down_delay="1s",
    tick_seconds=0.5,
    act_timeout=60,
    baseline_seconds=2,
)
STEPS = [25, 50]
ERROR_RATE = {"name": "error-rate", "builtin": "errorRate", "max": 0.05, "minRequests": 20}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists():
        skip = pytest.mark.skip(reason="needs the prometheus binary (make setup installs it)")
        for item in items:
            if "e2e" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    return build_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # The operator runs as the chart's ServiceAccount under exactly the chart's (cluster-wide) RBAC.
    rbac, account = chart_rbac("e2e")
    config = StackConfig(
        tick_seconds=TIMING.tick_seconds,
        probe_period=0.3,
        drain_seconds=0.5,
        retrain_eval_seconds=1,
        operator_rbac=tuple(rbac),
        operator_service_account=account,
    )
    stack = LocalStack(tmp_path_factory.mktemp("stack"), config)
    with stack:
        yield stack


@pytest.fixture
def stack(local_stack: LocalStack) -> LocalStack:
    """The shared stack, with every component running (a previous test may have stopped one)."""
    if not local_stack.prometheus.running:
        local_stack.start_prometheus()
    for name in local_stack.components:
        local_stack.start_component(name)
    return local_stack


@dataclass
class Snapshot:
    t: float
    phase: str | None
    stable: str | None
    canary: str | None
    weight: int
    step: int | None
    verdict: str | None
    deployments: tuple[str, ...]


@dataclass
class Rollout:
    """One ModelDeployment of one test, followed from the outside like a user would."""

    stack: LocalStack
    bundles: dict[str, Bundle]
    api: ApiClient
    namespace: str
    name: str
    work: Path
    metrics: list[Obj]
    steps: list[int] = field(default_factory=lambda: list(STEPS))
    on_inconclusive: str = "Hold"
    router: str = "replicas"
    load_test: Obj | None = None
    timing: Timing = TIMING
    shadow: Obj | None = None
    replicas: int | None = None  # per revision (default the timing's)
    snapshots: list[Snapshot] = field(default_factory=list)
    loadgen: Any = None
    applied: dict[str, float] = field(default_factory=dict)

    @property
    def requests_csv(self) -> Path:
        return self.work / "requests.csv"

    async def apply(self, version: str, env: dict[str, str] | None = None) -> None:
        obj = manifest(
            self.bundles[version],
            self.timing if self.replicas is None else replace(self.timing, replicas=self.replicas),
            self.router,
            env=[{"name": k, "value": v} for k, v in (env or {}).items()],
            name=self.name,
            namespace=self.namespace,
            model_name=self.name,
            metrics=self.metrics,
            steps=self.steps,
            on_inconclusive=self.on_inconclusive,
            load_test=self.load_test,
            shadow=self.shadow,
        )
        self.applied[version] = time.time()
        await self.api.create_or_merge(obj)

    async def status(self) -> Obj:
        obj = await self.api.get(MODEL_DEPLOYMENTS, self.namespace, self.name)
        status: Obj = (obj or {}).get("status") or {}
        return status

    async def deployments(self) -> list[str]:
        """The versions of this ModelDeployment's Deployments (one entry per Deployment)."""
        items, _ = await self.api.list(
            DEPLOYMENTS, self.namespace, f"mlcanary.io/model-deployment={self.name}"
        )
        return sorted(d["metadata"]["labels"].get("app.kubernetes.io/version", "?") for d in items)

    async def snapshot(self) -> Obj:
        status = await self.status()
        self.snapshots.append(
            Snapshot(
                t=time.time(),
                phase=status.get("phase"),
                stable=status.get("stableVersion"),
                canary=status.get("canaryVersion"),
                weight=int(status.get("canaryWeight") or 0),
                step=status.get("currentStep"),
                verdict=(status.get("analysis") or {}).get("lastVerdict"),
                deployments=tuple(await self.deployments()),
            )
        )
        return status

    async def wait(self, predicate: Callable[[Obj], bool], within: float, what: str) -> Obj:
        deadline = time.monotonic() + within
        while True:
            status = await self.snapshot()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.namespace}/{self.name}: not {what} after {within:.0f}s; phase "
                    f"{status.get('phase')}: {status.get('message')}\nlast rounds: "
                    f"{status.get('lastMeasurements')}"
                )
            await asyncio.sleep(0.2)

    async def wait_healthy(self, version: str, within: float = 40) -> Obj:
        return await self.wait(
            lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == version,
            within,
            f"Healthy at {version}",
        )

    async def wait_finished(self, version: str, within: float = 60) -> Obj:
        """Until the rollout of ``version`` is in the history and the traffic move is done."""
        return await self.wait(
            lambda s: record(s, version) is not None and s.get("phase") in ("Healthy", "RolledBack"),
            within,
            f"finished rolling out {version}",
        )

    async def wait_step(self, version: str, step: int, within: float = 40) -> Obj:
        return await self.wait(
            lambda s: (
                s.get("canaryVersion") == version
                and s.get("phase") == "Progressing"
                and s.get("currentStep") == step
            ),
            within,
            f"at step {step} of {version}",
        )

    def start_load(self, rate: float = TIMING.rate) -> None:
        url = self.stack.model_url(self.namespace, self.name)
        argv = [sys.executable, "-m", "mlcanary_local.loadgen", "--url", url, "--rate", str(rate)]
        argv += ["--out", str(self.requests_csv)]
        self.loadgen = spawn(argv, self.work / "loadgen.log")

    def stop_load(self) -> None:
        if self.loadgen is not None:
            stop_popen(self.loadgen, grace=15)
            self.loadgen = None

    def records(self) -> list[Record]:
        return read_records(self.requests_csv)

    async def first_deploy(self, version: str = "1.0.0") -> None:
        await self.apply(version)
        await self.wait_healthy(version)
        self.start_load()
        await asyncio.sleep(TIMING.baseline_seconds)

    def steps_seen(self, version: str) -> list[int]:
        seen: list[int] = []
        for s in self.snapshots:
            if (
                s.canary == version
                and s.phase == "Progressing"
                and s.step
                and (not seen or seen[-1] != s.step)
            ):
                seen.append(s.step)
        return seen


def record(status: Obj, version: str) -> Obj | None:
    for item in reversed(status.get("history") or []):
        if item.get("version") == version:
            return dict(item)
    return None


def served_by(records: list[Record], version: str, since: float = 0.0, until: float = float("inf")) -> int:
    return sum(1 for r in records if r.version == version and since <= r.t <= until)


@pytest.fixture
async def rollout_factory(
    stack: LocalStack, bundles: dict[str, Bundle], tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Rollout]]]:
    created: list[Rollout] = []
    api = ApiClient(load_connection(str(stack.kubeconfig)))
    test_name = request.node.name.removeprefix("test_").replace("_", "-")[:30].strip("-")

    async def make(metrics: list[Obj], **kwargs: Any) -> Rollout:
        name = f"e2e-{test_name}"[:40].strip("-")
        rollout = Rollout(stack, bundles, api, name, name, tmp_path, metrics, **kwargs)
        created.append(rollout)
        await api.ensure_namespace(name)
        return rollout

    yield make
    for rollout in created:
        rollout.stop_load()
        with contextlib.suppress(Exception):
            await api.delete(MODEL_DEPLOYMENTS, rollout.namespace, rollout.name)  # children go with it
    await api.close()
