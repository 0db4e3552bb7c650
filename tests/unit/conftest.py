"""Builders and a small simulator for the pure rollout engine.

The simulator is a fake world (revisions with desired/ready replica counts, the router's last target
and whether it is confirmed) that applies the engine's actions the way the operator's shell does:
observe the world, call :func:`mlcanary.engine.decide`, keep the status, apply the actions. By default
every tick feeds the status through its wire form first, which is what a restarted operator sees.

Test modules import from here (``from conftest import ...``): tests/unit has no ``__init__.py``, so
pytest puts this directory on ``sys.path``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from mlcanary.durations import parse_duration
from mlcanary.engine import (
    Action,
    AnalysisRound,
    EmitEvent,
    EnsureRevision,
    Observations,
    RemoveRevision,
    RevisionObservation,
    SetTraffic,
    TrafficObservation,
    analysis_due,
    decide,
)
from mlcanary.models import (
    Measurement,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    RevisionTemplate,
    Verdict,
    revision_name,
)
from mlcanary.resources import Owner
from mlcanary.routers.base import RouteContext
from mlcanary.routers.replicas import ReplicaRouter

A = TypeVar("A")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAME = "fraud-detector"
MESH_ROUTERS = ("gatewayAPI", "istio")
ROUTER_CONFIG: dict[str, dict[str, Any]] = {
    "replicas": {"replicas": {}},
    "gatewayAPI": {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
    "istio": {"istio": {"hosts": ["fraud.example.com"]}},
}


# ------------------------------------------------------------------------------------------ builders


def spec_wire(
    version: str = "1.0.0",
    *,
    steps: list[int] | None = None,
    step_duration: str = "5m",
    progress_deadline: str = "10m",
    scale_down_delay: str = "30s",
    paused: bool = False,
    replicas: int = 20,  # the replicas router can serve 5% with whole pods (1 of 21)
    router: str = "replicas",
    metrics: list[dict[str, Any]] | None = None,
    **analysis: Any,
) -> dict[str, Any]:
    """A spec as a user writes it (camelCase); ``analysis`` takes wire keys (failureLimit=2, ...)."""
    return {
        "model": {"name": "fraud-detector", "version": version, "uri": f"s3://models/fraud/{version}/"},
        "serving": {"image": "mlcanary/serving:0.1.0", "replicas": replicas},
        "rollout": {
            "steps": steps if steps is not None else [5, 20, 50, 100],
            "stepDuration": step_duration,
            "progressDeadline": progress_deadline,
            "scaleDownDelay": scale_down_delay,
            "paused": paused,
        },
        "analysis": {"interval": "1m", "metrics": metrics or [], **analysis},
        "traffic": copy.deepcopy(ROUTER_CONFIG[router]),
    }


def make_spec(version: str = "1.0.0", **kwargs: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(spec_wire(version, **kwargs))


ERROR_RATE = {"name": "error-rate", "builtin": "errorRate", "max": 0.01}


def with_version(spec: ModelDeploymentSpec, version: str) -> ModelDeploymentSpec:
    model = spec.model.model_copy(update={"version": version, "uri": f"s3://models/fraud/{version}/"})
    return spec.model_copy(update={"model": model})


def with_rollout(spec: ModelDeploymentSpec, **changes: Any) -> ModelDeploymentSpec:
    return spec.model_copy(update={"rollout": spec.rollout.model_copy(update=changes)})


def rev(spec: ModelDeploymentSpec, name: str = NAME) -> str:
    """The revision name the engine gives ``spec``'s model."""
    return revision_name(name, spec.revision_template())


def measurement(
    verdict: Verdict | str, metric: str = "error-rate", *, dry_run: bool | None = None, at: datetime = T0
) -> Measurement:
    return Measurement(metric=metric, verdict=Verdict(verdict), dry_run=dry_run, time=at)


