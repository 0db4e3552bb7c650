"""The rollout engine: a pure function from (spec, status, observations, now) to (status, actions).

Nothing here performs I/O (import-linter enforces it). The operator's timer observes the cluster,
calls :func:`decide`, writes the returned status and applies the returned actions, all of which are
idempotent "ensure" steps derived from the new status. Because every wait is computed from timestamps
in the status, a restarted operator carries on exactly where the last one stopped.

Phase transitions (every one is in :func:`_transition`)::

    (none) ─► Initializing ─► Healthy ─► Preparing ─► [LoadTesting] ─► [Shadowing ─► Preparing] ─► Progressing ⇄ Paused
                                 ▲           │   ▲         │
                                 │           ▼   └─────────┤ (canary unavailable)
                                 │      RollingBack ◄──────┤ (failed analysis, deadline, abort, new version)
                                 │           │             ▼
                                 │           ▼         Promoting ─► Healthy (canary is the new stable)
                                 └──── RolledBack / Healthy (superseded)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, assert_never

from mlcanary import conditions as cond
from mlcanary.durations import parse_duration
from mlcanary.gates import loadtest
from mlcanary.gates import shadow as shadow_gate
from mlcanary.models import (
    AnalysisCounters,
    InconclusivePolicy,
    LoadTestPhase,
    LoadTestStatus,
    Measurement,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelRef,
    Phase,
    RetiringRevision,
    RevisionState,
    RolloutEnding,
    RolloutOutcome,
    RolloutRecord,
    RouterKind,
    ShadowPhase,
    StepReport,
    Verdict,
    revision_name,
)
from mlcanary.weights import Autoscaled, replica_plan, step_weight

HISTORY_LIMIT = 10
HISTORY_BYTES = 128 * 1024  # status.history budget; etcd refuses objects over ~1.5 MiB
ANNOTATION_PREFIX = "mlcanary.io/"
PROMOTE, ABORT, RETRY = "promote", "abort", "retry"
REQUESTS = (PROMOTE, ABORT, RETRY)

# --------------------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class RevisionObservation:
    """What the cluster shows for one revision's Deployment."""

    name: str
    desired_replicas: int
    ready_replicas: int

    @property
    def available(self) -> bool:
        return self.ready_replicas >= max(1, self.desired_replicas)


@dataclass(frozen=True)
class TrafficObservation:
    """What the router reads back for the traffic target of the previous tick.

    ``in_sync``: the router's objects realise the target (stable, canary, weight) it was last given.
    ``verified``: the data plane confirms it (e.g. HTTPRoute Accepted for the current generation).
    ``served_weight``: the canary's share (percent) as read back: live route weights, or its share of
    ready pods behind the replicas router. A share above the target is never in sync.
    """

    in_sync: bool
    verified: bool
    served_weight: float | None = None
    message: str = ""

    @property
    def confirmed(self) -> bool:
        return self.in_sync and self.verified


@dataclass(frozen=True)
class AnalysisRound:
    """One analysis round: every metric measured once."""

    measurements: list[Measurement]

    @property
    def verdict(self) -> Verdict:
        return round_verdict(self.measurements)


@dataclass(frozen=True)
class Observations:
    """Everything :func:`decide` may know about the world, gathered by the shell."""

    name: str
    generation: int
    revisions: Mapping[str, RevisionObservation] = field(default_factory=dict)
    traffic: TrafficObservation = field(default_factory=lambda: TrafficObservation(False, False))
    analysis: AnalysisRound | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    router_kind: RouterKind = RouterKind.REPLICAS
    load_test_job: loadtest.JobObservation | None = None  # the Job of status.loadTest, once seen


# -------------------------------------------------------------------------------------------- actions

Role = Literal["stable", "canary"]


@dataclass(frozen=True)
class EnsureRevision:
    """Create or update one revision's Deployment and Service, and its HorizontalPodAutoscaler.

    ``replicas`` None: the revision's HPA owns its replica count (the Deployment is written without
    one); a number: the operator sets it and the revision has no HPA. ``hold_scale_down``: the HPA
    may scale up only (stable behind the replicas router while a canary's share depends on it).
    ``reference``: a second model the pods load and score every request with, for comparison (the
    stable's, while the canary's shadow phase is ahead or running)."""

    revision: RevisionState
    role: Role
    replicas: int | None
    hold_scale_down: bool = False
    reference: ModelRef | None = None


@dataclass(frozen=True)
class SetTraffic:
    """Point the router at stable (and canary) with the canary's weight in percent; and mirror
    ``mirror_percent`` of the prediction requests to the canary (the shadow phase)."""

    stable: str
    canary: str | None
    canary_weight: int
    mirror_percent: int = 0


@dataclass(frozen=True)
class RemoveRevision:
    """Delete a revision's Deployment and Service (it carries no traffic any more)."""

    revision: str


@dataclass(frozen=True)
class RemoveRouterObjects:
    """Delete the objects of a router the spec no longer uses (after the new one confirmed)."""

    kind: RouterKind


@dataclass(frozen=True)
class EmitEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class EnsureLoadTestJob:
    """Create the load test Job of ``revision`` (spec.loadTest) unless it exists."""

    revision: RevisionState
    job_name: str
    rps: float | None = None  # the built-in generator's rate (None: a user jobTemplate)


@dataclass(frozen=True)
class RemoveLoadTestJob:
    """Delete a load test Job that lost its purpose (the rollout ended before its verdict)."""

    job_name: str


Action = (
    EnsureRevision
    | SetTraffic
    | RemoveRevision
    | RemoveRouterObjects
    | EnsureLoadTestJob
    | RemoveLoadTestJob
    | EmitEvent
)


# ------------------------------------------------------------------------------------------ analysis


def round_verdict(measurements: list[Measurement]) -> Verdict:
    """Combine metric verdicts: any Failed fails; else any Error errs; else any Inconclusive; else pass.
    Dry-run metrics are recorded but never count."""
    counted = [m.verdict for m in measurements if not m.dry_run]
    for verdict in (Verdict.FAILED, Verdict.ERROR, Verdict.INCONCLUSIVE):
        if verdict in counted:
            return verdict
    return Verdict.SUCCESSFUL


