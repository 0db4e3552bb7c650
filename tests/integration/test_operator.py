"""The real Kopf operator against the Kubernetes API emulator: promotion, rollback, restart, 409s,
garbage collection, invalid specs, progress deadline and a new version mid-rollout."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mlcanary.analysis.static import FileMetricProvider
from mlcanary.kube import ChildCache, Kube
from mlcanary.kubeapi import ApiClient, load_connection
from mlcanary.reconcile import OperatorContext, reconcile
from mlcanary.settings import Settings

from .harness import Cluster, OperatorProcess, model_deployment

pytestmark = pytest.mark.integration

GOOD = {"error-rate": 0.001}
BAD = {"error-rate": 0.5}


def phase(cluster: Cluster, name: str) -> str | None:
    return cluster.status(name).get("phase")


def deploy_v1(cluster: Cluster, operator: OperatorProcess, name: str = "fraud", **kwargs: Any) -> None:
    cluster.apply(model_deployment(name, "1.0.0", **kwargs))
    cluster.wait_for(lambda: phase(cluster, name) == "Healthy", "v1 healthy", operator=operator)


class Recorder:
    """Samples (phase, step, weight, stable, canary) as fast as the tests poll."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster, self.name = cluster, name
        self.samples: list[tuple[Any, ...]] = []

    def sample(self) -> dict[str, Any]:
        status = self.cluster.status(self.name)
        row = (
            status.get("phase"),
            status.get("currentStep"),
            status.get("canaryWeight", 0),
            status.get("stableVersion"),
            status.get("canaryVersion"),
        )
        if not self.samples or self.samples[-1] != row:
            self.samples.append(row)
        return status

    def until(self, predicate, what: str, operator: OperatorProcess, timeout: float = 40.0) -> dict[str, Any]:
        return self.cluster.wait_for(
            lambda: (lambda s: s if predicate(s) else None)(self.sample()), what, timeout, operator
        )


def test_first_deploy_goes_straight_to_stable(cluster: Cluster, operator: OperatorProcess) -> None:
    deploy_v1(cluster, operator)
    status = cluster.status("fraud")
    assert status["stableVersion"] == "1.0.0"
    assert "canaryVersion" not in status
    assert status["observedGeneration"] == cluster.mdep("fraud")["metadata"]["generation"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    [deployment] = cluster.deployments()
    assert deployment["spec"]["replicas"] == 4
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == cluster.mdep("fraud")["metadata"]["uid"]
    assert {s["metadata"]["name"] for s in cluster.services()} == {"fraud", deployment["metadata"]["name"]}


def test_good_canary_is_promoted_through_every_step(cluster: Cluster, operator: OperatorProcess) -> None:
    deploy_v1(cluster, operator)
    [v1_deployment] = cluster.deployments()
    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "2.0.0"))
    recorder = Recorder(cluster, "fraud")
    status = recorder.until(
        lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "2.0.0", "v2 promoted", operator
    )
    weights = [row[2] for row in recorder.samples if row[4] == "2.0.0"]
    seen = [w for i, w in enumerate(weights) if i == 0 or weights[i - 1] != w]
    assert [w for w in seen if w] == [20, 50, 100], recorder.samples
    steps = [row[1] for row in recorder.samples if row[0] == "Progressing"]
    assert sorted(set(steps)) == [1, 2]
    assert status["history"][-1]["outcome"] == "Promoted"
    assert [s["weight"] for s in status["history"][-1]["steps"]] == [20, 50]
    # The old revision is removed after scaleDownDelay; the new one is now stable at full size.
    cluster.wait_for(lambda: len(cluster.deployments()) == 1, "v1 removed", operator=operator)
    [v2_deployment] = cluster.deployments()
    assert v2_deployment["metadata"]["name"] != v1_deployment["metadata"]["name"]
    assert v2_deployment["metadata"]["labels"]["mlcanary.io/role"] == "stable"
    assert v2_deployment["spec"]["replicas"] == 4
    reasons = {e["reason"] for e in cluster.events()}
    assert {"CanaryStarted", "StepStarted", "Promoting", "Promoted"} <= reasons


