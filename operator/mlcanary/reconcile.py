"""One reconciliation tick: observe -> decide -> write status (as a diff) -> act.

The async shell around the pure engine. Status is written before the actions are applied and every
action is an idempotent ensure-step derived from the status, so a crash between the two only means
the next tick applies them again. The status write is conditional on the resourceVersion that was
read; on 409 the whole tick is run again from a fresh read.

Observations come from the informer caches (:mod:`mlcanary.kube`), so a tick that changes nothing
makes no API request. Analysis rounds run beside the ticks (:class:`AnalysisRounds`): a slow or
hanging Prometheus never delays a tick, so an abort is acted on at once whatever Prometheus does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from mlcanary import conditions as cond
from mlcanary import engine, resources
from mlcanary.analysis.provider import AnalysisContext, MetricProvider, run_round
from mlcanary.analysis.queries import QueryTemplateError, check_custom_query, limits_of
from mlcanary.durations import parse_duration
from mlcanary.engine import (
    AnalysisRound,
    EmitEvent,
    EnsureLoadTestJob,
    EnsureRevision,
    Observations,
    RemoveLoadTestJob,
    RemoveRevision,
    RemoveRouterObjects,
    RevisionObservation,
    SetTraffic,
    TrafficObservation,
)
from mlcanary.gates import loadtest
from mlcanary.gates import shadow as shadow_gate
from mlcanary.kube import (
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    JOBS,
    MODEL_DEPLOYMENTS,
    PODS,
    SERVICES,
    ApiError,
    ConflictError,
    EnsureResult,
    Kube,
    Outcome,
    controlled_by,
)
from mlcanary.kubeapi.informer import newer, resource_version
from mlcanary.models import (
    Analysis,
    BuiltinMetric,
    LoadTestPhase,
    Metric,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    object_name_problem,
)
from mlcanary.notify.dispatch import Notifier
from mlcanary.operator_metrics import OperatorMetrics
from mlcanary.registry.sync import RegistrySync
from mlcanary.retraining import shell as retraining
from mlcanary.routers import UnknownRouterError, get_router
from mlcanary.routers.base import RouteContext, safe_target
from mlcanary.settings import Settings

logger = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
RoundKey = tuple[str, int | None, str]  # (canary revision, step, step started at): what a round judges


class AnalysisRounds:
    """Analysis rounds running beside the ticks, at most one per ModelDeployment.

    A tick that finds a round due starts it and carries on; a later tick (woken when the round ends)
    hands the finished round to the engine. A round is only ever judged for the canary, step and
    step start it was run for: one that finishes after the rollout moved on is thrown away."""

    def __init__(self) -> None:
        self._tasks: dict[str, tuple[RoundKey, asyncio.Task[AnalysisRound]]] = {}

    def take(self, uid: str, key: RoundKey) -> AnalysisRound | None:
        """The finished round for ``key``, once; a round for another key is cancelled and dropped."""
        entry = self._tasks.get(uid)
        if entry is None:
            return None
        running_key, task = entry
        if running_key != key:
            task.cancel()
            del self._tasks[uid]
            return None
        if not task.done():
            return None
        del self._tasks[uid]
        if task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def running(self, uid: str) -> bool:
        return uid in self._tasks

    def start(
        self,
        uid: str,
        key: RoundKey,
        work: Coroutine[Any, Any, AnalysisRound],
        on_done: Callable[[], None] | None = None,
    ) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"analysis {uid}")
        if on_done is not None:
            task.add_done_callback(lambda _: on_done())
        self._tasks[uid] = (key, task)

    def discard(self, uid: str) -> None:
        entry = self._tasks.pop(uid, None)
        if entry is not None:
            entry[1].cancel()


@dataclass
class OperatorContext:
    kube: Kube
    settings: Settings
    provider_factory: Callable[[ModelDeploymentSpec, str], MetricProvider]
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rounds: AnalysisRounds = field(default_factory=AnalysisRounds)
    # Called (with the object's uid) when a background analysis round finishes.
    wake: Callable[[str], None] = field(default=lambda uid: None)
    # What our last status write returned, per uid: a body handed to us that is older than it (the
    # watch has not delivered our write yet) is replaced by it, so a tick never acts on stale status.
    last_written: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Conflicts already reported per uid (an object someone else controls), so each is one Event.
    reported_conflicts: dict[str, set[str]] = field(default_factory=dict)
    # Sends the Events that spec.notifications routes, in the background (None: not configured).
    notifier: Notifier | None = None
    # spec.retraining: the shared trigger loop and the webhook sender (without them: Jobs only).
    retrainer: retraining.Retrainer = field(default_factory=retraining.Retrainer)
    # spec.model.registry: the shared MLflow alias poller and its per-object state.
    registry: RegistrySync = field(default_factory=RegistrySync)

    def notify(
        self,
        obj: dict[str, Any],
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        actions: list[engine.Action],
        now: datetime,
    ) -> None:
        """Hand the tick's Events to the notifier; never waits (delivery runs beside the ticks)."""
        if self.notifier is None or not spec.notifications:
            return
        meta = obj["metadata"]
        self.notifier.submit(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=str(meta.get("uid")),
            spec=spec,
            status=status,
            events=[a for a in actions if isinstance(a, EmitEvent)],
            now=now,
        )

    def forget(self, uid: str) -> None:
        self.rounds.discard(uid)
        self.last_written.pop(uid, None)
        self.reported_conflicts.pop(uid, None)
        self.retrainer.forget(uid)
        self.registry.forget(uid)