def analysis_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> bool:
    """Whether the shell should run an analysis round before calling :func:`decide`.

    A round is due an ``interval`` after the step (or the shadow phase) began, so its window sees the
    new weight (mirroring), and an ``interval`` after the previous round."""
    interval = parse_duration(spec.analysis.interval)
    shadow_since = shadow_gate.round_due_since(status)
    if shadow_since is not None:
        since = shadow_since
    elif status.phase != Phase.PROGRESSING or not spec.analysis.metrics or status.step_started_at is None:
        return False
    else:
        since = status.step_started_at
    if status.analysis.last_round_at is not None and status.analysis.last_round_at > since:
        since = status.analysis.last_round_at
    return now - since >= interval


# --------------------------------------------------------------------------------------------- decide


@dataclass
class _Tick:
    """Mutable working state of one decide() call."""

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    obs: Observations
    now: datetime
    invalid_spec: str | None = None
    events: list[EmitEvent] = field(default_factory=list)
    requests: dict[str, bool] = field(default_factory=dict)
    retired_router: RouterKind | None = None
    removals: list[Action] = field(default_factory=list)  # one-off clean-ups decided this tick

    @property
    def frozen(self) -> bool:
        """The current spec is invalid and ``spec`` is the last accepted one: nothing moves forward
        (no new canary, step, promotion or resume), but abort, rollback and retreat from an unready
        canary still work."""
        return self.invalid_spec is not None

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(EmitEvent("Warning" if warning else "Normal", reason, message))

    def enter(self, phase: Phase, message: str) -> None:
        if self.status.phase != phase:
            self.status.phase_since = self.now
        self.status.phase = phase
        self.status.message = message

    @property
    def steps(self) -> list[int]:
        return self.spec.rollout.effective_steps()


def decide(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    observations: Observations,
    now: datetime,
    *,
    invalid_spec: str | None = None,
) -> tuple[ModelDeploymentStatus, list[Action]]:
    """One reconciliation step. Pure: same inputs, same outputs.

    ``invalid_spec``: why the object's current spec was refused; ``spec`` is then the last accepted
    one (``status.acceptedSpec``) and the tick is *frozen* (see :attr:`_Tick.frozen`)."""
    tick = _Tick(
        spec=spec, status=status.model_copy(deep=True), obs=observations, now=now, invalid_spec=invalid_spec
    )
    if not tick.frozen:
        tick.status.accepted_spec = spec.model_dump_json(by_alias=True, exclude_none=True)
    _read_requests(tick)
    _transition(tick)
    _sync_summary(tick)
    _set_conditions(tick)
    actions: list[Action] = [*_ensure_actions(tick), *tick.removals, *tick.events]
    return tick.status, actions


def _read_requests(tick: _Tick) -> None:
    """Manual requests are annotations whose value differs from the last value acted on."""
    for request in REQUESTS:
        value = tick.obs.annotations.get(ANNOTATION_PREFIX + request)
        if value is not None and tick.status.handled_requests.get(request) != value:
            tick.requests[request] = True
            tick.status.handled_requests[request] = value


def _desired(tick: _Tick) -> RevisionState:
    template = tick.spec.revision_template()
    return RevisionState(revision=revision_name(tick.obs.name, template), template=template)


def _transition(tick: _Tick) -> None:
    status = tick.status
    phase = status.phase
    if phase is None or status.stable is None:
        if not tick.frozen:
            _start_first_deploy(tick)
        return
    match phase:
        case Phase.INITIALIZING:
            _initializing(tick)
        case Phase.HEALTHY | Phase.ROLLED_BACK:
            _steady(tick)
        case Phase.PREPARING:
            _preparing(tick)
        case Phase.LOAD_TESTING:
            _load_testing(tick)
        case Phase.SHADOWING:
            _shadowing(tick)
        case Phase.PROGRESSING:
            _progressing(tick)
        case Phase.PAUSED:
            _paused(tick)
        case Phase.PROMOTING:
            _promoting(tick)
        case Phase.ROLLING_BACK:
            _rolling_back(tick)
        case _:
            assert_never(phase)


# --- first deploy


def _start_first_deploy(tick: _Tick) -> None:
    desired = _desired(tick)
    tick.status.stable = desired
    tick.status.canary = None
    tick.status.canary_weight = 0
    tick.enter(Phase.INITIALIZING, f"deploying {desired.template.model.version}")
    tick.event("Deploying", f"first version {desired.template.model.version} ({desired.revision})")


def _initializing(tick: _Tick) -> None:
    status = tick.status
    assert status.stable is not None
    desired = _desired(tick)
    if desired.revision != status.stable.revision:
        # Nothing has served yet, so there is nothing to protect: replace the stable revision directly.
        _retire(tick, status.stable.revision)
        status.stable = desired
        tick.enter(Phase.INITIALIZING, f"deploying {desired.template.model.version}")
        tick.event("DeployRestarted", f"version changed before first deploy finished: {desired.revision}")
        return
    observed = tick.obs.revisions.get(status.stable.revision)
    if observed is not None and observed.available and tick.obs.traffic.confirmed:
        tick.enter(Phase.HEALTHY, f"serving {status.stable.template.model.version}")
        tick.event("Ready", f"version {status.stable.template.model.version} is serving")


# --- steady states


def _steady(tick: _Tick) -> None:
    status = tick.status
    assert status.stable is not None
    desired = _desired(tick)
    version = desired.template.model.version
    if tick.requests.get(RETRY) and version in status.rejected_versions:
        status.rejected_versions.remove(version)
        tick.event("Retry", f"retrying rejected version {version}")
    for request in (PROMOTE, ABORT):
        if tick.requests.get(request):
            tick.event("RequestIgnored", f"{request} requested but no rollout is running")
    if desired.revision == status.stable.revision:
        if status.phase == Phase.ROLLED_BACK:
            tick.enter(Phase.HEALTHY, f"serving {version}; spec matches the stable version again")
        else:
            status.stable = desired  # adopt cosmetic template changes that share the revision name
        return
    if version in status.rejected_versions:
        if status.phase != Phase.ROLLED_BACK:
            tick.enter(
                Phase.ROLLED_BACK, f"version {version} was rolled back; set mlcanary.io/retry to try again"
            )
        return
    if tick.spec.rollout.paused:
        status.message = f"version {version} waits: rollout is paused"
        return
    if tick.frozen:
        return
    _start_canary(tick, desired)


