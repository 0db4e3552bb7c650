"""Drive the real rollout engine through the lifecycles GitOps tools see, and record each object.

The Argo CD health check (examples/argocd-health.lua) and the Flux health expressions are judged
against these objects. ``python tests/chart/rollout_recorder.py --write`` refreshes the recorded
statuses in ``argocd-statuses/``; the tests also run the engine live, so a renamed phase or condition
fails even when nobody re-records.

Serving pods become ready at once, the router confirms every weight, and each analysis round returns
the verdict the scenario asks for: only ``engine.decide`` decides what happens.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from mlcanary import engine
from mlcanary.models import Measurement, ModelDeploymentSpec, ModelDeploymentStatus, Verdict

HERE = Path(__file__).resolve().parent
RECORDED_DIR = HERE / "argocd-statuses"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TICK = timedelta(seconds=30)


def base_spec(version: str) -> dict[str, Any]:
    return {
        "model": {"name": "fraud", "version": version, "uri": f"s3://models/fraud/{version}/"},
        "serving": {"replicas": 4},
        "rollout": {"steps": [25, 50], "stepDuration": "1m"},
        "analysis": {
            "interval": "1m",
            "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.01}],
        },
        "traffic": {"replicas": {}},
    }


@dataclass
class Cluster:
    """One ModelDeployment and the readiness of its revisions, as the operator would observe them."""

    spec: dict[str, Any]
    generation: int = 1
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    revisions: dict[str, engine.RevisionObservation] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    now: datetime = T0

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """A commit in Git: the spec changes and the API server bumps metadata.generation."""
        change(self.spec)
        self.generation += 1

    def tick(self, verdict: Verdict = Verdict.SUCCESSFUL) -> dict[str, Any]:
        spec = ModelDeploymentSpec.model_validate(self.spec)
        analysis = None
        if engine.analysis_due(spec, self.status, self.now):
            value = 0.001 if verdict == Verdict.SUCCESSFUL else 0.2
            analysis = engine.AnalysisRound(
                [Measurement(metric="error-rate", verdict=verdict, value=value, time=self.now)]
            )
        observations = engine.Observations(
            name="fraud",
            generation=self.generation,
            revisions=dict(self.revisions),
            traffic=engine.TrafficObservation(in_sync=True, verified=True),
            analysis=analysis,
            annotations=dict(self.annotations),
        )
        self.status, actions = engine.decide(spec, self.status, observations, self.now)
        for action in actions:
            if isinstance(action, engine.EnsureRevision):
                name = action.revision.revision
                self.revisions[name] = engine.RevisionObservation(name, action.replicas, action.replicas)
            elif isinstance(action, engine.RemoveRevision):
                self.revisions.pop(action.revision, None)
        self.now += TICK
        return self.object()

    def invalid(self, change: Callable[[dict[str, Any]], None], error: str) -> dict[str, Any]:
        """A spec the models refuse: the operator reports SpecValid False and acts on nothing."""
        self.edit(change)
        self.status = engine.invalid_spec(self.status, error, self.generation, self.now)
        self.now += TICK
        return self.object()

    def object(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": "fraud", "namespace": "ml", "generation": self.generation}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {
            "apiVersion": "mlcanary.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": metadata,
            "spec": copy.deepcopy(self.spec),
            "status": self.status.to_wire(),
        }


def set_version(version: str) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec["model"] = {**spec["model"], "version": version, "uri": f"s3://models/fraud/{version}/"}

    return change


def set_paused(paused: bool) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec["rollout"] = {**spec["rollout"], "paused": paused}

    return change


def phase(obj: dict[str, Any]) -> str | None:
    phase_: str | None = obj["status"].get("phase")
    return phase_


def run_until(
    cluster: Cluster, wanted: str, verdict: Verdict = Verdict.SUCCESSFUL, limit: int = 60
) -> Iterator[dict[str, Any]]:
    """Tick until the phase is ``wanted``, yielding every object on the way (the last one included)."""
    for _ in range(limit):
        obj = cluster.tick(verdict)
        yield obj
        if phase(obj) == wanted:
            return
    raise AssertionError(f"phase {wanted} not reached in {limit} ticks; at {phase(cluster.object())}")


def lifecycle() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object of one ModelDeployment's life, each with a label saying where it is.

    Labels: first deploy, rollout of 2.0 that passes (with a pause), rollout of 3.0 that fails and is
    rolled back, a roll forward to 3.1, a retry of a rejected version, and an invalid spec."""
    cluster = Cluster(spec=base_spec("1.0.0"))
    yield "new", cluster.object()
    for obj in run_until(cluster, "Healthy"):
        yield "first-deploy", obj
    cluster.edit(set_version("2.0.0"))
    yield "edited-not-observed", cluster.object()
    for obj in run_until(cluster, "Progressing"):
        yield "rollout", obj
    cluster.edit(set_paused(True))
    yield "pause-requested", cluster.object()
    for obj in run_until(cluster, "Paused"):
        yield "pausing", obj
    yield "paused", cluster.tick()
    cluster.edit(set_paused(False))
    for obj in run_until(cluster, "Healthy"):
        yield "promotion", obj
    cluster.edit(set_version("3.0.0"))
    for obj in run_until(cluster, "RolledBack", verdict=Verdict.FAILED):
        yield "failing-rollout", obj
    yield "rolled-back", cluster.tick()
    cluster.edit(set_version("3.1.0"))
    yield "roll-forward-not-observed", cluster.object()
    for obj in run_until(cluster, "Healthy"):
        yield "roll-forward", obj
    cluster.edit(set_version("3.0.0"))
    for obj in run_until(cluster, "RolledBack"):
        yield "rejected-again", obj
    cluster.annotations["mlcanary.io/retry"] = "1"
    for obj in run_until(cluster, "Healthy"):
        yield "retry", obj
    yield (
        "invalid-spec",
        cluster.invalid(
            lambda spec: spec["rollout"].update(steps=[50, 20]),
            "spec.rollout.steps: steps must be strictly increasing (50 then 20)",
        ),
    )