@dataclass(frozen=True)
class TickResult:
    status: ModelDeploymentStatus | None
    actions: list[engine.Action]
    conflicts: int = 0
    settled: bool = False  # nothing in flight: the object may be left alone until something changes


def merge_diff(old: Any, new: Any) -> Any:
    """JSON merge patch (RFC 7386) turning ``old`` into ``new``; {} when they are equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            nested = merge_diff(old[key], value)
            if nested:
                patch[key] = nested
            elif value == {} and old[key] != {}:
                patch[key] = None
        elif old[key] != value:
            patch[key] = value
    return patch


_PATTERN_MEANINGS = {
    "version": "a semantic version such as 2.1.0 (what model bundles carry)",
    "Duration": "a duration such as 30s, 5m or 1h30m",
    "Timeout": "a duration such as 30s, 5m or 1h30m",
    "Delay": "a duration such as 30s, 5m or 1h30m",
    "Deadline": "a duration such as 30s, 5m or 1h30m",
    "interval": "a duration such as 30s, 5m or 1h30m",
    "Interval": "a duration such as 30s, 5m or 1h30m",
    "settleTime": "a duration such as 30s, 5m or 1h30m",
}


def _pattern_meaning(field_name: str) -> str | None:
    for suffix, meaning in _PATTERN_MEANINGS.items():
        if field_name.endswith(suffix) or field_name.endswith(suffix.lower()):
            return meaning
    return None


def format_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """'spec.rollout.steps: steps must be strictly increasing (5 then 3)' — the field comes first."""
    parts = []
    for item in error.errors():
        loc = [str(p) if not isinstance(p, int) else f"[{p}]" for p in item["loc"]]
        location = ".".join([prefix, *loc]).replace(".[", "[")
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "string_pattern_mismatch":
            meaning = _pattern_meaning(loc[-1] if loc else "")
            value = repr(item.get("input"))[:80]
            message = (
                f"{value} is not {meaning}" if meaning else f"{value} does not match {item['ctx']['pattern']}"
            )
        elif (
            not loc
            and ": " in message
            and message.split(": ", 1)[0].replace(".", "").replace("[", "").replace("]", "").isalnum()
        ):
            # A model-level rule that names its own field ("rollout.steps[0]: ...").
            field_path, message = message.split(": ", 1)
            location = f"{prefix}.{field_path}"
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


class InvalidQueryError(ValueError):
    """A custom query template that would not render (named by its field)."""


def check_query_templates(spec: ModelDeploymentSpec, settings: Settings | None = None) -> None:
    """Refuse, when the spec is read and not at the first analysis round of a rollout, every custom
    query the analysis would refuse: templates that cannot render (an unclosed string, a placeholder
    inside a raw string) or parse, queries that cannot be bounded within the operator's limits (a
    selector that does not name its metric, a range or subquery window over the cap, a subquery
    resolution under the floor), and what the operator's policy refuses (custom queries without a
    namespace label to scope them, a selector matching the namespace label itself). No network
    call. ``settings``: the operator's; by default read from the environment, as the operator does."""
    settings = settings if settings is not None else Settings.from_env()
    limits = limits_of(settings)
    for index, metric in enumerate(spec.analysis.metrics):
        if metric.query is None:
            continue
        try:
            check_custom_query(
                metric.query,
                spec.analysis.interval,
                namespace_label=settings.prometheus_namespace_label,
                custom_queries=settings.custom_queries,
                limits=limits,
            )
        except QueryTemplateError as error:
            raise InvalidQueryError(f"spec.analysis.metrics[{index}].query: {error}") from None