def _start_canary(tick: _Tick, desired: RevisionState) -> None:
    status = tick.status
    assert status.stable is not None
    status.canary = desired
    status.canary_weight = 0
    status.current_step = None
    status.step_started_at = None
    status.canary_started_at = tick.now
    status.analysis = AnalysisCounters()
    status.last_measurements = []
    status.steps = []
    status.shadow = None
    status.ending = None
    status.load_test = None  # a retried version is load-tested afresh
    tick.enter(Phase.PREPARING, f"waiting for canary {desired.template.model.version} to become ready")
    tick.event(
        "CanaryStarted",
        f"canary {desired.template.model.version} ({desired.revision}) against stable "
        f"{status.stable.template.model.version}",
    )


# --- rollout in flight


def _interrupted(tick: _Tick) -> bool:
    """Checks shared by every in-flight phase: a newer version or an abort starts unwinding."""
    status = tick.status
    assert status.canary is not None and status.stable is not None
    desired = _desired(tick)
    if desired.revision != status.canary.revision:
        if desired.revision == status.stable.revision:
            reason = "spec returned to the stable version"
        else:
            reason = f"superseded by version {desired.template.model.version}"
        _begin_rollback(tick, RolloutOutcome.SUPERSEDED, reason, "Superseding")
        return True
    if tick.requests.get(ABORT):
        _begin_rollback(
            tick, RolloutOutcome.ROLLED_BACK, "aborted by the mlcanary.io/abort annotation", "Aborted"
        )
        return True
    if tick.requests.get(RETRY):
        tick.event("RequestIgnored", "retry requested but a rollout is already running")
    return False


def _canary_available(tick: _Tick) -> bool:
    """Whether the canary can take its weight.

    Behind the replicas router traffic follows ready pods, so a canary still scaling up to a larger
    step (the engine asked for more pods) serves its share with the pods it has; the router reports
    the step unconfirmed until every pod is ready. Behind a mesh router the weight is a share of all
    requests, so every pod must be ready."""
    assert tick.status.canary is not None
    observed = tick.obs.revisions.get(tick.status.canary.revision)
    if observed is None:
        return False
    if tick.obs.router_kind.follows_ready_pods:
        return observed.ready_replicas >= 1
    return observed.available


def _drop_unready_canary(tick: _Tick, during: str) -> bool:
    """Never weight an unready backend: back to weight 0 (Preparing) until the canary is ready again.
    Return True when the canary was unready."""
    if _canary_available(tick):
        return False
    tick.status.canary_weight = 0
    tick.enter(
        Phase.PREPARING, f"canary became unavailable{during}: traffic back to stable until it is ready"
    )
    tick.event("CanaryUnavailable", f"canary lost readiness{during}; its weight is 0 until it recovers", True)
    _ignore_promote_while_unready(tick)
    return True


def _ignore_promote_while_unready(tick: _Tick) -> None:
    if tick.requests.get(PROMOTE):
        tick.event("RequestIgnored", "promote requested but the canary is not ready", True)


def _preparing(tick: _Tick) -> None:
    status = tick.status
    if _interrupted(tick):
        return
    assert status.canary is not None
    deadline = parse_duration(tick.spec.rollout.progress_deadline)
    if not _canary_available(tick):
        _ignore_promote_while_unready(tick)
        waited_since = status.phase_since or tick.now
        if tick.now - waited_since > deadline:
            _begin_rollback(
                tick,
                RolloutOutcome.ROLLED_BACK,
                f"canary not ready within progressDeadline {tick.spec.rollout.progress_deadline}",
            )
        return
    if _frozen_hold(tick, "canary ready"):
        return
    if tick.requests.get(PROMOTE):
        _begin_promotion(tick, "promoted by the mlcanary.io/promote annotation")
        return
    if tick.spec.rollout.paused:
        status.message = "canary ready; rollout is paused"
        return
    _after_ready(tick)


def _after_ready(tick: _Tick) -> None:
    """The canary is ready: its gates first — the load test (spec.loadTest, once per rollout), then
    the shadow phase (spec.shadow) — then step 1 (or the step it was at, when it only lost readiness
    for a while)."""
    status = tick.status
    assert status.canary is not None
    if tick.spec.load_test is not None and not _load_test_passed(tick):
        _start_load_test(tick)
        return
    if shadow_gate.pending(tick.spec, status):
        _start_shadow(tick)
        return
    _start_step(tick, status.current_step or 1)


# --- shadow phase (rules in mlcanary.gates.shadow)


def _start_shadow(tick: _Tick) -> None:
    status = tick.status
    assert status.canary is not None and tick.spec.shadow is not None
    status.canary_weight = 0
    status.shadow = shadow_gate.start(status, tick.now)
    status.analysis = AnalysisCounters(failures=status.analysis.failures)
    status.steps = [s for s in status.steps if s.kind != "shadow"]
    status.steps.insert(0, StepReport(kind="shadow", step=0, weight=0))
    percent = tick.spec.shadow.mirror_percent
    tick.enter(Phase.SHADOWING, f"shadow: {percent}% of prediction requests mirrored to the canary")
    tick.event(
        "ShadowStarted",
        f"{status.canary.template.model.version}: {percent}% of prediction requests mirrored for "
        f"{tick.spec.shadow.duration}, compared with {status.stable.template.model.version if status.stable else '?'}",
    )