# One recorded object per expected Argo CD health, picked from the lifecycle above.
RECORDINGS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "new-no-status": ("new", lambda o: True),
    "initializing": ("first-deploy", lambda o: phase(o) == "Initializing"),
    "healthy": ("first-deploy", lambda o: phase(o) == "Healthy"),
    "generation-not-observed": ("edited-not-observed", lambda o: True),
    "preparing": ("rollout", lambda o: phase(o) == "Preparing"),
    "progressing": ("rollout", lambda o: phase(o) == "Progressing"),
    "paused": ("paused", lambda o: phase(o) == "Paused"),
    "promoting": ("promotion", lambda o: phase(o) == "Promoting"),
    "rolling-back": ("failing-rollout", lambda o: phase(o) == "RollingBack"),
    "rolled-back": ("rolled-back", lambda o: phase(o) == "RolledBack"),
    "rolled-forward-not-observed": ("roll-forward-not-observed", lambda o: True),
    "invalid-spec": ("invalid-spec", lambda o: True),
}


def recordings() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for label, obj in lifecycle():
        for name, (wanted_label, predicate) in RECORDINGS.items():
            if name not in found and label == wanted_label and predicate(obj):
                found[name] = obj
    missing = sorted(set(RECORDINGS) - set(found))
    if missing:
        raise AssertionError(f"lifecycle never produced: {missing}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {RECORDED_DIR}")
    args = parser.parse_args()
    for name, obj in recordings().items():
        text = yaml.safe_dump(obj, sort_keys=False, width=100)
        if args.write:
            RECORDED_DIR.mkdir(exist_ok=True)
            (RECORDED_DIR / f"{name}.yaml").write_text(text)
        else:
            print(f"--- # {name}\n{text}", end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
