"""The chart's RBAC is exactly what the operator uses: a missing verb fails it, a surplus verb is caught.

The emulator authorizes by RBAC and counts every request per (user, verb, resource). One operator run
under the chart's rendered RBAC (replicas router: the router and Secret rules switched off; autoscaled)
goes through create, promotion, rollback and deletion; the verbs it used are then compared with the verbs granted.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_emulator import EmulatorThread

from .chart_rbac import (
    chart_rbac,
    granted,
    granted_but_unused,
    install,
    service_account_kubeconfig,
    service_account_user,
)
from .harness import Cluster, OperatorProcess, load_crd, model_deployment

pytestmark = pytest.mark.integration

# The replicas router needs no router objects and the scenario reads no Secret: leave those rules out.
REPLICAS_ONLY = (
    "rbac.routers.gatewayAPI=false",
    "rbac.routers.istio=false",
    "rbac.readSecrets=false",
    "rbac.aggregateToDefaultRoles=false",
)
GOOD = {"error-rate": 0.001}
BAD = {"error-rate": 0.5}
# Granted for a path no scenario here takes; each says which. Anything else granted must be used.
RARE_PATHS = {
    ("get", "apps", "deployments"): "kube.Kube.ensure re-reads a child that a create found existing",
    ("get", "", "services"): "kube.Kube.ensure re-reads a child that a create found existing",
    ("get", "autoscaling", "horizontalpodautoscalers"): (
        "kube.Kube.ensure re-reads a child that a create found existing"
    ),
    # spec.loadTest needs a mesh router; tests/routers/test_load_test_integration.py runs it under
    # this same chart RBAC (the Job created, its pod's termination message listed).
    ("create", "batch", "jobs"): "spec.loadTest: the load test Job (test_load_test_integration)",
    ("list", "", "pods"): "spec.loadTest: the result in the Job pod's termination message",
    ("delete", "batch", "jobs"): "spec.loadTest: a load test aborted or superseded mid-run",
    ("get", "batch", "jobs"): "kube.Kube.get before the Job informer has synced",
    ("get", "batch", "cronjobs"): "kube.Kube.ensure re-reads a child that a create found existing",
    # Only after a status write lost a race (409) or a failed tick: whether one happens in this
    # scenario is timing (it failed 2 runs in 6 on the unchanged main as an "unused" verb).
    ("get", "mlcanary.io", "modeldeployments"): (
        "reconcile.reconcile re-reads the object after a 409 on its status write, or after a failed tick"
    ),
}
# Autoscaled, so the HPA verbs are exercised too: created with the first stable, patched to hold
# stable's scale-down while a canary runs, deleted when the promotion takes the count back.
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}


def _manifest(version: str, schedule: str | None = None) -> dict[str, Any]:
    manifest = model_deployment("fraud", version, steps=[50])
    manifest["spec"]["serving"] = {"autoscaling": AUTOSCALING}
    if schedule is not None:  # spec.retraining: the CronJob verbs, and a requested Job's
        manifest["spec"]["retraining"] = {"schedule": schedule, "jobTemplate": {"image": "trainer:1"}}
    return manifest


def _run_scenario(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.set_metrics({"1.0.0": GOOD})
    cluster.apply(_manifest("1.0.0"))
    cluster.wait_for(lambda: cluster.status("fraud").get("phase") == "Healthy", "v1", operator=operator)
    retraining = _manifest("1.0.0", schedule="0 3 * * *")
    retraining["metadata"]["annotations"] = {"mlcanary.io/retrain": "1"}
    cluster.apply(retraining)
    cluster.wait_for(
        lambda: cluster.emu.get_object("cronjobs", "fraud-retrain"), "CronJob", operator=operator
    )
    cluster.wait_for(lambda: cluster.emu.objects("jobs", "default"), "requested Job", operator=operator)
    cluster.apply(_manifest("1.0.0", schedule="0 4 * * *"))
    cluster.wait_for(
        lambda: cluster.emu.get_object("cronjobs", "fraud-retrain")["spec"]["schedule"] == "0 4 * * *",
        "CronJob patched",
        operator=operator,
    )
    cluster.set_metrics({"2.0.0": GOOD})
    v2 = _manifest("2.0.0")
    v2["spec"]["retraining"] = None  # the emulator's apply merges: null removes
    cluster.apply(v2)
    cluster.wait_for(
        lambda: cluster.emu.get_object("cronjobs", "fraud-retrain") is None,
        "CronJob deleted",
        operator=operator,
    )
    cluster.wait_for(
        lambda: cluster.status("fraud").get("stableVersion") == "2.0.0", "v2 promoted", operator=operator
    )
    cluster.wait_for(lambda: len(cluster.deployments()) == 1, "v1 removed", operator=operator)
    cluster.set_metrics({"3.0.0": BAD})
    cluster.apply(_manifest("3.0.0"))
    cluster.wait_for(
        lambda: cluster.status("fraud").get("phase") == "RolledBack", "v3 back", operator=operator
    )
    cluster.wait_for(lambda: len(cluster.deployments()) == 1, "v3 removed", operator=operator)
    cluster.emu.delete("modeldeployments", "fraud")
    cluster.wait_for(
        lambda: cluster.emu.get_object("modeldeployments", "fraud") is None, "deleted", operator=operator
    )


class Run:
    def __init__(self, objects: list[dict[str, Any]], account: str, requests: dict[str, Any]) -> None:
        self.objects, self.account, self.requests = objects, account, requests
        user = service_account_user(account)
        rows = [*requests["requests"], *requests["watches"]]
        self.used = {(r["verb"], r["group"], r["resource"]) for r in rows if r["user"] == user}
        self.used = {u for u in self.used if not u[2].startswith("/")}
        self.forbidden = [r for r in requests["forbidden"] if r["user"] == user]


@pytest.fixture(scope="module")
def chart_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The scenario, once, under the chart's exact RBAC."""
    tmp = tmp_path_factory.mktemp("chart-rbac")
    objects, account = chart_rbac("exact", sets=REPLICAS_ONLY)
    with EmulatorThread(bookmark_interval=1.0, tls=True) as emu:
        emu.apply(load_crd())
        install(emu, objects)
        kubeconfig = service_account_kubeconfig(emu, account, tmp / "operator.kubeconfig")
        cluster = Cluster(emu, kubeconfig, tmp / "metrics.json")
        operator = OperatorProcess(
            kubeconfig, tmp, env={"MLCANARY_METRICS_SOURCE": f"file:{cluster.metrics_file}"}
        )
        operator.start()
        try:
            _run_scenario(cluster, operator)
        finally:
            operator.stop()
        yield Run(objects, account, emu.requests())