def read_spec(obj: dict[str, Any], settings: Settings) -> tuple[ModelDeploymentSpec | None, str | None]:
    """The object's spec, or why it cannot be acted on (the message names the field)."""
    problem = object_name_problem(str(obj["metadata"]["name"]))
    if problem is not None:
        return None, problem
    try:
        spec = ModelDeploymentSpec.model_validate(obj.get("spec") or {})
        get_router(spec.traffic.router_kind)
        check_query_templates(spec, settings)
    except ValidationError as error:
        return None, format_validation_error(error)
    except (UnknownRouterError, InvalidQueryError) as error:
        return None, str(error)
    return spec, None


def observe_revisions(deployments: list[dict[str, Any]], owner_uid: str) -> dict[str, RevisionObservation]:
    revisions: dict[str, RevisionObservation] = {}
    for deployment in deployments:
        meta = deployment["metadata"]
        if not any(ref.get("uid") == owner_uid for ref in meta.get("ownerReferences") or []):
            continue  # same labels but not ours (e.g. a user's copy): never touch it
        status = deployment.get("status") or {}
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        ready = int(status.get("readyReplicas") or 0)
        if status.get("observedGeneration", meta.get("generation")) != meta.get("generation"):
            ready = min(ready, int(status.get("updatedReplicas") or 0))  # pods of an older template
        revisions[meta["name"]] = RevisionObservation(meta["name"], desired, ready)
    return revisions


def freshest(obj: dict[str, Any], ctx: OperatorContext) -> dict[str, Any]:
    """``obj``, or what our last status write returned when that is newer (not yet watched back)."""
    written = ctx.last_written.get(str(obj["metadata"].get("uid")))
    if written is not None and newer(resource_version(written), resource_version(obj)):
        return written
    return obj


async def reconcile(obj: dict[str, Any], ctx: OperatorContext, *, reread: bool = False) -> TickResult:
    """Run one tick for ``obj``; on a write conflict re-read and run it again.

    ``reread``: fetch the object first instead of trusting ``obj`` (tests, and after a failure)."""
    started = time.perf_counter()
    conflicts = 0
    meta = obj["metadata"]
    try:
        if reread:
            fresh = await ctx.kube.api.get(MODEL_DEPLOYMENTS, meta["namespace"], meta["name"])
            if fresh is None:
                return TickResult(None, [], conflicts)
            obj = fresh
        obj = freshest(obj, ctx)
        while True:
            try:
                result = await _tick(obj, ctx)
                return TickResult(result.status, result.actions, conflicts, result.settled)
            except ConflictError:
                conflicts += 1
                ctx.metrics.status_conflicts.inc()
                if conflicts > MAX_CONFLICT_RETRIES:
                    raise
                fresh = await ctx.kube.api.get(MODEL_DEPLOYMENTS, meta["namespace"], meta["name"])
                if fresh is None:
                    return TickResult(None, [], conflicts)
                obj = fresh
    finally:
        ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)