def test_failing_canary_is_rolled_back_and_remembered(cluster: Cluster, operator: OperatorProcess) -> None:
    deploy_v1(cluster, operator)
    cluster.set_metrics({"2.0.0": BAD})
    cluster.apply(model_deployment("fraud", "2.0.0"))
    recorder = Recorder(cluster, "fraud")
    status = recorder.until(lambda s: s.get("phase") == "RolledBack", "rollback", operator)
    assert status["stableVersion"] == "1.0.0"
    assert status["rejectedVersions"] == ["2.0.0"]
    assert status["canaryWeight"] == 0
    record = status["history"][-1]
    assert record["outcome"] == "RolledBack"
    assert "error-rate" in record["reason"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RolledBack")
    # The canary is removed only after traffic is back on v1 and scaleDownDelay has passed.
    cluster.wait_for(lambda: len(cluster.deployments()) == 1, "canary removed", operator=operator)
    [stable] = cluster.deployments()
    assert stable["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.0"
    assert stable["spec"]["replicas"] == 4
    # A re-sync of the same spec does not start the rejected version again...
    cluster.apply(
        {
            **model_deployment("fraud", "2.0.0"),
            "metadata": {"name": "fraud", "namespace": "default", "labels": {"resync": "1"}},
        }
    )
    time.sleep(2)
    assert phase(cluster, "fraud") == "RolledBack"
    assert len(cluster.deployments()) == 1
    # ...until the retry annotation asks for it (and this time the metrics are good).
    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(
        {
            "apiVersion": "mlcanary.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "default", "annotations": {"mlcanary.io/retry": "1"}},
        }
    )
    status = recorder.until(
        lambda s: s.get("stableVersion") == "2.0.0" and s.get("phase") == "Healthy",
        "retry promoted",
        operator,
    )
    assert status["rejectedVersions"] == []


def test_operator_killed_mid_step_resumes_without_reset_or_duplicates(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    deploy_v1(cluster, operator, step_duration="4s")
    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "2.0.0", step_duration="4s"))
    recorder = Recorder(cluster, "fraud")
    status = recorder.until(
        lambda s: s.get("currentStep") == 1 and s.get("phase") == "Progressing", "step 1", operator
    )
    step1_started = datetime.fromisoformat(status["stepStartedAt"])
    names_before = {d["metadata"]["name"] for d in cluster.deployments()}
    assert len(names_before) == 2
    operator.kill()
    time.sleep(1.5)
    assert cluster.status("fraud")["currentStep"] == 1
    operator.start()
    status = recorder.until(lambda s: s.get("currentStep") == 2, "step 2 after restart", operator)
    assert (
        datetime.fromisoformat(next(s["startedAt"] for s in [{"startedAt": status["stepStartedAt"]}]))
        >= step1_started
    )
    # Step 1 kept its original start: the restart neither reset it (step 2 would start >= 4 s after the
    # restart) nor skipped it (step 2 starts no earlier than 4 s after step 1 began).
    step2_started = datetime.fromisoformat(status["stepStartedAt"])
    assert 4.0 <= (step2_started - step1_started).total_seconds() < 4.0 + 3.0
    assert {d["metadata"]["name"] for d in cluster.deployments()} == names_before
    progressing_steps = [row[1] for row in recorder.samples if row[0] == "Progressing"]
    assert progressing_steps == sorted(progressing_steps)
    recorder.until(
        lambda s: s.get("stableVersion") == "2.0.0" and s.get("phase") == "Healthy", "promoted", operator
    )


def test_deleting_the_model_deployment_removes_every_child(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    deploy_v1(cluster, operator)
    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "2.0.0", step_duration="30s"))
    cluster.wait_for(lambda: len(cluster.deployments()) == 2, "canary created", operator=operator)
    cluster.emu.delete("modeldeployments", "fraud", "default")
    cluster.wait_for(
        lambda: not cluster.deployments() and not cluster.services(),
        "children garbage-collected",
        operator=operator,
    )