def _shadowing(tick: _Tick) -> None:
    status = tick.status
    if _interrupted(tick) or _drop_unready_canary(tick, " during the shadow phase"):
        return
    if _frozen_hold(tick, "shadow phase"):
        return
    if tick.requests.get(PROMOTE):
        _begin_promotion(tick, "promoted by the mlcanary.io/promote annotation")
        return
    if tick.spec.shadow is None:  # removed mid-phase: the canary drops the reference, then step 1
        tick.enter(Phase.PREPARING, "spec.shadow removed; canary restarting without the reference model")
        return
    if tick.spec.rollout.paused:
        status.message = "shadow phase; rollout is paused"
        return
    if not tick.obs.traffic.confirmed:
        if not _router_deadline_passed(tick):
            status.message = "shadow: waiting for the router to confirm the mirror"
        return
    assert status.canary is not None
    round_ = tick.obs.analysis
    step = shadow_gate.advance(
        tick.spec,
        status,
        round_.measurements if round_ else None,
        round_.verdict if round_ else None,
        tick.now,
    )
    version = status.canary.template.model.version
    match step.outcome:
        case ShadowPhase.FAILED:
            tick.event("ShadowFailed", f"{version}: {step.text}", warning=True)
            _begin_rollback(tick, RolloutOutcome.ROLLED_BACK, step.text)
        case ShadowPhase.PASSED:
            tick.event("ShadowPassed", f"{version}: {step.text}")
            # The canary's pods drop the reference model (one restart at weight 0): ready -> step 1.
            tick.enter(Phase.PREPARING, "shadow phase passed; canary restarting without the reference model")
        case ShadowPhase.RUNNING:
            status.message = step.text


# --- load test gate (spec.loadTest; verdicts in mlcanary.gates.loadtest)


def _load_test_passed(tick: _Tick) -> bool:
    result = tick.status.load_test
    assert tick.status.canary is not None
    return (
        result is not None
        and result.revision == tick.status.canary.revision
        and result.phase == LoadTestPhase.PASSED
    )


def _start_load_test(tick: _Tick) -> None:
    status = tick.status
    assert status.canary is not None and tick.spec.load_test is not None
    spec = tick.spec.load_test
    current = status.load_test
    if current is None or current.revision != status.canary.revision:
        current = LoadTestStatus(
            revision=status.canary.revision,
            phase=LoadTestPhase.RUNNING,
            job_name=loadtest.job_name(status.canary.revision, tick.now),
            started_at=tick.now,
            requested_rps=spec.rps,
        )
        status.load_test = current
        if spec.rps is not None:
            what = f"{spec.rps:g} rps"
        elif spec.rps_from_stable is not None:
            what = f"the stable's rate over {spec.rps_from_stable.window} x {spec.rps_from_stable.headroom:g}"
        else:
            what = "jobTemplate"
        tick.event(
            "LoadTestStarted",
            f"{status.canary.template.model.version}: Job {current.job_name} ({what}, warmup "
            f"{spec.warmup}, duration {spec.duration}) against the canary's own Service",
        )
    status.canary_weight = 0
    tick.enter(
        Phase.LOAD_TESTING, f"load test of {status.canary.template.model.version}: Job {current.job_name}"
    )


def _load_testing(tick: _Tick) -> None:
    """No user traffic reaches the canary here (weight 0); its own Service takes the generated load.
    The Job keeps running through a pause or an invalid spec; its verdict is recorded when it comes,
    and acted on (step 1) only when the rollout may move forward. A failure always rolls back."""
    status = tick.status
    test = status.load_test
    if test is None or tick.spec.load_test is None:
        # spec.loadTest was removed mid-test (or status lost it): nothing to wait for.
        if _interrupted(tick):
            return
        _after_ready(tick)
        return
    if _interrupted(tick):
        if test.phase == LoadTestPhase.RUNNING:
            test.phase = LoadTestPhase.ABORTED
            test.finished_at = tick.now
            test.message = status.ending.reason if status.ending else "rollout ended"
            tick.removals.append(RemoveLoadTestJob(test.job_name))
        return
    if test.phase == LoadTestPhase.RUNNING:
        if test.requested_rps is None and tick.spec.load_test.rps_from_stable is not None:
            _resolve_rate(tick, test)
        _read_load_test(tick, test)
        if test.phase in (LoadTestPhase.RUNNING, LoadTestPhase.ABORTED):
            return
    if test.phase in (LoadTestPhase.FAILED, LoadTestPhase.INCONCLUSIVE):
        _begin_rollback(tick, RolloutOutcome.ROLLED_BACK, f"load test {test.phase.lower()}: {test.message}")
        return
    # Passed: move on as Preparing does once the canary is ready.
    if _frozen_hold(tick, "load test passed"):
        return
    if tick.requests.get(PROMOTE):
        _begin_promotion(tick, "promoted by the mlcanary.io/promote annotation")
        return
    if tick.spec.rollout.paused:
        status.message = "load test passed; rollout is paused"
        return
    _after_ready(tick)  # the next gate (the shadow phase), else step 1


def _resolve_rate(tick: _Tick, test: LoadTestStatus) -> None:
    """rpsFromStable: the rate from the stable's observed one (a round the shell ran for it). Until a
    round reports it the Job waits; the deadline of the whole test still applies."""
    assert tick.spec.load_test is not None and tick.spec.load_test.rps_from_stable is not None
    source = tick.spec.load_test.rps_from_stable
    measured = loadtest.stable_rate(
        tick.obs.analysis.measurements if tick.obs.analysis else None, source.window
    )
    if tick.obs.analysis is not None:
        tick.status.analysis.last_round_at = tick.now  # paces the retries (stable_rate_due)
    if measured is None:
        tick.status.message = f"load test: waiting for the stable's request rate over {source.window}"
        return
    test.requested_rps = source.requested(measured)
    tick.status.message = (
        f"load test: the stable served {measured:.2f} rps over {source.window}; testing "
        f"{test.requested_rps:g} rps (x{source.headroom:g}, within {source.min_rps:g}-{source.max_rps:g})"
    )


def stable_rate_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> bool:
    """Whether the shell should measure the stable's request rate (rpsFromStable, not known yet):
    at once, then every STABLE_RATE_RETRY while the answers carry no rate."""
    test, load_test = status.load_test, spec.load_test
    if (
        status.phase != Phase.LOAD_TESTING
        or test is None
        or test.phase != LoadTestPhase.RUNNING
        or test.requested_rps is not None
        or load_test is None
        or load_test.rps_from_stable is None
    ):
        return False
    last = status.analysis.last_round_at
    return last is None or last < test.started_at or now - last >= loadtest.STABLE_RATE_RETRY