def parse_status(raw: dict[str, Any], name: str, namespace: str) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(raw)
    except ValidationError as error:
        # Starting from scratch would re-run the first deploy; keep what can be read instead.
        logger.error("%s/%s: unreadable status, keeping readable fields: %s", namespace, name, error)
        readable = {
            k: v
            for k, v in raw.items()
            if k in {"stable", "stableVersion", "rejectedVersions", "acceptedSpec"}
        }
        try:
            return ModelDeploymentStatus.model_validate(readable)
        except ValidationError:
            return ModelDeploymentStatus()


def accepted_spec(status: ModelDeploymentStatus) -> ModelDeploymentSpec | None:
    if status.accepted_spec is None:
        return None
    try:
        return ModelDeploymentSpec.model_validate_json(status.accepted_spec)
    except ValidationError:
        return None


async def _tick(obj: dict[str, Any], ctx: OperatorContext) -> TickResult:
    meta = obj["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    if meta.get("deletionTimestamp"):
        return TickResult(None, [], settled=True)  # going away: its children follow by garbage collection
    generation = int(meta.get("generation") or 1)
    now = ctx.clock()
    old_raw: dict[str, Any] = obj.get("status") or {}
    status = parse_status(old_raw, name, namespace)
    owner = resources.Owner(name=name, namespace=namespace, uid=uid)

    spec, invalid = read_spec(obj, ctx.settings)
    if spec is None:
        assert invalid is not None
        if not _was_invalid_with(status, invalid):
            await ctx.kube.post_event(obj, "Warning", "InvalidSpec", invalid)
            logger.warning("%s/%s: invalid spec: %s", namespace, name, invalid)
        spec = accepted_spec(status) if object_name_problem(name) is None else None
        if spec is None:
            # Nothing accepted ever ran (or its name can never work): report, touch nothing.
            new_status = engine.invalid_spec(status, invalid, generation, now)
            await _write_status(ctx, obj, old_raw, new_status)
            return TickResult(new_status, [], settled=True)

    router = get_router(spec.traffic.router_kind)
    deployments = await ctx.kube.children(DEPLOYMENTS, namespace, name)
    revisions = observe_revisions(deployments, owner.uid)
    route_ctx = RouteContext(owner=owner, spec=spec, revisions=revisions)
    traffic = TrafficObservation(in_sync=False, verified=False)
    if status.stable is not None:
        previous = engine.traffic_target(spec, status)
        traffic = await router.observe(ctx.kube, route_ctx, previous)

    analysis_round = None
    shadow_since = shadow_gate.round_due_since(status)
    if (
        invalid is None
        and status.canary
        and status.stable
        and status.phase in (Phase.PROGRESSING, Phase.SHADOWING)
    ):
        # A shadow round is keyed by step 0 and the phase's start: it is never judged as a step's.
        started = shadow_since if shadow_since is not None else status.step_started_at
        key: RoundKey = (
            status.canary.revision,
            0 if shadow_since is not None else status.current_step,
            started.isoformat() if started else "",
        )
        analysis_round = ctx.rounds.take(uid, key)
        if analysis_round is not None:
            ctx.metrics.record_round(namespace, name, analysis_round.measurements)
        elif engine.analysis_due(spec, status, now) and not ctx.rounds.running(uid):
            _start_round(ctx, uid, key, spec, status, namespace, name, now)
    elif status.canary and status.stable and status.load_test and status.phase == Phase.LOAD_TESTING:
        key = (status.canary.revision, None, f"stable rate {status.load_test.started_at.isoformat()}")
        analysis_round = ctx.rounds.take(uid, key)
        if (
            analysis_round is None
            and engine.stable_rate_due(spec, status, now)
            and not ctx.rounds.running(uid)
        ):
            _start_stable_rate_round(ctx, uid, key, spec, status, namespace, name, now)

    observations = Observations(
        name=name,
        generation=generation,
        revisions=revisions,
        traffic=traffic,
        analysis=analysis_round,
        annotations=meta.get("annotations") or {},
        router_kind=spec.traffic.router_kind,
        load_test_job=await observe_load_test(ctx.kube, status, spec, owner),
    )
    new_status, actions = engine.decide(spec, status, observations, now, invalid_spec=invalid)
    new_status.conditions = cond.set_condition(
        new_status.conditions, cond.RECONCILED, "True", cond.REASON_RECONCILED, "", now, generation
    )
    retrain_actions: list[retraining.Action] = []
    if invalid is None:  # an invalid spec requests no training (the last accepted one still serves)
        retrain_actions = await retraining.step(
            ctx.retrainer, ctx.kube, obj, spec, new_status, owner, now, generation
        )
    if spec.model.registry is not None or status.registry is not None:
        new_status, registry_events = await _follow_registry(ctx, obj, spec, new_status, now, generation)
        actions = [*actions, *registry_events]
    await _write_status(ctx, obj, old_raw, new_status)
    retrain_events = [a for a in retrain_actions if isinstance(a, EmitEvent)]
    # after the status write: the transition happened
    ctx.notify(obj, spec, new_status, [*actions, *retrain_events], now)
    writes_before = ctx.kube.writes
    failed: ApplyError | None = None
    try:
        await _apply(ctx, obj, spec, route_ctx, actions)
    except ApplyError as error:  # a failed rollout write must not lose a training request
        failed = error
    if invalid is None:
        retrain_writes = await retraining.apply(
            ctx.retrainer, ctx.kube, obj, spec, new_status, owner, retrain_actions
        )
        await _report_writes(ctx, obj, retrain_writes)
    if failed is not None:
        raise failed
    ctx.metrics.record_status(namespace, name, new_status, actions)
    settled = (
        ctx.kube.writes == writes_before
        and traffic.confirmed
        and engine.settled(new_status)
        and not ctx.rounds.running(uid)
    )
    return TickResult(new_status, actions, settled=settled)


async def observe_load_test(
    kube: Kube, status: ModelDeploymentStatus, spec: ModelDeploymentSpec, owner: resources.Owner
) -> loadtest.JobObservation | None:
    """The running load test's Job, and once it ended, the result its pod left in its termination
    message. Nothing is read unless a load test is running (one pod list per finished Job)."""
    test = status.load_test
    if status.phase != Phase.LOAD_TESTING or test is None or test.phase != LoadTestPhase.RUNNING:
        return None
    job = await kube.get(JOBS, owner.namespace, test.job_name)
    if job is None or not controlled_by(job, owner):
        return None
    outcome, reason = job_outcome(job)
    result = None
    if outcome is not None and spec.load_test is not None and spec.load_test.job_template is None:
        pods, _ = await kube.api.list(PODS, owner.namespace, f"job-name={test.job_name}")
        result = termination_result(pods)
    return loadtest.JobObservation(test.job_name, outcome, reason, result)


def job_outcome(job: dict[str, Any]) -> tuple[Literal["Complete", "Failed"] | None, str]:
    """Complete or Failed (with its reason) from a Job's conditions; None while it runs."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Complete", ""
        if condition.get("type") == "Failed":
            return "Failed", str(condition.get("reason") or "")
    return None, ""


def termination_result(pods: list[dict[str, Any]]) -> dict[str, float] | None:
    """The load generator's result from its pods' termination messages (the newest pod first)."""

    def finished_at(pod: dict[str, Any]) -> str:
        return str((pod.get("metadata") or {}).get("creationTimestamp") or "")

    for pod in sorted(pods, key=finished_at, reverse=True):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            if container.get("name") != resources.LOAD_TEST_CONTAINER:
                continue
            terminated = (container.get("state") or {}).get("terminated") or {}
            result = loadtest.parse_result(str(terminated.get("message") or ""))
            if result is not None:
                return result
    return None


async def _follow_registry(
    ctx: OperatorContext,
    obj: dict[str, Any],
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    now: datetime,
    generation: int,
) -> tuple[ModelDeploymentStatus, list[engine.Action]]:
    """spec.model.registry: the alias's resolution into status (and, with Apply, into spec.model),
    outcomes of finished rollouts written back to the registry."""
    status, events, patch = await ctx.registry.observe(ctx.kube, obj, spec, status, now, generation, ctx.wake)
    status, written = await ctx.registry.write_back(spec, obj, status)
    if patch is not None:
        patched = await ctx.registry.apply_model(ctx.kube, obj, patch)
        # The status write below is conditional on the object's version, which the patch moved on;
        # the new spec is acted on at the next tick (the patch's watch event wakes it).
        obj["metadata"]["resourceVersion"] = patched["metadata"]["resourceVersion"]
    return status, [*events, *written]


def _start_round(
    ctx: OperatorContext,
    uid: str,
    key: RoundKey,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    namespace: str,
    name: str,
    now: datetime,
) -> None:
    assert status.canary is not None and status.stable is not None
    provider = ctx.provider_factory(spec, namespace)
    context = AnalysisContext(
        name=name,
        namespace=namespace,
        model_name=status.canary.template.model.name,
        version=status.canary.template.model.version,
        stable_version=status.stable.template.model.version,
        interval=spec.analysis.interval,
        canary_weight=status.canary_weight,
    )
    query_timeout = ctx.settings.query_timeout_seconds
    if spec.analysis.prometheus is not None:
        query_timeout = parse_duration(spec.analysis.prometheus.timeout).total_seconds()
    analysis = spec.analysis
    if shadow_gate.round_due_since(status) is not None:
        analysis = shadow_gate.shadow_analysis(spec)
    # The provider enforces the query timeout; this outer bound only catches a provider bug.
    work = run_round(provider, analysis, context, now, timeout_seconds=query_timeout + 5)
    ctx.rounds.start(uid, key, work, on_done=lambda: ctx.wake(uid))


def _start_stable_rate_round(
    ctx: OperatorContext,
    uid: str,
    key: RoundKey,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    namespace: str,
    name: str,
    now: datetime,
) -> None:
    """rpsFromStable: the stable's requests over the window, as the errorRate query counts them
    (its sample size), measured with the stable as the revision under test."""
    assert status.stable is not None and spec.load_test is not None
    source = spec.load_test.rps_from_stable
    assert source is not None
    version = status.stable.template.model.version
    context = AnalysisContext(
        name=name,
        namespace=namespace,
        model_name=status.stable.template.model.name,
        version=version,
        stable_version=version,
        interval=source.window,
        canary_weight=100,
    )
    counting = Metric(name=loadtest.STABLE_RATE_METRIC, builtin=BuiltinMetric.ERROR_RATE, max=1)
    analysis = Analysis(interval=source.window, metrics=[counting])
    work = run_round(
        ctx.provider_factory(spec, namespace),
        analysis,
        context,
        now,
        timeout_seconds=ctx.settings.query_timeout_seconds + 5,
    )
    ctx.rounds.start(uid, key, work, on_done=lambda: ctx.wake(uid))


def _was_invalid_with(status: ModelDeploymentStatus, text: str) -> bool:
    return any(c.type == "SpecValid" and c.status == "False" and c.message == text for c in status.conditions)


async def _write_status(
    ctx: OperatorContext, obj: dict[str, Any], old_raw: dict[str, Any], new_status: ModelDeploymentStatus
) -> None:
    patch = merge_diff(old_raw, new_status.to_wire())
    if not patch:
        return
    meta = obj["metadata"]
    written = await ctx.kube.patch_status(
        MODEL_DEPLOYMENTS, meta["namespace"], meta["name"], patch, meta["resourceVersion"]
    )
    ctx.last_written[str(meta.get("uid"))] = written


class ApplyError(Exception):
    """Some of a tick's writes failed. Every one was still attempted: a Service that cannot be
    written must not keep traffic from moving back to stable."""


async def _apply(
    ctx: OperatorContext,
    obj: dict[str, Any],
    spec: ModelDeploymentSpec,
    route_ctx: RouteContext,
    actions: list[engine.Action],
) -> None:
    owner = route_ctx.owner
    kube = ctx.kube
    stable = next(
        (a.revision.revision for a in actions if isinstance(a, EnsureRevision) and a.role == "stable"), None
    )
    results: list[EnsureResult] = []
    failures: list[str] = []

    async def attempt(what: str, write: Coroutine[Any, Any, Any]) -> None:
        try:
            outcome = await write
        except Exception as error:  # attempt the other writes, then fail the tick
            failures.append(f"{what}: {error}")
            logger.warning("%s/%s: %s failed: %s", owner.namespace, owner.name, what, error)
            return
        if isinstance(outcome, EnsureResult):
            results.append(outcome)
        elif isinstance(outcome, list):
            results.extend(r for r in outcome if isinstance(r, EnsureResult))

    await attempt("entry Service", kube.ensure(resources.entry_service(owner, spec, stable), owner))
    for action in actions:
        match action:
            case EnsureRevision(
                revision=revision, role=role, replicas=replicas, hold_scale_down=hold, reference=reference
            ):
                deployment = resources.deployment(
                    owner,
                    spec,
                    revision,
                    role,
                    replicas,
                    image_pull_policy=ctx.settings.image_pull_policy,
                    reference=reference,
                )
                await attempt(f"Deployment {revision.revision}", kube.ensure(deployment, owner))
                service = resources.revision_service(owner, spec, revision, role)
                await attempt(f"Service {revision.revision}", kube.ensure(service, owner))
                scaling = spec.serving.autoscaling
                if replicas is None and scaling is not None:
                    hpa = resources.horizontal_pod_autoscaler(owner, scaling, revision, role, hold)
                    await attempt(f"HorizontalPodAutoscaler {revision.revision}", kube.ensure(hpa, owner))
                else:  # the operator sets the count: an HPA left from before must not fight it
                    await attempt(
                        f"HorizontalPodAutoscaler {revision.revision}",
                        _remove_autoscaler(kube, owner, revision.revision),
                    )
            case SetTraffic():
                router = get_router(spec.traffic.router_kind)
                target = safe_target(action, route_ctx.revisions)
                await attempt("traffic", router.apply(kube, route_ctx, target))
            case RemoveRevision(revision=revision):
                await attempt(
                    f"HorizontalPodAutoscaler {revision}", _remove_autoscaler(kube, owner, revision)
                )
                await attempt(f"Deployment {revision}", kube.delete(DEPLOYMENTS, owner.namespace, revision))
                await attempt(f"Service {revision}", kube.delete(SERVICES, owner.namespace, revision))
            case RemoveRouterObjects(kind=kind):
                await attempt(f"{kind} objects", get_router(kind).remove(kube, owner))
            case EnsureLoadTestJob(revision=revision, job_name=job_name, rps=rps):
                assert spec.load_test is not None
                target_url = ctx.settings.load_test_target(
                    revision.revision, owner.namespace, revision.template.serving.port
                )
                job = resources.load_test_job(
                    owner,
                    spec,
                    revision,
                    job_name,
                    target_url,
                    loadtest.active_deadline_seconds(spec.load_test),
                    rps,
                )
                await attempt(f"Job {job_name}", kube.create_once(job, owner))
            case RemoveLoadTestJob(job_name=job_name):
                await attempt(f"Job {job_name}", _remove_job(kube, owner, job_name))
            case EmitEvent(type=type_, reason=reason, message=message):
                kube.post_event_soon(obj, type_, reason, message)
                logger.info("%s/%s: %s: %s", owner.namespace, owner.name, reason, message)
    await _report_writes(ctx, obj, results)
    if failures:
        raise ApplyError("; ".join(failures))


async def _remove_job(kube: Kube, owner: resources.Owner, name: str) -> bool:
    """Delete a load test Job we control, with its pods (background propagation: a running generator stops)."""
    live = await kube.get(JOBS, owner.namespace, name)
    if live is None or not controlled_by(live, owner):
        return False
    return await kube.delete(JOBS, owner.namespace, name)


async def _remove_autoscaler(kube: Kube, owner: resources.Owner, revision: str) -> bool:
    """Delete the revision's HPA if it has one we control (read from the cache: no request when
    there is none, which is the usual case)."""
    if not kube.served(HORIZONTAL_POD_AUTOSCALERS):
        return False
    try:
        live = await kube.get(HORIZONTAL_POD_AUTOSCALERS, owner.namespace, revision)
    except ApiError as error:
        if error.status == 403:  # not allowed to read HPAs: none was made by us either
            return False
        raise
    if live is None or not controlled_by(live, owner):
        return False
    return await kube.delete(HORIZONTAL_POD_AUTOSCALERS, owner.namespace, revision)


async def _report_writes(ctx: OperatorContext, obj: dict[str, Any], results: list[EnsureResult]) -> None:
    """A hand edit undone, or a name taken by someone else's object: say so (once per conflict)."""
    meta = obj["metadata"]
    reported = ctx.reported_conflicts.setdefault(str(meta.get("uid")), set())
    for result in results:
        child = result.obj or {}
        what = f"{child.get('kind')} {(child.get('metadata') or {}).get('name')}"
        if result.outcome == Outcome.REVERTED:
            message = f"{what} was edited outside the operator ({result.drift}): restored"
            logger.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
            ctx.kube.post_event_soon(obj, "Warning", "ChildRestored", message)
        elif result.outcome == Outcome.FOREIGN and what not in reported:
            reported.add(what)
            message = f"{what} exists and is controlled by someone else: the operator leaves it alone"
            logger.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
            ctx.kube.post_event_soon(obj, "Warning", "NameTaken", message)


