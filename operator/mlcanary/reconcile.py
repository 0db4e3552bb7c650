"""One reconciliation tick: observe -> decide -> write status (as a diff) -> act.

The async shell around the pure engine. Status is written before the actions are applied and every
action is an idempotent ensure-step derived from the status, so a crash between the two only means
the next tick applies them again. The status write is conditional on the resourceVersion that was
read; on 409 the whole tick is run again from a fresh read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mlcanary import engine, resources
from mlcanary.analysis.provider import AnalysisContext, MetricProvider, run_round
from mlcanary.analysis.queries import QueryTemplateError, check_template
from mlcanary.durations import parse_duration
from mlcanary.engine import (
    EmitEvent,
    EnsureRevision,
    Observations,
    RemoveRevision,
    RemoveRouterObjects,
    RevisionObservation,
    SetTraffic,
    TrafficObservation,
)
from mlcanary.kube import DEPLOYMENTS, MODEL_DEPLOYMENTS, SERVICES, ConflictError, Kube
from mlcanary.models import ModelDeploymentSpec, ModelDeploymentStatus
from mlcanary.operator_metrics import OperatorMetrics
from mlcanary.routers import UnknownRouterError, get_router
from mlcanary.routers.base import RouteContext, safe_target
from mlcanary.settings import Settings

logger = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5


@dataclass
class OperatorContext:
    kube: Kube
    settings: Settings
    provider_factory: Callable[[ModelDeploymentSpec, str], MetricProvider]
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class TickResult:
    status: ModelDeploymentStatus | None
    actions: list[engine.Action]
    conflicts: int = 0


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


def format_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """'spec.rollout.steps: steps must be strictly increasing (5 then 3)' — the field comes first."""
    parts = []
    for item in error.errors():
        location = ".".join([prefix, *(str(p) if not isinstance(p, int) else f"[{p}]" for p in item["loc"])])
        location = location.replace(".[", "[")
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


class InvalidQueryError(ValueError):
    """A custom query template that would not render (named by its field)."""


def check_query_templates(spec: ModelDeploymentSpec) -> None:
    """Refuse custom PromQL templates that cannot render (an unclosed string, a placeholder inside a
    raw string) when the spec is read, not at the first analysis round of a rollout."""
    for index, metric in enumerate(spec.analysis.metrics):
        if metric.query is None:
            continue
        try:
            check_template(metric.query)
        except QueryTemplateError as error:
            raise InvalidQueryError(f"spec.analysis.metrics[{index}].query: {error}") from None


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


async def reconcile(obj: dict[str, Any], ctx: OperatorContext) -> TickResult:
    """Run one tick for ``obj``; on a write conflict re-read and run it again.

    The object is always re-read first: the body Kopf hands over can predate our own last status
    write, and acting on an older status (with no write to fail on) could move traffic backwards."""
    started = time.perf_counter()
    conflicts = 0
    meta = obj["metadata"]
    try:
        fresh = await ctx.kube.get(MODEL_DEPLOYMENTS, meta["namespace"], meta["name"])
        if fresh is None:
            return TickResult(None, [], conflicts)
        obj = fresh
        while True:
            try:
                result = await _tick(obj, ctx)
                return TickResult(result.status, result.actions, conflicts)
            except ConflictError:
                conflicts += 1
                ctx.metrics.status_conflicts.inc()
                if conflicts > MAX_CONFLICT_RETRIES:
                    raise
                fresh = await ctx.kube.get(MODEL_DEPLOYMENTS, meta["namespace"], meta["name"])
                if fresh is None:
                    return TickResult(None, [], conflicts)
                obj = fresh
    finally:
        ctx.metrics.tick_seconds.observe(time.perf_counter() - started)


async def _tick(obj: dict[str, Any], ctx: OperatorContext) -> TickResult:
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation") or 1)
    now = ctx.clock()
    old_raw: dict[str, Any] = obj.get("status") or {}
    status = _parse_status(old_raw, name, namespace)
    owner = resources.Owner(name=name, namespace=namespace, uid=meta["uid"])

    try:
        spec = ModelDeploymentSpec.model_validate(obj.get("spec") or {})
        router = get_router(spec.traffic.router_kind)
        check_query_templates(spec)
    except (ValidationError, UnknownRouterError, InvalidQueryError) as error:
        text = format_validation_error(error) if isinstance(error, ValidationError) else str(error)
        new_status = engine.invalid_spec(status, text, generation, now)
        await _write_status(ctx, obj, old_raw, new_status)
        if not _was_invalid_with(status, text):
            await ctx.kube.post_event(obj, "Warning", "InvalidSpec", text)
        logger.warning("%s/%s: invalid spec: %s", namespace, name, text)
        return TickResult(new_status, [])

    deployments = await ctx.kube.list_objects(DEPLOYMENTS, namespace, resources.selector_for(name))
    revisions = observe_revisions(deployments, owner.uid)
    route_ctx = RouteContext(owner=owner, spec=spec, revisions=revisions)
    traffic = TrafficObservation(in_sync=False, verified=False)
    if status.stable is not None:
        previous = SetTraffic(
            status.stable.revision, status.canary.revision if status.canary else None, status.canary_weight
        )
        traffic = await router.observe(ctx.kube, route_ctx, previous)

    analysis_round = None
    if engine.analysis_due(spec, status, now) and status.canary and status.stable:
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
        # The provider enforces the query timeout; this outer bound only catches a provider bug.
        analysis_round = await run_round(
            provider, spec.analysis, context, now, timeout_seconds=query_timeout + 5
        )
        ctx.metrics.record_round(namespace, name, analysis_round.measurements)

    observations = Observations(
        name=name,
        generation=generation,
        revisions=revisions,
        traffic=traffic,
        analysis=analysis_round,
        annotations=meta.get("annotations") or {},
        router_kind=spec.traffic.router_kind,
    )
    new_status, actions = engine.decide(spec, status, observations, now)
    await _write_status(ctx, obj, old_raw, new_status)
    await _apply(ctx, obj, spec, route_ctx, actions)
    ctx.metrics.record_status(namespace, name, new_status, actions)
    return TickResult(new_status, actions)


def _parse_status(raw: dict[str, Any], name: str, namespace: str) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(raw)
    except ValidationError as error:
        # Starting from scratch would re-run the first deploy; keep what can be read instead.
        logger.error("%s/%s: unreadable status, keeping readable fields: %s", namespace, name, error)
        readable = {k: v for k, v in raw.items() if k in {"stable", "stableVersion", "rejectedVersions"}}
        try:
            return ModelDeploymentStatus.model_validate(readable)
        except ValidationError:
            return ModelDeploymentStatus()


def _was_invalid_with(status: ModelDeploymentStatus, text: str) -> bool:
    return any(c.type == "SpecValid" and c.status == "False" and c.message == text for c in status.conditions)


async def _write_status(
    ctx: OperatorContext, obj: dict[str, Any], old_raw: dict[str, Any], new_status: ModelDeploymentStatus
) -> None:
    patch = merge_diff(old_raw, new_status.to_wire())
    if not patch:
        return
    meta = obj["metadata"]
    await ctx.kube.patch_status(
        MODEL_DEPLOYMENTS, meta["namespace"], meta["name"], patch, meta["resourceVersion"]
    )


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
    await kube.ensure(resources.entry_service(owner, spec, stable))
    for action in actions:
        match action:
            case EnsureRevision(revision=revision, role=role, replicas=replicas):
                await kube.ensure(
                    resources.deployment(
                        owner,
                        spec,
                        revision,
                        role,
                        replicas,
                        image_pull_policy=ctx.settings.image_pull_policy,
                    )
                )
                await kube.ensure(resources.revision_service(owner, spec, revision, role))
            case SetTraffic():
                router = get_router(spec.traffic.router_kind)
                await router.apply(kube, route_ctx, safe_target(action, route_ctx.revisions))
            case RemoveRevision(revision=revision):
                await kube.delete(DEPLOYMENTS, owner.namespace, revision)
                await kube.delete(SERVICES, owner.namespace, revision)
            case RemoveRouterObjects(kind=kind):
                await get_router(kind).remove(kube, owner)
            case EmitEvent(type=type_, reason=reason, message=message):
                await kube.post_event(obj, type_, reason, message)
                logger.info("%s/%s: %s: %s", owner.namespace, owner.name, reason, message)