def _read_load_test(tick: _Tick, test: LoadTestStatus) -> None:
    assert tick.spec.load_test is not None and tick.status.canary is not None
    spec = tick.spec.load_test
    version = tick.status.canary.template.model.version
    job = tick.obs.load_test_job
    verdict = loadtest.judge(spec, job) if job is not None and job.name == test.job_name else None
    if verdict is None:
        if tick.requests.get(PROMOTE):
            test.phase = LoadTestPhase.ABORTED
            test.finished_at = tick.now
            test.message = "skipped: promoted by the mlcanary.io/promote annotation"
            tick.removals.append(RemoveLoadTestJob(test.job_name))
            _begin_promotion(tick, "promoted by the mlcanary.io/promote annotation")
            return
        limit = loadtest.deadline_seconds(spec, tick.spec.rollout.progress_deadline)
        if (tick.now - test.started_at).total_seconds() <= limit:
            return
        verdict = loadtest.Verdict(
            LoadTestPhase.INCONCLUSIVE,
            f"Job {test.job_name} reported no result within {limit:g}s (warmup + duration + "
            f"progressDeadline {tick.spec.rollout.progress_deadline})",
        )
    loadtest.record(test, verdict, job.result if job is not None else None, tick.now)
    match verdict.phase:
        case LoadTestPhase.PASSED:
            tick.event("LoadTestPassed", f"{version}: {verdict.message}")
        case LoadTestPhase.FAILED:
            tick.event("LoadTestFailed", f"{version}: {verdict.message}", warning=True)
        case _:
            tick.event("LoadTestInconclusive", f"{version}: {verdict.message}", warning=True)


def _frozen_hold(tick: _Tick, where: str) -> bool:
    """While the spec is invalid, hold where the rollout is (after the backward checks ran)."""
    if not tick.frozen:
        return False
    tick.status.message = f"{where}; holding: the spec is invalid (see SpecValid); abort still works"
    for request in (PROMOTE, RETRY):
        if tick.requests.get(request):
            tick.event("RequestIgnored", f"{request} requested but the spec is invalid", warning=True)
    return True


def _start_step(tick: _Tick, step: int, reason: str = "StepStarted") -> None:
    """Start ``step``: StepStarted for the first step or a step judged afresh (after a pause or an
    unready canary), StepAdvanced when the previous step passed."""
    status = tick.status
    assert status.canary is not None
    weight = step_weight(tick.steps, step)
    if weight == 100:
        _begin_promotion(tick, "every step passed")
        return
    status.current_step = step
    status.canary_weight = weight
    status.step_started_at = tick.now
    status.analysis.step_successes = 0
    status.analysis.step_rounds = 0
    status.steps = [s for s in status.steps if s.step != step]
    status.steps.append(StepReport(step=step, weight=weight))
    tick.enter(Phase.PROGRESSING, f"step {step}/{len(tick.steps)}: canary at {weight}%")
    tick.event(reason, f"step {step}: {status.canary.template.model.version} at {weight}%")


def _progressing(tick: _Tick) -> None:
    status = tick.status
    if _interrupted(tick) or _drop_unready_canary(tick, ""):
        return
    if _frozen_hold(tick, f"step {status.current_step} ({status.canary_weight}%)"):
        return
    if tick.requests.get(PROMOTE):
        _begin_promotion(tick, "promoted by the mlcanary.io/promote annotation")
        return
    if tick.spec.rollout.paused:
        tick.enter(Phase.PAUSED, f"paused at step {status.current_step} ({status.canary_weight}%)")
        tick.event("Paused", f"rollout paused at step {status.current_step}")
        return
    if tick.obs.analysis is not None and _judge_round(tick, tick.obs.analysis):
        return
    _maybe_advance(tick)


def _judge_round(tick: _Tick, round_: AnalysisRound) -> bool:
    """Record one round; return True when it ended the rollout."""
    status = tick.status
    spec = tick.spec.analysis
    counters = status.analysis
    verdict = round_.verdict
    counters.last_round_at = tick.now
    counters.last_verdict = verdict
    counters.step_rounds += 1
    status.last_measurements = list(round_.measurements)
    for report in status.steps:
        if report.step == status.current_step:
            report.verdict = verdict
            report.rounds += 1
            report.measurements = list(round_.measurements)
    if verdict == Verdict.SUCCESSFUL:
        counters.step_successes += 1
        counters.consecutive_inconclusive = 0
        counters.consecutive_errors = 0
        return False
    if verdict == Verdict.FAILED:
        counters.failures += 1
        counters.consecutive_inconclusive = 0
        counters.consecutive_errors = 0
        failed = ", ".join(
            _describe(m) for m in round_.measurements if m.verdict == Verdict.FAILED and not m.dry_run
        )
        tick.event("AnalysisFailed", f"step {status.current_step}: {failed}", warning=True)
        if counters.failures >= spec.failure_limit:
            _begin_rollback(tick, RolloutOutcome.ROLLED_BACK, f"analysis failed: {failed}")
            return True
        return False
    if verdict == Verdict.ERROR:
        counters.consecutive_errors += 1
        if counters.consecutive_errors < spec.consecutive_error_limit:
            tick.event("AnalysisError", "metrics could not be read; holding", warning=True)
            return False
    else:
        counters.consecutive_errors = 0  # the backend answered (with too little data): the row ends
    counters.consecutive_inconclusive += 1
    detail = "metrics backend erroring" if verdict == Verdict.ERROR else "not enough data"
    if (
        spec.on_inconclusive == InconclusivePolicy.ROLLBACK
        and counters.consecutive_inconclusive >= spec.inconclusive_limit
    ):
        _begin_rollback(
            tick,
            RolloutOutcome.ROLLED_BACK,
            f"analysis inconclusive {counters.consecutive_inconclusive} times in a row ({detail})",
        )
        return True
    tick.event("AnalysisInconclusive", f"step {status.current_step}: {detail}; holding", warning=True)
    return False


def _describe(measurement: Measurement) -> str:
    text = f"{measurement.metric}={measurement.value if measurement.value is not None else 'n/a'}"
    if measurement.threshold:
        text += f" (want {measurement.threshold})"
    return text