def test_invalid_spec_names_the_field_and_recovers(cluster: Cluster, operator: OperatorProcess) -> None:
    deploy_v1(cluster, operator)
    bad = model_deployment("fraud", "2.0.0", steps=[50, 20])
    cluster.apply(bad)

    def spec_valid() -> dict[str, Any] | None:
        return next(
            (c for c in cluster.status("fraud").get("conditions", []) if c["type"] == "SpecValid"), None
        )

    condition = cluster.wait_for(
        lambda: (c := spec_valid()) and c["status"] == "False" and c, "SpecValid False", operator=operator
    )
    assert condition["reason"] == "InvalidSpec"
    assert "spec.rollout.steps" in condition["message"]
    cluster.wait_for(
        lambda: "InvalidSpec" in {e["reason"] for e in cluster.events()},
        "InvalidSpec event",
        operator=operator,
    )
    # Nothing that runs is touched while the spec is invalid.
    assert len(cluster.deployments()) == 1
    assert cluster.status("fraud")["stableVersion"] == "1.0.0"
    cluster.set_metrics({"2.0.0": GOOD})
    fixed = model_deployment("fraud", "2.0.0", steps=[20, 50])
    cluster.apply(fixed)
    cluster.wait_for(
        lambda: (c := spec_valid()) and c["status"] == "True", "SpecValid True", operator=operator
    )
    cluster.wait_for(
        lambda: cluster.status("fraud").get("stableVersion") == "2.0.0",
        "promoted after fix",
        timeout=40,
        operator=operator,
    )


