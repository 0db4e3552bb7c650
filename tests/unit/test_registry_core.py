"""spec.model.registry, the pure core: semantic-version mapping, fetchable URIs, and the
Propose / Apply / problem decisions as table tests (the examples in registry/core.py's docstring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from mlcanary.models import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RegistryStatus,
    RolloutOutcome,
    RolloutRecord,
)
from mlcanary.registry import core
from mlcanary.registry.core import Poll, ProblemKind, RegistryProblem, ResolvedVersion

NOW = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
TRACKING = "http://mlflow.ml.svc:5000"


def spec(version: str = "1.3.0", **registry: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {
                "name": "fraud",
                "version": version,
                "uri": "s3://models/fraud/1.3.0/",
                "registry": {
                    "trackingUri": TRACKING,
                    "registeredModel": "fraud",
                    "alias": "champion",
                    **registry,
                },
            }
        }
    )


def resolved(number: str = "7", semver: str = "1.4.0", sha: str | None = None) -> Poll:
    uri = f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/run{number}/artifacts/bundle/"
    return Poll(NOW, ResolvedVersion(number, semver, uri, sha))


def problem(kind: ProblemKind = ProblemKind.UNAUTHORIZED, message: str = "HTTP 401") -> Poll:
    return Poll(NOW, RegistryProblem(kind, message))


def reasons(events: list[Any]) -> list[str]:
    return [str(e.reason) for e in events]


def condition(status: ModelDeploymentStatus) -> tuple[str, str]:
    [found] = [c for c in status.conditions if c.type == "RegistryReachable"]
    return found.status, found.reason


# ------------------------------------------------------------------------------- version mapping


@pytest.mark.parametrize(
    ("number", "tags", "expected"),
    [
        ("7", {"mlcanary.io/version": "1.4.0"}, "1.4.0"),
        ("7", {"mlcanary.io/version": "2.0.0-rc.1+build.5"}, "2.0.0-rc.1+build.5"),
        ("7", {"mlcanary.io/version": "v1.4"}, "7.0.0"),  # not SemVer: the number decides
        ("7", {"mlcanary.io/version": "01.2.3"}, "7.0.0"),
        ("7", {"mlcanary.io/version": "1." + "1" * 70 + ".0"}, "7.0.0"),  # over 63 characters
        ("12", {}, "12.0.0"),
        ("1", {"other": "1.0.0"}, "1.0.0"),
    ],
)
def test_semantic_version_of_an_mlflow_version(number: str, tags: dict[str, str], expected: str) -> None:
    assert core.model_version_for(number, tags) == expected
    ModelDeploymentSpec.model_validate(  # and it is always a version the spec accepts
        {"model": {"name": "m", "version": expected, "uri": "file:///m"}}
    )


@pytest.mark.parametrize(
    ("artifact", "expected"),
    [
        (
            "mlflow-artifacts:/1/abc/artifacts/bundle",
            f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/bundle/",
        ),
        (
            "mlflow-artifacts://other:5000/1/abc/artifacts/bundle",
            f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/bundle/",
        ),
        ("s3://bucket/fraud/7", "s3://bucket/fraud/7"),
        ("https://store.example/fraud-7.tar.gz", "https://store.example/fraud-7.tar.gz"),
        ("file:///models/fraud/7", "file:///models/fraud/7"),
        ("mlflow-artifacts:/", None),
        ("runs:/abc/model", None),
        ("dbfs:/databricks/mlflow/7", None),
        ("", None),
    ],
)
def test_fetchable_uri(artifact: str, expected: str | None) -> None:
    assert core.fetchable_uri(TRACKING + "/", artifact) == expected


def test_sha256_tag_is_taken_only_when_it_is_a_digest() -> None:
    digest = "a" * 64
    assert core.sha256_for({"mlcanary.io/sha256": digest}) == digest
    assert core.sha256_for({"mlcanary.io/sha256": "abc"}) is None


# ------------------------------------------------------------------------------------ the fields


def test_the_watched_alias_can_never_be_the_promotion_alias() -> None:
    with pytest.raises(ValidationError, match="promotionAlias must differ from alias"):
        spec(promotionAlias="champion")
    with pytest.raises(ValidationError, match="at most one of bearerTokenSecret and basicAuthSecret"):
        spec(bearerTokenSecret={"name": "t", "key": "token"}, basicAuthSecret="basic")


@pytest.mark.parametrize("interval", ["9s", "25h", "1"])
def test_poll_interval_is_bounded(interval: str) -> None:
    with pytest.raises(ValidationError):
        spec(pollInterval=interval)


def test_credentials_cannot_hide_in_the_tracking_uri() -> None:
    with pytest.raises(ValidationError):
        spec(trackingUri="https://user:secret@mlflow.example")


def test_the_registry_block_is_not_part_of_a_revision() -> None:
    a = spec(pollInterval="1m").revision_template().revision_hash()
    b = spec(pollInterval="5m", updatePolicy="Apply").revision_template().revision_hash()
    plain = ModelDeploymentSpec.model_validate(
        {"model": {"name": "fraud", "version": "1.3.0", "uri": "s3://models/fraud/1.3.0/"}}
    )
    assert a == b == plain.revision_template().revision_hash()


# ------------------------------------------------------------------------------------- decisions


def test_propose_reports_a_pending_version_once_and_leaves_the_spec() -> None:
    status, events, patch = core.decide(spec(), ModelDeploymentStatus(), resolved(), NOW, 1)
    assert patch is None
    assert status.registry is not None and status.registry.pending_version == "1.4.0"
    assert status.registry.resolved_version == "7" and status.registry.known_versions == {"1.4.0": "7"}
    assert reasons(events) == ["NewModelVersionAvailable"]
    assert "1.4.0" in events[0].message and "1.3.0" in events[0].message
    assert condition(status) == ("True", "AliasResolved")
    again, events, _ = core.decide(spec(), status, resolved(), NOW + timedelta(minutes=1), 1)
    assert events == [] and again.registry is not None and again.registry.pending_version == "1.4.0"


def test_propose_clears_the_pending_version_once_the_spec_serves_it() -> None:
    status, _, _ = core.decide(spec(), ModelDeploymentStatus(), resolved(), NOW, 1)
    status, events, patch = core.decide(spec("1.4.0"), status, resolved(), NOW, 2)
    assert status.registry is not None and status.registry.pending_version is None
    assert events == [] and patch is None


def test_apply_patches_the_model_once_per_registry_version() -> None:
    digest = "b" * 64
    status, events, patch = core.decide(
        spec(updatePolicy="Apply"), ModelDeploymentStatus(), resolved(sha=digest), NOW, 1
    )
    assert patch == core.PatchModel("1.4.0", resolved().result.uri, digest)  # type: ignore[union-attr]
    assert patch.merge_patch() == {
        "spec": {"model": {"version": "1.4.0", "uri": patch.uri, "sha256": digest}}
    }
    assert reasons(events) == ["ModelVersionApplied"]
    assert status.registry is not None and status.registry.applied_version == "7"
    # The patch has not reached the body yet, or someone set the spec back by hand: reported, not fought.
    status, events, patch = core.decide(spec(updatePolicy="Apply"), status, resolved(sha=digest), NOW, 1)
    assert patch is None
    assert status.registry is not None and status.registry.pending_version == "1.4.0"
    # The alias moves on: applied again.
    _, events, patch = core.decide(spec(updatePolicy="Apply"), status, resolved("8", "1.5.0"), NOW, 1)
    assert patch is not None and patch.version == "1.5.0" and reasons(events) == ["ModelVersionApplied"]


def test_apply_records_a_version_the_spec_already_serves() -> None:
    status, events, patch = core.decide(
        spec("1.4.0", updatePolicy="Apply"), ModelDeploymentStatus(), resolved(), NOW, 1
    )
    assert patch is None and events == []
    assert status.registry is not None and status.registry.applied_version == "7"


def test_a_problem_is_a_condition_and_one_event_per_message_and_changes_nothing_else() -> None:
    status, _, _ = core.decide(spec(), ModelDeploymentStatus(), resolved(), NOW, 1)
    failing, events, patch = core.decide(spec(updatePolicy="Apply"), status, problem(), NOW, 1)
    assert patch is None and reasons(events) == ["RegistryUnreachable"]
    assert condition(failing) == ("False", "Unauthorized")
    assert failing.registry is not None and "HTTP 401" in (failing.registry.error or "")
    assert failing.registry.resolved_version == "7" and failing.registry.pending_version == "1.4.0"
    _, events, _ = core.decide(spec(), failing, problem(), NOW, 1)
    assert events == []
    _, events, _ = core.decide(spec(), failing, problem(ProblemKind.UNREACHABLE, "timed out"), NOW, 1)
    assert reasons(events) == ["RegistryUnreachable"]
    healed, events, _ = core.decide(spec(), failing, resolved(), NOW, 1)
    assert condition(healed) == ("True", "AliasResolved") and healed.registry is not None
    assert healed.registry.error is None and events == []


def test_no_poll_yet_changes_nothing_and_removing_the_block_drops_the_report() -> None:
    status, events, patch = core.decide(spec(), ModelDeploymentStatus(), None, NOW, 1)
    assert events == [] and patch is None and status.registry == RegistryStatus(alias="champion")
    status, _, _ = core.decide(spec(), status, resolved(), NOW, 1)
    plain = ModelDeploymentSpec.model_validate(
        {"model": {"name": "fraud", "version": "1.3.0", "uri": "file:///m"}}
    )
    dropped, _, _ = core.decide(plain, status, None, NOW, 2)
    assert dropped.registry is None and not [c for c in dropped.conditions if c.type == "RegistryReachable"]


def test_known_versions_are_bounded() -> None:
    status = ModelDeploymentStatus()
    for n in range(1, 40):
        status, _, _ = core.decide(spec(), status, resolved(str(n), f"{n}.0.0"), NOW, 1)
    assert status.registry is not None and len(status.registry.known_versions) == 16
    assert status.registry.known_versions["39.0.0"] == "39"


# ------------------------------------------------------------------------------------ write-back


def record(version: str, outcome: RolloutOutcome, minute: int = 0) -> RolloutRecord:
    return RolloutRecord(
        version=version,
        from_version="1.3.0",
        outcome=outcome,
        reason="why",
        finished_at=NOW + timedelta(minutes=minute),
    )


def test_write_backs_cover_promotions_and_rollbacks_of_known_versions_once() -> None:
    registry = spec(promotionAlias="production").model.registry
    assert registry is not None
    status = ModelDeploymentStatus(
        registry=RegistryStatus(known_versions={"1.4.0": "7", "1.5.0": "8"}),
        history=[
            record("1.4.0", RolloutOutcome.ROLLED_BACK, 1),
            record("1.5.0", RolloutOutcome.PROMOTED, 2),
            record("1.6.0", RolloutOutcome.PROMOTED, 3),  # not from the registry
            record("1.5.0", RolloutOutcome.SUPERSEDED, 4),
        ],
    )
    pending = core.write_backs(registry, status)
    assert [(w.registry_version, w.outcome, w.set_alias) for w in pending] == [
        ("7", "rolled-back", None),
        ("8", "promoted", "production"),
    ]
    assert pending[1].tags("ml/fraud") == {
        "mlcanary.io/outcome": "promoted",
        "mlcanary.io/reason": "why",
        "mlcanary.io/model-deployment": "ml/fraud",
    }
    done = core.record_written(status, [w.mark for w in pending])
    assert core.write_backs(registry, done) == []


# ------------------------------------------------------------------------------- serving pods


def pod_env(manifest_spec: ModelDeploymentSpec) -> dict[str, Any]:
    from mlcanary import resources
    from mlcanary.models import RevisionState

    revision = RevisionState(revision="fraud-v1-3-0-abc", template=manifest_spec.revision_template())
    owner = resources.Owner(name="fraud", namespace="ml", uid="u-1")
    deployment = resources.deployment(owner, manifest_spec, revision, "stable", 2)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def on_registry(
    version: str = "1.3.0", env: list[dict[str, str]] | None = None, **registry: Any
) -> ModelDeploymentSpec:
    base = spec(version, **registry).to_wire()
    base["model"]["uri"] = f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/bundle/"
    if env is not None:
        base["serving"] = {"env": env}
    return ModelDeploymentSpec.model_validate(base)


def test_pods_of_a_registry_bundle_get_mlflow_variables_and_secret_references() -> None:
    env = pod_env(on_registry(bearerTokenSecret={"name": "mlflow", "key": "token"}))
    assert env["MLFLOW_TRACKING_URI"] == TRACKING
    assert env["MLFLOW_TRACKING_TOKEN"] == {"secretKeyRef": {"name": "mlflow", "key": "token"}}
    env = pod_env(on_registry(basicAuthSecret="mlflow-basic"))
    assert env["MLFLOW_TRACKING_USERNAME"] == {"secretKeyRef": {"name": "mlflow-basic", "key": "username"}}
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": "mlflow-basic", "key": "password"}}
    # The user's own serving.env wins; a bundle stored elsewhere gets nothing (its pods do not restart).
    env = pod_env(on_registry(env=[{"name": "MLFLOW_TRACKING_URI", "value": "http://proxy:80"}]))
    assert env["MLFLOW_TRACKING_URI"] == "http://proxy:80"
    assert not any(name.startswith("MLFLOW_") for name in pod_env(spec()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pollInterval": "1x"}, "spec.model.registry.pollInterval: '1x' is not a duration such as 30s"),
        ({"pollInterval": "5s"}, "spec.model.registry.pollInterval: 5s is outside 10s-24h"),
        ({"promotionAlias": "champion"}, "spec.model.registry: promotionAlias must differ from alias"),
        ({"alias": "no spaces"}, "spec.model.registry.alias:"),
    ],
)
def test_an_invalid_registry_block_is_named_in_spec_valid(change: dict[str, str], message: str) -> None:
    from mlcanary.reconcile import read_spec
    from mlcanary.settings import Settings

    registry = {"trackingUri": TRACKING, "registeredModel": "fraud", "alias": "champion", **change}
    obj = {
        "metadata": {"name": "fraud"},
        "spec": {"model": {"name": "f", "version": "1.0.0", "uri": "file:///m", "registry": registry}},
    }
    spec_, problem = read_spec(obj, Settings.from_env({}))
    assert spec_ is None and problem is not None and problem.startswith(message), problem