def _maybe_advance(tick: _Tick) -> None:
    status = tick.status
    assert status.current_step is not None and status.step_started_at is not None
    if not tick.obs.traffic.confirmed:
        if _router_deadline_passed(tick):
            return
        status.message = (
            f"step {status.current_step}: waiting for the router to confirm {status.canary_weight}%"
        )
        return
    if tick.now - status.step_started_at < parse_duration(tick.spec.rollout.step_duration):
        return
    if tick.spec.analysis.metrics and not (
        status.analysis.step_successes > 0 and status.analysis.last_verdict == Verdict.SUCCESSFUL
    ):
        status.message = f"step {status.current_step}: waiting for a successful analysis round"
        return
    _start_step(tick, status.current_step + 1, "StepAdvanced")


def _router_deadline_passed(tick: _Tick) -> bool:
    """A weight the router never confirms (a gateway that rejects the route, a canary pod stuck
    unready behind the replicas router) must not stall a rollout forever: once the router has been
    seen unconfirmed for longer than progressDeadline, roll back. The wait counts from the first
    unconfirmed observation, so a long gap between ticks is not mistaken for a stall."""
    status = tick.status
    if status.router_wait_since is None:
        status.router_wait_since = tick.now
        return False
    deadline = tick.spec.rollout.progress_deadline
    if tick.now - status.router_wait_since <= parse_duration(deadline):
        return False
    detail = f" ({tick.obs.traffic.message})" if tick.obs.traffic.message else ""
    _begin_rollback(
        tick,
        RolloutOutcome.ROLLED_BACK,
        f"router did not confirm {status.canary_weight}% within progressDeadline {deadline}{detail}",
    )
    return True


def _paused(tick: _Tick) -> None:
    if _interrupted(tick) or _drop_unready_canary(tick, " while paused"):
        return
    if _frozen_hold(tick, f"paused at step {tick.status.current_step}"):
        return
    if tick.requests.get(PROMOTE):
        _begin_promotion(tick, "promoted by the mlcanary.io/promote annotation")
        return
    if not tick.spec.rollout.paused:
        assert tick.status.current_step is not None
        tick.event("Resumed", f"rollout resumed at step {tick.status.current_step}")
        # The step's timer and analysis restart: a paused step is judged afresh.
        _start_step(tick, tick.status.current_step)


def _begin_promotion(tick: _Tick, reason: str) -> None:
    status = tick.status
    assert status.canary is not None
    status.canary_weight = 100
    status.current_step = len(tick.steps)
    status.step_started_at = tick.now
    status.ending = RolloutEnding(outcome=RolloutOutcome.PROMOTED, reason=reason)
    tick.enter(Phase.PROMOTING, f"moving all traffic to {status.canary.template.model.version}: {reason}")
    tick.event("Promoting", f"{status.canary.template.model.version}: {reason}")


def _promoting(tick: _Tick) -> None:
    status = tick.status
    if _interrupted(tick) or _drop_unready_canary(tick, " during promotion"):
        return
    assert status.canary is not None and status.stable is not None
    if not tick.obs.traffic.confirmed:
        _router_deadline_passed(tick)
        return
    old, new = status.stable, status.canary
    _retire(tick, old.revision)
    _finish(tick, RolloutOutcome.PROMOTED, status.ending.reason if status.ending else "every step passed")
    status.stable = new
    tick.enter(Phase.HEALTHY, f"serving {new.template.model.version}")
    tick.event("Promoted", f"{new.template.model.version} is stable; {old.template.model.version} retires")


def _begin_rollback(tick: _Tick, outcome: RolloutOutcome, reason: str, event: str = "RollingBack") -> None:
    """Traffic back to stable. ``event``: RollingBack (a failure), Aborted or Superseding."""
    status = tick.status
    assert status.canary is not None
    status.canary_weight = 0
    status.ending = RolloutEnding(outcome=outcome, reason=reason)
    tick.enter(Phase.ROLLING_BACK, f"traffic back to stable: {reason}")
    tick.event(
        event,
        f"{status.canary.template.model.version}: {reason}",
        warning=outcome == RolloutOutcome.ROLLED_BACK,
    )


def _rolling_back(tick: _Tick) -> None:
    status = tick.status
    assert status.canary is not None and status.stable is not None
    if tick.requests.get(PROMOTE):
        tick.event("RequestIgnored", "promote requested while rolling back")
    if not tick.obs.traffic.confirmed:
        return
    ending = status.ending or RolloutEnding(outcome=RolloutOutcome.ROLLED_BACK, reason="rolled back")
    canary = status.canary
    _retire(tick, canary.revision)
    _finish(tick, ending.outcome, ending.reason)
    version = canary.template.model.version
    if ending.outcome == RolloutOutcome.ROLLED_BACK:
        if version not in status.rejected_versions:
            status.rejected_versions.append(version)
        tick.enter(Phase.ROLLED_BACK, f"{version} rolled back: {ending.reason}")
        tick.event("RolledBack", f"{version} rolled back: {ending.reason}", warning=True)
    else:
        tick.enter(Phase.HEALTHY, f"serving {status.stable.template.model.version}; {ending.reason}")
        tick.event("Superseded", f"{version}: {ending.reason}")


def _finish(tick: _Tick, outcome: RolloutOutcome, reason: str) -> None:
    """Close the running rollout: record it in history and clear the in-flight fields."""
    status = tick.status
    assert status.canary is not None and status.stable is not None
    record = RolloutRecord(
        version=status.canary.template.model.version,
        from_version=status.stable.template.model.version,
        outcome=outcome,
        reason=reason,
        started_at=status.canary_started_at,
        finished_at=tick.now,
        steps=list(status.steps),
        load_test=status.load_test,
    )
    status.history = _trim_history([*status.history, record][-HISTORY_LIMIT:])
    status.canary = None
    status.canary_weight = 0
    status.current_step = None
    status.step_started_at = None
    status.canary_started_at = None
    status.ending = None
    status.load_test = None