def test_the_operator_is_never_refused_under_the_charts_rbac(chart_run: Run) -> None:
    assert chart_run.forbidden == []


def test_every_verb_the_chart_grants_is_used(chart_run: Run) -> None:
    unused = granted_but_unused(chart_run.objects, chart_run.account, chart_run.used) - set(RARE_PATHS)
    assert unused == set(), f"the chart grants verbs the operator never used: {sorted(unused)}"
    assert set(RARE_PATHS) <= granted(chart_run.objects, chart_run.account)


def test_a_surplus_verb_would_be_caught(chart_run: Run) -> None:
    widened = copy.deepcopy(chart_run.objects)
    role = next(o for o in widened if o["kind"] == "ClusterRole")
    role["rules"].append({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]})
    surplus = granted_but_unused(widened, chart_run.account, chart_run.used) - set(RARE_PATHS)
    assert surplus == {("list", "", "configmaps")}
    assert ("list", "", "configmaps") in granted(widened, chart_run.account)


def test_without_the_status_patch_verb_the_operator_cannot_report(tmp_path: Path) -> None:
    objects, account = chart_rbac("short", sets=REPLICAS_ONLY)
    role = next(o for o in objects if o["kind"] == "ClusterRole")
    status_rule = next(r for r in role["rules"] if r["resources"] == ["modeldeployments/status"])
    status_rule["verbs"] = [v for v in status_rule["verbs"] if v != "patch"]
    with EmulatorThread(bookmark_interval=1.0, tls=True) as emu:
        emu.apply(load_crd())
        install(emu, objects)
        kubeconfig = service_account_kubeconfig(emu, account, tmp_path / "operator.kubeconfig")
        cluster = Cluster(emu, kubeconfig, tmp_path / "metrics.json")
        cluster.set_metrics({"1.0.0": GOOD})
        operator = OperatorProcess(
            kubeconfig, tmp_path, env={"MLCANARY_METRICS_SOURCE": f"file:{cluster.metrics_file}"}
        )
        operator.start()
        try:
            cluster.apply(_manifest("1.0.0"))
            user = service_account_user(account)
            cluster.wait_for(
                lambda: any(
                    r["user"] == user and r["verb"] == "patch" and r["resource"] == "modeldeployments/status"
                    for r in emu.requests()["forbidden"]
                ),
                "a refused status patch",
                operator=operator,
            )
            assert "phase" not in cluster.status("fraud"), "no status can have been written"
            # The operator reports the refusal (its log line may trail the request a little).
            cluster.wait_for(
                lambda: 'cannot patch resource "modeldeployments/status"' in operator.logs(),
                "the refusal in the operator's log",
                operator=operator,
            )
        finally:
            operator.stop()
