"""Property tests: random sequences of world events driven through the engine and the simulator.

Every event (time passing, pods becoming ready or breaking, router confirmations, analysis verdicts,
new versions, annotations, pause toggles, orphans) is followed by one tick, and the invariants below
are checked after every tick. Each tick also restarts the operator (the status goes through its wire
form), and the same tick run on the status as it was in memory must give the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from conftest import (
    ERROR_RATE,
    NAME,
    FakeRevision,
    Sim,
    analysis_round,
    ensured,
    make_spec,
    measurement,
    removed,
    traffic,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcanary import conditions as cond
from mlcanary.durations import parse_duration
from mlcanary.engine import (
    HISTORY_LIMIT,
    AnalysisRound,
    Observations,
    SetTraffic,
    allowed_weight,
    analysis_due,
    decide,
)
from mlcanary.models import ModelDeploymentSpec, ModelDeploymentStatus, Phase, RolloutOutcome, Verdict
from mlcanary.weights import canary_pods, realisable, served_share, smallest_step

VERSIONS = ["1.0.0", "2.0.0", "3.0.0", "4.0.0"]
IN_FLIGHT = {
    Phase.PREPARING,
    Phase.LOAD_TESTING,
    Phase.SHADOWING,
    Phase.PROGRESSING,
    Phase.PAUSED,
    Phase.PROMOTING,
    Phase.ROLLING_BACK,
}
ZERO_WEIGHT = {
    Phase.INITIALIZING,
    Phase.HEALTHY,
    Phase.PREPARING,
    Phase.LOAD_TESTING,
    Phase.SHADOWING,
    Phase.ROLLING_BACK,
    Phase.ROLLED_BACK,
}
SHADOW = {"duration": "2m", "mirrorPercent": 40, "minSamples": 10, "agreement": {"min": 0.9}}

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------------------- strategies

steps_st = st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(sorted)


def servable(config: dict[str, Any]) -> dict[str, Any]:
    """Steps the router can serve: the replicas router gives whole pods only (the models refuse others),
    and cannot mirror (no shadow phase)."""
    if config["router"] != "replicas":
        return config
    steps = [w for w in config["steps"] if realisable(config["replicas"], w)]
    return {**config, "steps": steps or [smallest_step(config["replicas"])], "shadow": False}


def build(config: dict[str, Any], version: str = "1.0.0") -> ModelDeploymentSpec:
    """The spec of a drawn config; ``shadow`` adds spec.shadow (mesh routers only)."""
    config = dict(config)
    shadow = config.pop("shadow", False)
    spec = make_spec(version, **config)
    if not shadow:
        return spec
    wire = spec.to_wire()
    wire["shadow"] = dict(SHADOW)
    return ModelDeploymentSpec.model_validate(wire)


spec_st = st.fixed_dictionaries(
    {
        "router": st.sampled_from(["replicas", "gatewayAPI", "istio"]),
        "replicas": st.integers(1, 5),
        "steps": steps_st,
        "step_duration": st.sampled_from(["30s", "2m", "5m"]),
        "progress_deadline": st.sampled_from(["1m", "10m"]),
        "scale_down_delay": st.sampled_from(["0s", "30s", "5m"]),
        "metrics": st.sampled_from([[], [ERROR_RATE]]),
        "failureLimit": st.integers(1, 3),
        "inconclusiveLimit": st.integers(1, 3),
        "consecutiveErrorLimit": st.integers(1, 4),
        "onInconclusive": st.sampled_from(["Hold", "Rollback"]),
        "shadow": st.booleans(),
    }
).map(servable)

event_st = st.one_of(
    st.tuples(st.just("wait"), st.sampled_from([0, 1, 29, 30, 31, 59, 60, 61, 120, 299, 300, 301, 900])),
    st.tuples(st.just("ready"), st.sampled_from(["all", "stable", "canary"])),
    st.tuples(st.just("partial"), st.integers(0, 4)),
    st.tuples(st.just("settle")),
    st.tuples(st.just("confirm")),
    st.tuples(st.just("break")),
    st.tuples(st.just("heal")),
    st.tuples(st.just("verdict"), st.sampled_from(list(Verdict)), st.booleans()),
    st.tuples(st.just("version"), st.sampled_from(VERSIONS)),
    st.tuples(st.just("request"), st.sampled_from(["promote", "abort", "retry"])),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("orphan")),
    st.tuples(st.just("replicas"), st.integers(1, 5)),
    st.tuples(st.just("stable_pod_lost")),
)


# ---------------------------------------------------------------------------------------- invariants


def carried(target: SetTraffic | None) -> set[str]:
    """Revisions a traffic target sends requests to."""
    if target is None:
        return set()
    result = {target.stable} if target.canary_weight < 100 else set()
    if target.canary is not None and target.canary_weight > 0:
        result.add(target.canary)
    return result


@dataclass
class Checker:
    """Invariants over one run; keeps what it needs to know about the past."""

    sim: Sim
    served: set[str] = field(default_factory=set)  # revisions that were ever stable (live) or canary
    quiet_since: dict[str, datetime] = field(default_factory=dict)  # confirmed to carry no traffic
    delay: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        self.delay = parse_duration(self.sim.spec.rollout.scale_down_delay)

    def tick(self, analysis: AnalysisRound | None = None, advance: float = 0) -> None:
        sim = self.sim
        previous = sim.status
        old_target = sim.target
        actions = sim.tick(advance, analysis=analysis)
        obs = sim.last_observations
        assert obs is not None
        # The same tick on the in-memory status (no restart) gives the same result.
        assert decide(sim.spec, previous, obs, sim.now) == (sim.status, actions)
        self.check(previous, sim.status, obs, actions, old_target)

    def check(
        self,
        old: ModelDeploymentStatus,
        new: ModelDeploymentStatus,
        obs: Observations,
        actions: list[Any],
        old_target: SetTraffic | None,
    ) -> None:
        sim = self.sim
        now = sim.now
        steps = sim.spec.rollout.effective_steps()
        total = sim.spec.serving.replicas
        mesh = sim.router_kind != "replicas"
        promoted_by_hand = new.handled_requests.get("promote") != old.handled_requests.get("promote")
        retried = new.handled_requests.get("retry") != old.handled_requests.get("retry")
        assert new.stable is not None and new.phase is not None

        # Traffic: weights within 0-100, the split sums to 100, and SetTraffic says what status says.
        assert 0 <= new.canary_weight <= 100
        target = traffic(actions)
        canary = new.canary.revision if new.canary else None
        mirror = SHADOW["mirrorPercent"] if new.phase == Phase.SHADOWING else 0
        assert target == SetTraffic(new.stable.revision, canary, new.canary_weight, mirror)
        # The shadow phase: a version with spec.shadow gets user weight only once it passed its
        # shadow phase (or was promoted by hand); the canary loads the reference only until then.
        if sim.spec.shadow is not None and new.canary is not None and new.canary_weight > 0:
            shadow = new.shadow
            passed = (
                shadow is not None and shadow.revision == new.canary.revision and shadow.phase == "Passed"
            )
            assert (
                passed or new.phase == Phase.PROMOTING or promoted_by_hand or old.phase == Phase.PROMOTING
            ), (
                new.phase,
                shadow,
            )
        assert (100 - target.canary_weight) + target.canary_weight == 100
        if new.canary is None:
            assert new.canary_weight == 0
        if new.phase in ZERO_WEIGHT:
            assert new.canary_weight == 0, new.phase
        if new.phase in (Phase.PROGRESSING, Phase.PAUSED):
            assert new.current_step is not None
            assert new.canary_weight == steps[new.current_step - 1] < 100
        if new.phase == Phase.PROMOTING:
            assert new.canary_weight == 100
        if new.canary_weight > 0:
            # The engine only weights a canary it saw serving at this tick.
            assert new.canary is not None
            seen = obs.revisions.get(new.canary.revision)
            assert seen is not None
            assert seen.available if mesh else seen.ready_replicas >= 1

        # Phase and in-flight fields agree.
        assert (new.canary is not None) == (new.phase in IN_FLIGHT)
        if new.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
            assert new.ending is not None
        if new.canary is None:
            assert new.ending is None and new.current_step is None and new.step_started_at is None
        assert new.stable_version == new.stable.template.model.version
        assert new.canary_version == (new.canary.template.model.version if new.canary else None)
        live = {new.stable.revision, canary}
        assert not live & {r.revision for r in new.retiring}

        # Revisions: stable always ensured, with pods while it carries traffic; canary iff in flight.
        roles = ensured(actions)
        assert roles["stable"].revision == new.stable
        if new.canary_weight < 100:
            assert roles["stable"].replicas >= 1
        assert ("canary" in roles) == (new.canary is not None)
        if "canary" in roles:
            assert roles["canary"].revision == new.canary
        if mesh:
            assert all(a.replicas == total for a in roles.values())
        else:
            assert all(0 <= a.replicas <= total for a in roles.values())
            # The canary's share of ready pods never exceeds what it may serve now, however many
            # pods stable has ready (a crash, a hand edit), once the planned counts are in effect.
            allowed = allowed_weight(sim.spec, new, sim.router_kind)
            if "canary" in roles and 0 < allowed < 100:
                stable_seen = obs.revisions.get(new.stable.revision)
                stable_ready = stable_seen.ready_replicas if stable_seen else 0
                assert roles["canary"].replicas <= canary_pods(stable_ready, allowed)
                share = served_share(stable_ready, min(roles["canary"].replicas, total))
                assert share is None or share <= allowed
            if new.canary is None or allowed == 0:
                assert (
                    roles.get("canary") is None
                    or roles["canary"].replicas == 0
                    or new.phase == Phase.PREPARING
                )

        # Promotion flips the stable pointer to the canary's revision; nothing else moves it.
        moved = old.stable is not None and new.stable.revision != old.stable.revision
        if moved and old.phase != Phase.INITIALIZING:
            assert old.canary is not None and new.stable.revision == old.canary.revision
            assert new.stable == old.canary
            assert new.history[-1].outcome == RolloutOutcome.PROMOTED
        if new.phase != Phase.INITIALIZING:
            self.served.add(new.stable.revision)
        if new.canary is not None:
            self.served.add(new.canary.revision)

        # Removal: never a live revision or one this tick's traffic uses; a revision that served
        # only once the router confirmed it carries no traffic, and scaleDownDelay later.
        if obs.traffic.confirmed and old_target is not None:
            for name in self.served - carried(old_target):
                self.quiet_since.setdefault(name, now)
        for name in removed(actions):
            assert name not in live and name not in carried(target)
            if name in self.served:
                assert name in self.quiet_since, f"{name} removed without a confirmed traffic move"
                assert now - self.quiet_since[name] >= self.delay
                if not mesh:
                    assert obs.revisions[name].ready_replicas == 0
        for name in carried(target):
            self.quiet_since.pop(name, None)

        # Steps: never skipped, never backwards, and only once the step's time is up.
        same_rollout = (
            old.canary is not None
            and new.canary is not None
            and old.canary.revision == new.canary.revision
            and old.canary_started_at == new.canary_started_at
        )
        if same_rollout:
            before, after = old.current_step or 0, new.current_step or 0
            assert after >= before
            if after > before and not promoted_by_hand:
                assert after == before + 1
                if before > 0:
                    assert old.step_started_at is not None
                    assert now - old.step_started_at >= parse_duration(sim.spec.rollout.step_duration)
                    assert obs.traffic.confirmed
                    if sim.spec.analysis.metrics:
                        assert new.analysis.last_verdict == Verdict.SUCCESSFUL or (
                            old.analysis.last_verdict == Verdict.SUCCESSFUL
                        )

        # Rejected versions: never the canary; a rejected version starts again only on retry.
        if new.canary is not None:
            version = new.canary.template.model.version
            assert version not in new.rejected_versions
            is_new_canary = old.canary is None or old.canary.revision != new.canary.revision
            if is_new_canary and version in old.rejected_versions:
                assert retried
        if new.history != old.history:  # a rollout ended at this tick
            assert new.canary is None and old.canary is not None
            record = new.history[-1]
            assert record.version == old.canary.template.model.version and record.finished_at == now
            if record.outcome == RolloutOutcome.ROLLED_BACK:
                assert record.version in new.rejected_versions
            else:
                assert record.version not in new.rejected_versions
        assert len(new.history) <= HISTORY_LIMIT

        # Conditions and generation.
        assert new.observed_generation == obs.generation
        ready = cond.get_condition(new.conditions, cond.READY)
        assert ready is not None and (ready.status == "True") == (new.phase == Phase.HEALTHY)
        assert {c.type for c in new.conditions} == {cond.READY, cond.PROGRESSING, cond.SPEC_VALID}


# ---------------------------------------------------------------------------------------------- runs


def apply_event(checker: Checker, event: tuple[Any, ...], counter: list[int]) -> None:
    sim = checker.sim
    kind = event[0]
    advance: float = 0
    analysis = None
    canary = sim.status.canary
    if kind == "wait":
        advance = event[1]
    elif kind == "ready":
        which = event[1]
        names = []
        if which in ("all", "stable") and sim.status.stable:
            names.append(sim.status.stable.revision)
        if which in ("all", "canary") and canary:
            names.append(canary.revision)
        if which == "all":
            names = list(sim.revisions)
        if names:
            sim.make_ready(*names)
    elif kind == "partial":
        if canary and canary.revision in sim.revisions:
            fake = sim.revisions[canary.revision]
            if canary.template.model.version not in sim.broken_versions:
                fake.ready = min(fake.desired, event[1])
    elif kind == "settle":
        sim.make_ready()
        sim.confirm()
    elif kind == "confirm":
        sim.confirm()
    elif kind == "break":
        if canary:
            sim.break_version(canary.template.model.version)
    elif kind == "heal":
        for version in list(sim.broken_versions):
            sim.heal_version(version)
    elif kind == "verdict":
        advance = 60
        due = analysis_due(sim.spec, sim.status, sim.now + timedelta(seconds=advance))
        if due:
            measurements = [measurement(event[1], at=sim.now)]
            if event[2]:  # a dry-run metric that fails: recorded, never acted on
                measurements.append(measurement(Verdict.FAILED, "shadow", dry_run=True, at=sim.now))
            analysis = AnalysisRound(measurements)
    elif kind == "version":
        sim.new_version(event[1])
    elif kind == "request":
        counter[0] += 1
        sim.annotate(event[1], f"v{counter[0]}")
    elif kind == "pause":
        sim.set_paused(event[1])
    elif kind == "replicas":
        wire = sim.spec.to_wire()
        wire["serving"]["replicas"] = event[1]
        try:
            sim.spec = ModelDeploymentSpec.model_validate(wire)
            sim.generation += 1
        except ValueError:
            pass  # steps the replicas router cannot serve with that many replicas: the spec is refused
    elif kind == "stable_pod_lost":
        if sim.status.stable and sim.status.stable.revision in sim.revisions:
            fake = sim.revisions[sim.status.stable.revision]
            fake.ready = max(0, fake.ready - 1)
    elif kind == "orphan":
        counter[0] += 1
        name = f"{NAME}-v0-0-{counter[0]}-orphan"
        sim.revisions[name] = FakeRevision(make_spec("0.0.1").revision_template(), 1, 1)
    checker.tick(analysis=analysis, advance=advance)


def drive_home(checker: Checker) -> None:
    """Heal and unpause the world and let time pass: every rollout must end."""
    sim = checker.sim
    for version in list(sim.broken_versions):
        sim.heal_version(version)
    if sim.spec.rollout.paused:
        sim.set_paused(False)

    def settled() -> bool:
        desired = sim.spec.model.version
        return (
            sim.phase in (Phase.HEALTHY, Phase.ROLLED_BACK)
            and sim.status.canary is None
            and (desired == sim.status.stable_version or desired in sim.status.rejected_versions)
        )

    for _ in range(60):
        if settled():
            break
        sim.make_ready()
        sim.confirm()
        advance = 600
        analysis = None
        if analysis_due(sim.spec, sim.status, sim.now + timedelta(seconds=advance)):
            analysis = analysis_round(Verdict.SUCCESSFUL)
        checker.tick(analysis=analysis, advance=advance)
    assert settled(), sim.status.message


@PROPERTY_SETTINGS
@given(config=spec_st, events=st.lists(event_st, max_size=50))
def test_invariants_hold_for_any_sequence_of_events(
    config: dict[str, Any], events: list[tuple[Any, ...]]
) -> None:
    sim = Sim(build(config), settle=False)
    checker = Checker(sim)
    counter = [0]
    checker.tick()
    for event in events:
        apply_event(checker, event, counter)
    drive_home(checker)


@PROPERTY_SETTINGS
@given(
    config=spec_st,
    events=st.lists(event_st, max_size=30),
    new_version=st.sampled_from(VERSIONS[1:]),
)
def test_invariants_hold_from_a_running_rollout(
    config: dict[str, Any], events: list[tuple[Any, ...]], new_version: str
) -> None:
    """The same, starting where most bugs live: healthy at 1.0.0 with a canary under way."""
    sim = Sim(build(config), settle=True)
    checker = Checker(sim)
    checker.tick()
    for _ in range(4):
        checker.tick(advance=1)
    sim.new_version(new_version)
    for _ in range(3):
        checker.tick(advance=1)
    sim.settle = False
    counter = [0]
    for event in events:
        apply_event(checker, event, counter)
    drive_home(checker)


@settings(max_examples=40, deadline=None)
@given(
    config=spec_st,
    gaps=st.lists(st.integers(0, 400), min_size=1, max_size=40),
)
def test_a_healthy_canary_is_promoted_through_every_step_in_order(
    config: dict[str, Any], gaps: list[int]
) -> None:
    """With a cooperative world, ticks at any spacing walk the steps one by one and promote."""
    config = {**config, "metrics": [], "shadow": False}
    sim = Sim(build(config), settle=True).deploy()
    checker = Checker(sim)
    sim.new_version("2.0.0")
    weights: list[int] = []
    for gap in [*gaps, *[600] * 30]:
        checker.tick(advance=gap)
        if sim.phase == Phase.PROGRESSING and (not weights or weights[-1] != sim.weight):
            weights.append(sim.weight)
        if sim.phase == Phase.HEALTHY:
            break
    assert sim.phase == Phase.HEALTHY and sim.status.stable_version == "2.0.0"
    assert weights == sim.spec.rollout.effective_steps()[:-1]
    assert sim.status.history[-1].outcome == RolloutOutcome.PROMOTED
