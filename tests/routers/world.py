"""An in-process cluster for rollout scenarios: the real reconcile shell, engine and routers against
:class:`MemoryKube`, with a fake kubelet (Deployment readiness) and the real local route-status
controller standing in for a gateway. No threads, no HTTP, no clock: each :meth:`World.tick` is one
operator tick followed by one round of the fake controllers, and the clock moves one second.

Every tick records what the cluster looks like right after the operator acted, so tests can check
invariants over the whole rollout and validate every object the operator produced.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlcanary.analysis.provider import AnalysisContext
from mlcanary.kube import HTTPROUTES, MODEL_DEPLOYMENTS, VIRTUALSERVICES
from mlcanary.models import Measurement, Metric, ModelDeploymentSpec, Verdict
from mlcanary.reconcile import OperatorContext, reconcile
from mlcanary.settings import Settings
from mlcanary_local.route_status import RouteStatusController

from .kit import NAME, NAMESPACE, UID, MemoryKube, httproute_defaults

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROUTERS: dict[str, dict[str, Any]] = {
    "replicas": {"replicas": {"settleTime": "0s"}},  # the world's clock is not the router's
    "gatewayAPI": {
        "gatewayAPI": {
            "parentRefs": [{"name": "public", "namespace": "infra", "sectionName": "https"}],
            "hostnames": ["fraud.example.com"],
            "timeouts": {"request": "10s"},
            "extraRules": [
                {
                    "name": "testers",
                    "matches": [{"headers": [{"name": "X-Mlcanary-Canary", "value": "always"}]}],
                }
            ],
        }
    },
    "istio": {
        "istio": {
            "hosts": ["fraud"],
            "settleTime": "0s",
            "timeout": "10s",
            "extraRules": [
                {
                    "name": "testers",
                    "matches": [{"headers": [{"name": "X-Mlcanary-Canary", "value": "always"}]}],
                }
            ],
        }
    },
}


class Provider:
    """Analysis results by version: ``bad`` versions fail every metric."""

    def __init__(self) -> None:
        self.bad: set[str] = set()

    async def measure(self, metric: Metric, context: AnalysisContext, now: datetime) -> Measurement:
        failing = context.version in self.bad
        return Measurement(
            metric=metric.name,
            verdict=Verdict.FAILED if failing else Verdict.SUCCESSFUL,
            value=0.5 if failing else 0.001,
            sample_size=1000,
            time=now,
        )


@dataclass
class Snapshot:
    tick: int
    phase: str | None
    status: dict[str, Any]
    objects: dict[str, list[dict[str, Any]]]

    def route(self, kind: str) -> dict[str, Any] | None:
        plural = {"gatewayAPI": "httproutes", "istio": "virtualservices"}.get(kind)
        found = self.objects.get(plural or "", [])
        return found[0] if found else None

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.objects["deployments"]}


@dataclass
class World:
    router: str
    traffic: dict[str, Any] | None = None
    gateway_controller: bool = True
    istio_status: bool = False
    now: datetime = T0
    broken: set[str] = field(default_factory=set)  # versions whose pods never become ready
    kube: MemoryKube = field(default_factory=lambda: MemoryKube(defaults={"httproutes": httproute_defaults}))
    provider: Provider = field(default_factory=Provider)
    history: list[Snapshot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ctx = OperatorContext(
            kube=self.kube,
            settings=Settings(metrics_source="file:/dev/null", tick_seconds=1.0),
            provider_factory=lambda spec, namespace: self.provider,
            clock=lambda: self.now,
        )
        self.gateway = RouteStatusController(self.kube.api, virtualservices=self.istio_status)

    # --- the user

    def spec(self, version: str) -> dict[str, Any]:
        spec = {
            "model": {"name": "fraud", "version": version, "uri": f"s3://models/fraud/{version}/"},
            "serving": {
                "replicas": 4,
                "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
            },
            "rollout": {
                "steps": [20, 50],
                "stepDuration": "2s",
                "progressDeadline": "20s",
                "scaleDownDelay": "3s",
            },
            "analysis": {
                "interval": "1s",
                "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
            },
            "traffic": self.traffic or ROUTERS[self.router],
        }
        ModelDeploymentSpec.model_validate(spec)
        return spec

    def deploy(self, version: str) -> None:
        key = ("modeldeployments", NAMESPACE, NAME)
        if key not in self.kube.objects:
            self.kube.put(
                "modeldeployments",
                {
                    "apiVersion": "mlcanary.io/v1alpha1",
                    "kind": "ModelDeployment",
                    "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID},
                    "spec": self.spec(version),
                },
            )
        else:
            self.kube.edit("modeldeployments", NAME, lambda md: md.update(spec=self.spec(version)))

    def set_traffic(self, traffic: dict[str, Any]) -> None:
        self.traffic = traffic
        self.kube.edit("modeldeployments", NAME, lambda md: md["spec"].update(traffic=copy.deepcopy(traffic)))

    # --- time

    async def tick(self) -> Snapshot:
        md = self.kube.obj("modeldeployments", NAME)
        assert md is not None
        await reconcile(md, self.ctx)
        for _ in range(3):  # analysis rounds run beside the ticks: let a due one finish
            await asyncio.sleep(0)
        snapshot = self.snapshot()
        self.history.append(snapshot)
        self.kubelet()
        if self.gateway_controller:
            await self.gateway.sync_once()
        self.now += timedelta(seconds=1)
        return snapshot

    async def run_until(self, predicate: Any, limit: int = 120) -> Snapshot:
        for _ in range(limit):
            snapshot = await self.tick()
            if predicate(snapshot):
                return snapshot
        last = self.history[-1]
        raise AssertionError(
            f"not reached in {limit} ticks; last phase {last.phase}: {last.status.get('message')}"
        )

    def kubelet(self) -> None:
        """Deployment status as a Deployment controller with instant pods would write it."""
        for (plural, _, _), obj in self.kube.objects.items():
            if plural != "deployments":
                continue
            replicas = int(obj["spec"].get("replicas", 1))
            version = obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
            ready = 0 if version in self.broken else replicas
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }

    def snapshot(self) -> Snapshot:
        md = self.kube.obj("modeldeployments", NAME) or {}
        status = md.get("status") or {}
        objects: dict[str, list[dict[str, Any]]] = {}
        for plural in ("deployments", "services", HTTPROUTES.plural, VIRTUALSERVICES.plural):
            objects[plural] = [
                copy.deepcopy(o) for (p, _, _), o in sorted(self.kube.objects.items()) if p == plural
            ]
        return Snapshot(len(self.history) + 1, status.get("phase"), status, objects)

    # --- reading

    @property
    def status(self) -> dict[str, Any]:
        return (self.kube.obj(MODEL_DEPLOYMENTS.plural, NAME) or {}).get("status") or {}


def produced_objects(world: World) -> list[dict[str, Any]]:
    """Every distinct object the operator produced over the world's history (status removed)."""
    seen: dict[str, dict[str, Any]] = {}
    for snapshot in world.history:
        for objects in snapshot.objects.values():
            for obj in objects:
                clean = {k: v for k, v in obj.items() if k != "status"}
                seen.setdefault(json.dumps(clean, sort_keys=True), clean)
    return list(seen.values())