def _trim_history(records: list[RolloutRecord], budget: int = HISTORY_BYTES) -> list[RolloutRecord]:
    """Keep status well under etcd's object limit: drop the oldest records past ``budget`` bytes of
    JSON; the newest record is kept, without measurement messages if it alone is too large."""
    records = list(records)
    while len(records) > 1 and _json_size(records) > budget:
        records.pop(0)
    if records and _json_size(records) > budget:
        newest = records[-1].model_copy(deep=True)
        for report in newest.steps:
            report.measurements = [m.model_copy(update={"message": None}) for m in report.measurements]
        records = [newest]
    return records


def _json_size(records: list[RolloutRecord]) -> int:
    return sum(len(record.model_dump_json(by_alias=True, exclude_none=True)) for record in records)


def _retire(tick: _Tick, revision: str) -> None:
    if all(r.revision != revision for r in tick.status.retiring):
        tick.status.retiring.append(RetiringRevision(revision=revision, since=tick.now))


# ---------------------------------------------------------------------------------- derived status


def allowed_weight(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, router_kind: RouterKind) -> int:
    """The most traffic (percent) the canary may receive now: its weight, except while a canary is
    prepared behind the replicas router, whose ready pods take the upcoming step's share at once (a
    canary cannot be ready at weight 0 there)."""
    if status.canary is None:
        return 0
    if status.phase == Phase.PREPARING and router_kind.follows_ready_pods:
        return step_weight(spec.rollout.effective_steps(), status.current_step or 1)
    return status.canary_weight


def _report_served_share(tick: _Tick) -> None:
    """Status says what the canary actually serves; more than it may is a warning (the router is
    not in sync, so the rollout holds while the operator restores the split)."""
    status = tick.status
    served = tick.obs.traffic.served_weight if status.canary is not None else None
    allowed = allowed_weight(tick.spec, status, tick.obs.router_kind)
    previously_over = status.served_weight is not None and status.served_weight > allowed
    if served is not None and served > allowed and not previously_over:
        tick.event(
            "TrafficAboveStep",
            f"canary serves {served:g}% of traffic, more than its {allowed}%: holding the rollout "
            f"while the split is restored ({tick.obs.traffic.message})",
            warning=True,
        )
    status.served_weight = served


def _sync_summary(tick: _Tick) -> None:
    status = tick.status
    if not tick.frozen:
        status.observed_generation = tick.obs.generation
    _report_served_share(tick)
    if tick.obs.traffic.confirmed or status.phase not in (
        Phase.SHADOWING,
        Phase.PROGRESSING,
        Phase.PROMOTING,
    ):
        status.router_wait_since = None
    # A router switch completes once the new router confirms; only then do the old objects go.
    if status.router_kind != tick.obs.router_kind and (
        status.router_kind is None or tick.obs.traffic.confirmed
    ):
        if status.router_kind is not None:
            tick.retired_router = status.router_kind
            tick.event(
                "RouterChanged",
                f"traffic now split by {tick.obs.router_kind}; {status.router_kind} objects removed",
            )
        status.router_kind = tick.obs.router_kind
    status.stable_version = status.stable.template.model.version if status.stable else None
    status.canary_version = status.canary.template.model.version if status.canary else None
    # Retiring revisions that are gone from the cluster need no more bookkeeping.
    live = {r.revision for r in (status.stable, status.canary) if r is not None}
    status.retiring = [
        r for r in status.retiring if r.revision in tick.obs.revisions and r.revision not in live
    ]


def _set_conditions(tick: _Tick) -> None:
    status = tick.status
    generation = tick.obs.generation
    phase = status.phase
    message = status.message or ""
    ready: tuple[cond.Status, str]
    progressing: tuple[cond.Status, str]
    match phase:
        case Phase.HEALTHY:
            ready, progressing = ("True", cond.REASON_HEALTHY), ("False", cond.REASON_ROLLOUT_COMPLETE)
        case Phase.ROLLED_BACK:
            ready, progressing = ("False", cond.REASON_ROLLED_BACK), ("False", cond.REASON_ROLLED_BACK)
        case Phase.PAUSED:
            ready, progressing = ("False", cond.REASON_PAUSED), ("Unknown", cond.REASON_PAUSED)
        case Phase.INITIALIZING:
            ready, progressing = ("False", cond.REASON_INITIALIZING), ("True", cond.REASON_INITIALIZING)
        case (
            Phase.PREPARING
            | Phase.LOAD_TESTING
            | Phase.SHADOWING
            | Phase.PROGRESSING
            | Phase.PROMOTING
            | Phase.ROLLING_BACK
        ):
            ready, progressing = ("False", str(phase)), ("True", cond.REASON_CANARY_RUNNING)
        case None:
            ready, progressing = ("Unknown", "Unknown"), ("Unknown", "Unknown")
        case _:
            assert_never(phase)
    if tick.invalid_spec is not None:
        ready = ("False", cond.REASON_INVALID_SPEC)
        spec_valid: tuple[cond.Status, str, str] = ("False", cond.REASON_INVALID_SPEC, tick.invalid_spec)
    else:
        spec_valid = ("True", cond.REASON_VALID, "")
    conditions = status.conditions
    conditions = cond.set_condition(conditions, cond.READY, ready[0], ready[1], message, tick.now, generation)
    conditions = cond.set_condition(
        conditions, cond.PROGRESSING, progressing[0], progressing[1], message, tick.now, generation
    )
    conditions = cond.set_condition(conditions, cond.SPEC_VALID, *spec_valid, tick.now, generation)
    status.conditions = conditions


def settled(status: ModelDeploymentStatus) -> bool:
    """Nothing time-based can happen to this object until something changes (its spec, an annotation,
    a child): the shell may tick it rarely. Steady phases and a paused rollout, with no revision
    waiting to be removed."""
    return (
        status.phase in (Phase.HEALTHY, Phase.ROLLED_BACK, Phase.PAUSED)
        and not status.retiring
        and status.router_wait_since is None
    )


def tick_failed(
    status: ModelDeploymentStatus, error: str, generation: int, now: datetime
) -> ModelDeploymentStatus:
    """Status after a tick that failed: the Reconciled condition says why; nothing else changes."""
    new = status.model_copy(deep=True)
    new.conditions = cond.set_condition(
        new.conditions, cond.RECONCILED, "False", cond.REASON_TICK_FAILED, error, now, generation
    )
    return new


