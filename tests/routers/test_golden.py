"""Golden YAML of what each router makes at each point of a rollout, from the manifests in examples/.

A change to a router's output shows up as a diff of these files in review. After an intended change,
regenerate them with ``MLCANARY_UPDATE_GOLDEN=1 pytest tests/routers/test_golden.py`` and read the diff.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml

from mlcanary.engine import RevisionObservation, SetTraffic
from mlcanary.models import ModelDeploymentSpec, ModelRef, RevisionState, revision_name
from mlcanary.render import render_objects
from mlcanary.resources import Owner
from mlcanary.routers import get_router
from mlcanary.routers.base import RouteContext

from .kit import GOLDEN, REPO, dump_yaml

UPDATE = os.environ.get("MLCANARY_UPDATE_GOLDEN") == "1"
EXAMPLES = {"gatewayAPI": "gateway-api.yaml", "istio": "istio.yaml", "replicas": "replicas.yaml"}
UID = "00000000-0000-4000-8000-000000000000"

# (label, canary weight or None for "no canary", canary available?)
POINTS: list[tuple[str, int | None, bool]] = [
    ("at rest: one revision, all traffic", None, True),
    ("canary created, not ready yet: weight clamped to 0", 20, False),
    ("canary ready, waiting to start: 0%", 0, True),
    ("step 1: 5%", 5, True),
    ("step 3: 50%", 50, True),
    ("promoting: 100%", 100, True),
]


def manifest(router: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / EXAMPLES[router]).read_text())
    doc["metadata"]["uid"] = UID
    return doc


def router_objects(router: str) -> list[dict[str, Any]]:
    doc = manifest(router)
    spec = ModelDeploymentSpec.model_validate(doc["spec"])
    owner = Owner(doc["metadata"]["name"], doc["metadata"]["namespace"], UID)
    template = spec.revision_template()
    canary = RevisionState(revision=revision_name(owner.name, template), template=template)
    previous = template.model_copy(
        update={"model": ModelRef(name=spec.model.name, version="1.0.0", uri=spec.model.uri)}
    )
    stable = revision_name(owner.name, previous)
    total = spec.serving.replicas
    out: list[dict[str, Any]] = []
    for label, weight, ready in POINTS:
        revisions = {stable: RevisionObservation(stable, total, total)}
        if weight is None:
            target = SetTraffic(stable, None, 0)
        else:
            revisions[canary.revision] = RevisionObservation(canary.revision, total, total if ready else 0)
            target = SetTraffic(stable, canary.revision, weight)
        ctx = RouteContext(owner=owner, spec=spec, revisions=revisions)
        objects = get_router(spec.traffic.router_kind).desired_objects(ctx, target)
        out.append(
            {
                "point": label,
                "target": {"stable": stable, "canary": target.canary, "weight": weight},
                "objects": objects,
            }
        )
    return out


def replica_points() -> list[dict[str, Any]]:
    """The replica router has no objects of its own: its split is the entry Service plus replica
    counts, so those are what its golden file records."""
    doc = manifest("replicas")
    out: list[dict[str, Any]] = []
    for label, step in (("at rest", None), ("step 1", 1), ("step 2", 2), ("step 3", 3)):
        objects = render_objects(doc, stable_version=None if step is None else "1.0.0", step=step)
        out.append(
            {
                "point": label,
                "replicas": {
                    o["metadata"]["labels"]["mlcanary.io/role"]: o["spec"]["replicas"]
                    for o in objects
                    if o["kind"] == "Deployment"
                },
            }
        )
    entry = next(
        o
        for o in render_objects(doc)
        if o["kind"] == "Service" and o["metadata"]["name"] == doc["metadata"]["name"]
    )
    return [{"entryService": entry}, *out]


def check(name: str, documents: list[dict[str, Any]]) -> None:
    path = GOLDEN / name
    text = dump_yaml(documents)
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"{path} did not exist: written, review and commit it")
    assert text == path.read_text(), (
        f"{path} differs: rerun with MLCANARY_UPDATE_GOLDEN=1 and review the diff"
    )


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
def test_mesh_router_golden(router: str) -> None:
    check(f"{router}.yaml", router_objects(router))


def test_replica_router_golden() -> None:
    check("replicas.yaml", replica_points())