def test_canary_that_never_becomes_ready_gets_no_traffic_and_is_rolled_back(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    deploy_v1(cluster, operator)
    cluster.emu.set_readiness("default", "fraud-v2*", "never")
    cluster.set_metrics({"2.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "2.0.0", progress_deadline="3s"))
    recorder = Recorder(cluster, "fraud")
    status = recorder.until(lambda s: s.get("phase") == "RolledBack", "deadline rollback", operator)
    assert all(row[2] == 0 for row in recorder.samples), recorder.samples
    assert "progressDeadline" in status["history"][-1]["reason"]


def test_new_version_mid_rollout_returns_traffic_then_restarts_at_step_one(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    deploy_v1(cluster, operator, step_duration="30s")
    cluster.set_metrics({"2.0.0": GOOD, "3.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "2.0.0", step_duration="30s"))
    recorder = Recorder(cluster, "fraud")
    recorder.until(
        lambda s: s.get("currentStep") == 1 and s.get("phase") == "Progressing", "v2 at step 1", operator
    )
    cluster.apply(model_deployment("fraud", "3.0.0", step_duration="30s"))
    status = recorder.until(
        lambda s: s.get("canaryVersion") == "3.0.0" and s.get("phase") == "Progressing",
        "v3 at step 1",
        operator,
    )
    assert status["currentStep"] == 1
    after_v2 = recorder.samples[next(i for i, r in enumerate(recorder.samples) if r[0] == "RollingBack") :]
    assert after_v2[0][2] == 0, "traffic must go back to v1 before v3 starts"
    assert status["history"][-1]["outcome"] == "Superseded"
    assert status.get("rejectedVersions", []) == []


async def test_status_write_conflict_is_retried(cluster: Cluster, tmp_path: Path) -> None:
    """A real 409 from the API: someone writes the object between our read and our status write."""
    cluster.apply(model_deployment("fraud", "1.0.0"))
    api = ApiClient(load_connection(str(cluster.kubeconfig)))

    class InterferingKube(Kube):
        interfered = 0

        async def patch_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            if self.interfered == 0:
                self.interfered += 1
                await asyncio.to_thread(
                    cluster.apply,
                    {
                        "apiVersion": "mlcanary.io/v1alpha1",
                        "kind": "ModelDeployment",
                        "metadata": {"name": "fraud", "namespace": "default", "labels": {"touched": "yes"}},
                    },
                )
            return await super().patch_status(*args, **kwargs)

    kube = InterferingKube(api)
    context = OperatorContext(
        kube=kube,
        settings=Settings(),
        provider_factory=lambda spec, ns: FileMetricProvider(cluster.metrics_file),
    )
    result = await reconcile(cluster.mdep("fraud"), context)
    assert result.conflicts == 1
    assert cluster.status("fraud")["phase"] == "Initializing"
    assert cluster.mdep("fraud")["metadata"]["labels"]["touched"] == "yes"
    assert len(cluster.deployments()) == 1
    assert context.metrics.status_conflicts._value.get() == 1
    await api.close()


async def test_a_quiet_tick_writes_nothing(cluster: Cluster) -> None:
    cluster.apply(model_deployment("fraud", "1.0.0"))
    api = ApiClient(load_connection(str(cluster.kubeconfig)))
    kube = Kube(api)
    context = OperatorContext(
        kube=kube,
        settings=Settings(),
        provider_factory=lambda spec, ns: FileMetricProvider(cluster.metrics_file),
    )
    for _ in range(30):
        await reconcile(cluster.mdep("fraud"), context)
        if cluster.status("fraud").get("phase") == "Healthy":
            break
        await asyncio.sleep(0.1)
    assert cluster.status("fraud")["phase"] == "Healthy"
    writes = kube.writes
    await reconcile(cluster.mdep("fraud"), context)
    assert kube.writes == writes, "a tick with nothing to change must not write"
    await api.close()


async def test_a_quiet_tick_makes_no_api_request_at_all(cluster: Cluster) -> None:
    """With the informer caches an idle object costs nothing: no write, and no read either."""
    cluster.apply(model_deployment("fraud", "1.0.0"))
    requests: list[tuple[str, str]] = []
    api = ApiClient(
        load_connection(str(cluster.kubeconfig)), on_request=lambda v, p, s: requests.append((v, p))
    )
    cache = ChildCache(api)
    cache.start()
    assert await cache.wait_synced(10)
    kube = Kube(api, cache)
    context = OperatorContext(
        kube=kube,
        settings=Settings(),
        provider_factory=lambda spec, ns: FileMetricProvider(cluster.metrics_file),
    )
    for _ in range(20):
        result = await reconcile(cluster.mdep("fraud"), context)
        if result.settled:
            break
        await asyncio.sleep(0.2)
    assert cluster.status("fraud")["phase"] == "Healthy"
    requests.clear()
    for _ in range(3):
        result = await reconcile(cluster.mdep("fraud"), context)
        assert result.settled
    assert requests == [], requests
    await cache.stop()
    await api.close()


async def test_the_reconcile_histogram_has_one_observation_per_tick_and_no_prometheus_wait(
    cluster: Cluster,
) -> None:
    """mlcanary_reconcile_duration_seconds: a Prometheus that takes 2 s per query is never in it, as
    analysis rounds run beside the ticks."""
    cluster.set_metrics({"1.0.0": GOOD, "2.0.0": GOOD})
    cluster.apply(model_deployment("fraud", "1.0.0", interval="1s"))
    api = ApiClient(load_connection(str(cluster.kubeconfig)))
    slow_queries = 0

    class SlowPrometheus(FileMetricProvider):
        async def measure(self, metric: Any, context: Any, now: datetime) -> Any:
            nonlocal slow_queries
            slow_queries += 1
            await asyncio.sleep(2.0)
            return await super().measure(metric, context, now)

    context = OperatorContext(
        kube=Kube(api),
        settings=Settings(),
        provider_factory=lambda spec, ns: SlowPrometheus(cluster.metrics_file),
    )
    histogram = "mlcanary_reconcile_duration_seconds"
    ticks = 0
    started = time.monotonic()
    while time.monotonic() - started < 20 and not slow_queries:
        await reconcile(cluster.mdep("fraud"), context)
        ticks += 1
        if cluster.status("fraud").get("phase") == "Healthy":
            cluster.apply(model_deployment("fraud", "2.0.0", interval="1s"))
        await asyncio.sleep(0.2)
    assert slow_queries, "no analysis round started"
    for _ in range(5):  # ticks while the round waits on the slow Prometheus
        await reconcile(cluster.mdep("fraud"), context)
        ticks += 1
    registry = context.metrics.registry
    assert registry.get_sample_value(f"{histogram}_count") == ticks
    assert registry.get_sample_value(f"{histogram}_bucket", {"le": "1.0"}) == ticks, "a tick waited"
    assert registry.get_sample_value(f"{histogram}_sum") < 2.0  # all ticks together: less than one query
    context.rounds.discard(cluster.mdep("fraud")["metadata"]["uid"])
    await api.close()