def abort_while_failing(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    value: str,
    router_kind: RouterKind,
    now: datetime,
) -> tuple[ModelDeploymentStatus, list[Action]]:
    """An abort acted on without :func:`decide` (whose tick keeps failing): traffic back to stable and
    the canary's pods withdrawn behind the replicas router. The rollout is then RollingBack, which the
    next tick that succeeds completes as usual."""
    new = status.model_copy(deep=True)
    new.handled_requests[ABORT] = value
    if new.canary is None or new.stable is None or new.phase == Phase.ROLLING_BACK:
        return new, []
    reason = "aborted by the mlcanary.io/abort annotation (while ticks fail)"
    new.canary_weight = 0
    new.ending = RolloutEnding(outcome=RolloutOutcome.ROLLED_BACK, reason=reason)
    new.phase_since = now
    new.phase = Phase.ROLLING_BACK
    new.message = f"traffic back to stable: {reason}"
    replicas = None if spec.serving.autoscaling is not None else spec.serving.replicas
    actions: list[Action] = [
        EnsureRevision(new.stable, "stable", replicas),
        EnsureRevision(new.canary, "canary", 0 if router_kind.follows_ready_pods else replicas),
        SetTraffic(new.stable.revision, new.canary.revision, 0),
        EmitEvent("Warning", "Aborted", f"{new.canary.template.model.version}: {reason}"),
    ]
    return new, actions


def invalid_spec(
    status: ModelDeploymentStatus, error: str, generation: int, now: datetime
) -> ModelDeploymentStatus:
    """Status for a spec that failed validation: name the field, change nothing that is running.

    observedGeneration is not advanced: the operator has not acted on this generation."""
    new = status.model_copy(deep=True)
    new.conditions = cond.set_condition(
        new.conditions, cond.SPEC_VALID, "False", cond.REASON_INVALID_SPEC, error, now, generation
    )
    new.conditions = cond.set_condition(
        new.conditions, cond.READY, "False", cond.REASON_INVALID_SPEC, error, now, generation
    )
    return new


# ---------------------------------------------------------------------------------- derived actions


def _ensure_actions(tick: _Tick) -> list[Action]:
    """Idempotent steps that make the cluster match the new status (emitted every tick)."""
    status = tick.status
    if status.stable is None:
        return []
    actions: list[Action] = []
    scaling = tick.spec.serving.autoscaling
    autoscaled = Autoscaled(scaling.min_replicas, scaling.max_replicas) if scaling is not None else None
    total = tick.spec.serving.replicas
    # With autoscaling, stable's HPA owns its count (None) unless the plan takes it back.
    stable_replicas: int | None = None if autoscaled is not None else total
    canary_replicas: int | None = 0
    hold = False
    if status.canary is not None:
        kind = tick.obs.router_kind
        stable_obs = tick.obs.revisions.get(status.stable.revision)
        canary_obs = tick.obs.revisions.get(status.canary.revision)
        plan = replica_plan(
            kind.follows_ready_pods,
            total,
            allowed_weight(tick.spec, status, kind),
            stable_ready=stable_obs.ready_replicas if stable_obs else 0,
            canary_ready=canary_obs.ready_replicas if canary_obs else 0,
            autoscaled=autoscaled,
            stable_current=stable_obs.desired_replicas if stable_obs else 0,
            canary_current=canary_obs.desired_replicas if canary_obs else 0,
        )
        stable_replicas, canary_replicas = plan.stable, plan.canary
        hold = plan.hold_stable_scale_down
        if status.phase in (Phase.PREPARING, Phase.LOAD_TESTING):
            # Stable keeps every pod until a step moves traffic (even when the canary is being
            # prepared for the promotion step after it lost readiness there).
            stable_replicas = None if autoscaled is not None else total
            hold = autoscaled is not None and kind.follows_ready_pods
    actions.append(EnsureRevision(status.stable, "stable", stable_replicas, hold_scale_down=hold))
    if status.canary is not None:
        reference = shadow_gate.reference_model(tick.spec, status)
        actions.append(EnsureRevision(status.canary, "canary", canary_replicas, reference=reference))
    canary_name = status.canary.revision if status.canary else None
    actions.append(traffic_target(tick.spec, status))
    test = status.load_test
    user_job = tick.spec.load_test is not None and tick.spec.load_test.job_template is not None
    if (
        status.phase == Phase.LOAD_TESTING
        and status.canary is not None
        and test is not None
        and test.phase == LoadTestPhase.RUNNING
        and test.revision == status.canary.revision
        and (user_job or test.requested_rps is not None)
    ):
        actions.append(EnsureLoadTestJob(status.canary, test.job_name, test.requested_rps))
    if tick.retired_router is not None:
        actions.append(RemoveRouterObjects(tick.retired_router))
    keep = {status.stable.revision} | ({canary_name} if canary_name else set())
    for retiring in status.retiring:
        keep.add(retiring.revision)
        if tick.now - retiring.since >= parse_duration(tick.spec.rollout.scale_down_delay):
            actions.append(RemoveRevision(retiring.revision))
    for name in sorted(tick.obs.revisions):
        if name not in keep:
            actions.append(RemoveRevision(name))  # orphan, e.g. left by a crash between two writes
    return actions


def traffic_target(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> SetTraffic:
    """What the router must realise for ``status``: the canary's weight, and its mirror share."""
    assert status.stable is not None
    canary = status.canary.revision if status.canary else None
    return SetTraffic(
        status.stable.revision, canary, status.canary_weight, shadow_gate.mirror_percent(spec, status)
    )


def next_wakeup(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> timedelta | None:
    """How long until something time-based can happen (for logging and tests)."""
    shadow_since = shadow_gate.round_due_since(status)
    if shadow_since is not None:
        return max(timedelta(0), shadow_since + shadow_gate.duration(spec) - now)
    if status.phase == Phase.PROGRESSING and status.step_started_at is not None:
        return max(timedelta(0), status.step_started_at + parse_duration(spec.rollout.step_duration) - now)
    return None