def analysis_round(*verdicts: Verdict | str) -> AnalysisRound:
    return AnalysisRound([measurement(v, f"m{i}") for i, v in enumerate(verdicts)])


def roundtrip(status: ModelDeploymentStatus) -> ModelDeploymentStatus:
    """What a restarted operator reads back from the API server."""
    return ModelDeploymentStatus.model_validate(status.to_wire())


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def of_type(actions: list[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def traffic(actions: list[Action]) -> SetTraffic:
    found = of_type(actions, SetTraffic)
    assert len(found) == 1, f"expected one SetTraffic, got {found}"
    return found[0]


def ensured(actions: list[Action]) -> dict[str, EnsureRevision]:
    """EnsureRevision actions by role."""
    return {a.role: a for a in of_type(actions, EnsureRevision)}


def removed(actions: list[Action]) -> set[str]:
    return {a.revision for a in of_type(actions, RemoveRevision)}


def reasons(actions: list[Action]) -> list[str]:
    return [a.reason for a in of_type(actions, EmitEvent)]


# ----------------------------------------------------------------------------------------- simulator


@dataclass
class FakeRevision:
    template: RevisionTemplate
    desired: int
    ready: int = 0


@dataclass
class Sim:
    """A fake cluster driven by the engine.

    ``settle=True`` (the default for scripted tests) makes the world realise every tick's actions
    before the next tick: healthy pods become ready and a mesh router confirms its target. With the
    replicas router, confirmation is read back by the real :class:`ReplicaRouter` from ready counts.
    """

    spec: ModelDeploymentSpec
    now: datetime = T0
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    settle: bool = True
    restart_every_tick: bool = True
    name: str = NAME
    generation: int = 1
    annotations: dict[str, str] = field(default_factory=dict)
    revisions: dict[str, FakeRevision] = field(default_factory=dict)
    broken_versions: set[str] = field(default_factory=set)  # their pods never become ready
    target: SetTraffic | None = None
    mesh_confirmed: bool = False
    actions: list[Action] = field(default_factory=list)
    last_observations: Observations | None = None
    ticks: int = 0

    @property
    def router_kind(self) -> str:
        return self.spec.traffic.router_kind

    # --- the world

    def revision_observations(self) -> dict[str, RevisionObservation]:
        return {n: RevisionObservation(n, r.desired, r.ready) for n, r in self.revisions.items()}

    def traffic_observation(self) -> TrafficObservation:
        # The shell observes the target it derives from the stored status (the previous tick's).
        if self.target is None:
            return TrafficObservation(False, False)
        if self.router_kind == "replicas":
            ctx = RouteContext(Owner(self.name, "ml", "uid-1"), self.spec, self.revision_observations())
            return ReplicaRouter.observe_revisions(ctx, self.target)
        return TrafficObservation(self.mesh_confirmed, self.mesh_confirmed)

    def observations(self, analysis: AnalysisRound | None = None) -> Observations:
        return Observations(
            name=self.name,
            generation=self.generation,
            revisions=self.revision_observations(),
            traffic=self.traffic_observation(),
            analysis=analysis,
            annotations=dict(self.annotations),
            router_kind=self.router_kind,
        )

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case EnsureRevision(revision=state, replicas=None):
                    # The revision's HPA owns the count: created at its floor, then the test's "HPA"
                    # (a direct write to ``desired``) decides.
                    if state.revision not in self.revisions:
                        self.revisions[state.revision] = FakeRevision(
                            state.template, self.spec.serving.base_replicas
                        )
                case EnsureRevision(revision=state, replicas=int() as replicas):
                    existing = self.revisions.get(state.revision)
                    if existing is None:
                        self.revisions[state.revision] = FakeRevision(state.template, replicas)
                    else:
                        assert existing.template == state.template, f"{state.revision} re-templated"
                        existing.desired = replicas
                        existing.ready = min(existing.ready, replicas)  # scale-down is immediate
                case SetTraffic():
                    if action != self.target:
                        self.target = action
                        self.mesh_confirmed = False
                case RemoveRevision(revision=name):
                    self.revisions.pop(name, None)
                case EmitEvent():
                    pass

    def make_ready(self, *names: str) -> None:
        """Pods of the named revisions (default all healthy ones) become ready."""
        for name, revision in self.revisions.items():
            if names and name not in names:
                continue
            if revision.template.model.version in self.broken_versions:
                revision.ready = 0
            else:
                revision.ready = revision.desired

    def confirm(self) -> None:
        self.mesh_confirmed = True

    def break_version(self, version: str) -> None:
        self.broken_versions.add(version)
        for revision in self.revisions.values():
            if revision.template.model.version == version:
                revision.ready = 0

    def heal_version(self, version: str) -> None:
        self.broken_versions.discard(version)

    # --- ticks

    def tick(self, advance: timedelta | float = 0, *, analysis: AnalysisRound | None = None) -> list[Action]:
        """Advance ``advance`` (seconds or a timedelta), observe, decide, apply."""
        self.now += advance if isinstance(advance, timedelta) else timedelta(seconds=advance)
        status_in = roundtrip(self.status) if self.restart_every_tick else self.status
        self.last_observations = self.observations(analysis)
        new_status, actions = decide(self.spec, status_in, self.last_observations, self.now)
        self.status = new_status
        self.actions = actions
        self.ticks += 1
        self.apply(actions)
        if self.settle:
            self.make_ready()
            self.confirm()
        return actions

    def tick_analysed(self, advance: timedelta | float, *verdicts: Verdict | str) -> list[Action]:
        """A tick with an analysis round, as the shell runs one only when it is due."""
        self.now += advance if isinstance(advance, timedelta) else timedelta(seconds=advance)
        assert analysis_due(self.spec, self.status, self.now), "analysis round not due"
        return self.tick(analysis=analysis_round(*verdicts))

    def run_until(self, phase: Phase, *, limit: int = 10, advance: float = 1) -> list[Action]:
        for _ in range(limit):
            if self.status.phase == phase:
                return self.actions
            self.tick(advance)
        assert self.status.phase == phase, f"still {self.status.phase} ({self.status.message})"
        return self.actions

    # --- scripted states

    @property
    def phase(self) -> Phase | None:
        return self.status.phase

    @property
    def weight(self) -> int:
        return self.status.canary_weight

    def step_duration(self) -> timedelta:
        return parse_duration(self.spec.rollout.step_duration)

    def deploy(self) -> Sim:
        """First deploy until Healthy."""
        self.tick()
        self.run_until(Phase.HEALTHY)
        return self

    def new_version(self, version: str) -> Sim:
        self.spec = with_version(self.spec, version)
        self.generation += 1
        return self

    def set_paused(self, paused: bool) -> Sim:
        self.spec = with_rollout(self.spec, paused=paused)
        self.generation += 1
        return self

    def annotate(self, request: str, value: str) -> Sim:
        self.annotations[f"mlcanary.io/{request}"] = value
        return self

    def to_progressing(self, version: str = "2.0.0") -> Sim:
        """Healthy at 1.0.0 (if not yet deployed), then a canary of ``version`` at step 1."""
        if self.status.phase is None:
            self.deploy()
        self.new_version(version)
        self.tick()
        assert self.phase == Phase.PREPARING
        self.run_until(Phase.PROGRESSING)
        assert self.status.current_step == 1
        return self

    def pass_step(self) -> list[Action]:
        """Let the current step's duration pass (with a passing round when metrics are set)."""
        if self.spec.analysis.metrics:
            self.tick_analysed(parse_duration(self.spec.analysis.interval), Verdict.SUCCESSFUL)
        elapsed = self.now - (self.status.step_started_at or self.now)
        return self.tick(max(timedelta(0), self.step_duration() - elapsed))