def _failed_with(status: ModelDeploymentStatus, text: str) -> bool:
    return any(
        c.type == cond.RECONCILED and c.status == "False" and c.message == text for c in status.conditions
    )


async def report_failure(obj: dict[str, Any], ctx: OperatorContext, error: BaseException) -> None:
    """A tick failed (an API error, a bug, anything): still act on an abort — traffic back to stable
    needs no judgement — and say what failed in the Reconciled condition and one Event per message.
    Best effort: when the API server itself is unreachable, this fails too, and the next tick retries."""
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    text = f"{type(error).__name__}: {error}"[:500]
    try:
        obj = freshest(await ctx.kube.api.get(MODEL_DEPLOYMENTS, namespace, name) or obj, ctx)
        meta = obj["metadata"]
        now = ctx.clock()
        old_raw: dict[str, Any] = obj.get("status") or {}
        status = parse_status(old_raw, name, namespace)
        new_status = engine.tick_failed(status, text, int(meta.get("generation") or 1), now)
        actions: list[engine.Action] = []
        spec, _ = read_spec(obj, ctx.settings)
        spec = spec or accepted_spec(status)
        abort = (meta.get("annotations") or {}).get(engine.ANNOTATION_PREFIX + engine.ABORT)
        if spec is not None and abort is not None and status.handled_requests.get(engine.ABORT) != abort:
            new_status, actions = engine.abort_while_failing(
                spec, new_status, abort, spec.traffic.router_kind, now
            )
        if not _failed_with(status, text):
            await ctx.kube.post_event(obj, "Warning", "ReconcileFailed", text)
        await _write_status(ctx, obj, old_raw, new_status)
        if spec is not None:
            ctx.notify(obj, spec, new_status, actions, now)
        if spec is not None and actions:
            owner = resources.Owner(name=name, namespace=namespace, uid=meta["uid"])
            deployments = await ctx.kube.children(DEPLOYMENTS, namespace, name)
            route_ctx = RouteContext(
                owner=owner, spec=spec, revisions=observe_revisions(deployments, owner.uid)
            )
            await _apply(ctx, obj, spec, route_ctx, actions)
    except Exception as second:  # the API server down, or the same bug: logged, retried next tick
        logger.warning("%s/%s: could not report the failed tick: %s", namespace, name, second)
