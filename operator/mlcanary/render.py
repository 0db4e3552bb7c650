"""``mlcanary render``: every child object the operator would create for a manifest at a point of a
rollout, for reviews and GitOps diffs (like ``helm template``). Pure apart from reading the file."""

from __future__ import annotations

from typing import Any

from mlcanary import resources
from mlcanary.engine import RevisionObservation, SetTraffic
from mlcanary.kubeapi import Obj
from mlcanary.models import ModelDeploymentSpec, ModelRef, RevisionState, revision_name
from mlcanary.routers import get_router
from mlcanary.routers.base import RouteContext
from mlcanary.weights import Autoscaled, realisable, replica_plan, smallest_step, step_weight

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def render_objects(
    manifest: dict[str, Any],
    stable_version: str | None = None,
    step: int | None = None,
    canary_weight: int | None = None,
    image_pull_policy: str = "IfNotPresent",
) -> list[dict[str, Any]]:
    """Objects for ``manifest``: at rest (no stable version given, or it equals the spec's), or as a
    canary of the spec's version against ``stable_version`` at ``step`` (1-based) or ``canary_weight``.

    The stable revision's model URI is the spec's with the version text replaced, which matches the
    usual ``.../<name>/<version>/`` layout; review it if your layout differs."""
    meta = manifest.get("metadata") or {}
    spec = ModelDeploymentSpec.model_validate(manifest.get("spec") or {})
    owner = resources.Owner(
        name=meta.get("name", "model"),
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", PLACEHOLDER_UID),
    )
    desired_template = spec.revision_template()
    desired = RevisionState(revision=revision_name(owner.name, desired_template), template=desired_template)
    scaling = spec.serving.autoscaling
    autoscaled = Autoscaled(scaling.min_replicas, scaling.max_replicas) if scaling else None
    # With autoscaling, the pods a revision runs at rest are its HPA's floor.
    total = spec.serving.base_replicas
    objects: list[dict[str, Any]] = []
    router = get_router(spec.traffic.router_kind)

    def autoscaler(revision: RevisionState, role: str, replicas: int | None, hold: bool) -> list[Obj]:
        if scaling is None or replicas is not None:
            return []
        return [resources.horizontal_pod_autoscaler(owner, scaling, revision, role, hold)]

    if stable_version is None or stable_version == spec.model.version:
        at_rest = None if autoscaled else total
        objects += [
            resources.deployment(owner, spec, desired, "stable", at_rest, image_pull_policy),
            resources.revision_service(owner, spec, desired, "stable"),
            *autoscaler(desired, "stable", at_rest, False),
        ]
        revisions = {desired.revision: RevisionObservation(desired.revision, total, total)}
        target = SetTraffic(desired.revision, None, 0)
    else:
        model = spec.model
        stable_model = ModelRef(
            name=model.name,
            version=stable_version,
            uri=model.uri.replace(model.version, stable_version),
            sha256=None,
        )
        stable_template = desired_template.model_copy(update={"model": stable_model})
        stable = RevisionState(revision=revision_name(owner.name, stable_template), template=stable_template)
        if canary_weight is None:
            canary_weight = step_weight(spec.rollout.effective_steps(), step or 1)
        if spec.traffic.router_kind.follows_ready_pods and not realisable(total, canary_weight):
            raise ValueError(
                f"{canary_weight}% cannot be served by the replicas router with {total} stable pods "
                f"(at least {smallest_step(total)}%)"
            )
        plan = replica_plan(
            spec.traffic.router_kind.follows_ready_pods,
            total,
            canary_weight,
            stable_ready=total,
            canary_ready=total,
            autoscaled=autoscaled,
            stable_current=total,
            canary_current=total,
        )
        stable_replicas, canary_replicas = plan.stable, plan.canary
        hold = plan.hold_stable_scale_down
        objects += [
            resources.deployment(owner, spec, stable, "stable", stable_replicas, image_pull_policy),
            resources.revision_service(owner, spec, stable, "stable"),
            *autoscaler(stable, "stable", stable_replicas, hold),
            resources.deployment(owner, spec, desired, "canary", canary_replicas, image_pull_policy),
            resources.revision_service(owner, spec, desired, "canary"),
            *autoscaler(desired, "canary", canary_replicas, False),
        ]
        stable_pods = total if stable_replicas is None else stable_replicas
        canary_pods = total if canary_replicas is None else canary_replicas
        revisions = {
            stable.revision: RevisionObservation(stable.revision, stable_pods, stable_pods),
            desired.revision: RevisionObservation(desired.revision, canary_pods, canary_pods),
        }
        target = SetTraffic(stable.revision, desired.revision, canary_weight)
    objects.insert(0, resources.entry_service(owner, spec, target.stable))
    objects += router.desired_objects(RouteContext(owner=owner, spec=spec, revisions=revisions), target)
    return objects
