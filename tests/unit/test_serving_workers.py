"""Issue 15, item 2: the operator sizes the serving pod's worker processes from its CPU limit."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import spec_wire

from mlcanary import resources
from mlcanary.models import ModelDeploymentSpec, RevisionState, revision_name
from mlcanary.resources import Owner

OWNER = Owner(name="fraud-detector", namespace="ml", uid="uid-1")


def env_of(serving: dict[str, Any]) -> dict[str, str]:
    wire = spec_wire("2.0.0")
    wire["serving"].update(serving)
    spec = ModelDeploymentSpec.model_validate(wire)
    template = spec.revision_template()
    revision = RevisionState(revision=revision_name(OWNER.name, template), template=template)
    container = resources.deployment(OWNER, spec, revision, "canary", 1)["spec"]["template"]["spec"][
        "containers"
    ][0]
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names  # one value per variable
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize(
    ("cpu", "workers"),
    [("1", "1"), ("2", "2"), ("4", "4"), ("1500m", "1"), ("2500m", "2"), ("500m", "1"), ("1e3", "64")],
)
def test_workers_follow_the_cpu_limit(cpu: str, workers: str) -> None:
    env = env_of({"resources": {"limits": {"cpu": cpu, "memory": "1Gi"}}})
    assert env["MLCANARY_WORKERS"] == workers


def test_no_cpu_limit_means_the_servers_default() -> None:
    assert "MLCANARY_WORKERS" not in env_of(
        {"resources": {"requests": {"cpu": "2"}, "limits": {"memory": "1Gi"}}}
    )
    assert "MLCANARY_WORKERS" not in env_of({})


def test_the_users_own_setting_wins() -> None:
    env = env_of({"resources": {"limits": {"cpu": "4"}}, "env": [{"name": "MLCANARY_WORKERS", "value": "1"}]})
    assert env["MLCANARY_WORKERS"] == "1"


def test_quantities() -> None:
    assert resources.quantity("250m") == 0.25 and resources.quantity("2") == 2.0
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        resources.quantity("two")
