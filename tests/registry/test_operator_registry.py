"""The real operator on the emulator (under the chart's RBAC) following a real MLflow alias.

Two ModelDeployments follow the same alias, one Propose and one Apply; a third points at a registry
that is not there, with a bearer token from a Secret; a fourth names a Secret that does not exist. Moving the alias: the Propose one reports
pendingVersion and NewModelVersionAvailable and serves on; the Apply one has spec.model patched and
starts a canary within one poll interval and a tick, is promoted, and the outcome is written back
to the registry (tags, the promotion alias; the watched alias untouched). The unreachable one says
so in a condition and an Event, keeps serving, and its token appears nowhere."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from mlcanary_local.process import free_port
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.mlflow_registry import MlflowServer, register_bundle

from .conftest import alias_of, tags_of

# One worker runs them all (make test uses xdist --dist loadgroup): the session's MLflow servers start once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("mlflow")]

try:
    from integration.conftest import cluster, operator  # noqa: F401 - the shared harness's fixtures
    from integration.harness import Cluster, OperatorProcess, model_deployment
except ImportError:  # pragma: no cover
    pytest.skip("tests/integration harness not available", allow_module_level=True)

GOOD = {"error-rate": 0.001}
POLL = "10s"  # the smallest interval the CRD allows
TOKEN = "registry-token-never-logged"


def follower(name: str, mlflow: str, model: str, uri: str, **registry: Any) -> dict[str, Any]:
    manifest = model_deployment(name, "1.0.0")
    manifest["spec"]["model"]["uri"] = uri
    manifest["spec"]["model"]["registry"] = {
        "trackingUri": mlflow,
        "registeredModel": model,
        "alias": "champion",
        "pollInterval": POLL,
        **registry,
    }
    return manifest


def event_of(cluster: Cluster, operator: OperatorProcess, name: str, reason: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [e for e in cluster.events() if e["reason"] == reason and e["involvedObject"]["name"] == name]

    [event] = cluster.wait_for(found, f"{reason} on {name}", 10, operator)
    return event


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def test_alias_moves_propose_reports_apply_rolls_out_and_outcome_is_written_back(
    cluster: Cluster,
    operator: OperatorProcess,
    mlflow: MlflowServer,
    bundles: dict[str, BuildResult],
    model_name: str,
) -> None:
    first = register_bundle(mlflow, bundles["1.0.0"].path, model_name, alias="champion")
    uri = f"{mlflow.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{first.source.split(':', 1)[1].strip('/')}/"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "registry", "namespace": "default"},
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
        }
    )
    cluster.apply(follower("proposed", mlflow.tracking_uri, model_name, uri))
    cluster.apply(
        follower(
            "applied", mlflow.tracking_uri, model_name, uri, updatePolicy="Apply", promotionAlias="production"
        )
    )
    nowhere = f"http://127.0.0.1:{free_port()}"
    cluster.apply(
        follower(
            "unreachable",
            nowhere,
            model_name,
            uri,
            bearerTokenSecret={"name": "registry", "key": "token"},
            timeout="1s",
        )
    )
    cluster.apply(follower("nosecret", mlflow.tracking_uri, model_name, uri, basicAuthSecret="absent"))
    for name in ("proposed", "applied"):
        cluster.wait_for(
            lambda n=name: (
                cluster.status(n).get("phase") == "Healthy"
                and (cluster.status(n).get("registry") or {}).get("resolvedVersion") == "1"
            ),
            f"{name} healthy at registry version 1",
            60,
            operator,
        )
        status = cluster.status(name)
        assert condition(status, "RegistryReachable")["status"] == "True"
        assert "pendingVersion" not in status["registry"]

    # The registry is down for this one: named in a condition and an Event; the model keeps serving.
    status = cluster.wait_for(
        lambda: (
            (s := cluster.status("unreachable")).get("phase") == "Healthy"
            and condition(s, "RegistryReachable").get("status") == "False"
            and s
        ),
        "unreachable reported",
        60,
        operator,
    )
    assert condition(status, "RegistryReachable")["reason"] == "Unreachable"
    assert nowhere in status["registry"]["error"]
    # Events are posted after the status write: wait for it rather than race it.
    event_of(cluster, operator, "unreachable", "RegistryUnreachable")

    # Its Secret does not exist: named (not its data), the model keeps serving.
    status = cluster.wait_for(
        lambda: (
            (s := cluster.status("nosecret")).get("phase") == "Healthy"
            and condition(s, "RegistryReachable").get("status") == "False"
            and s
        ),
        "missing Secret reported",
        60,
        operator,
    )
    assert condition(status, "RegistryReachable")["reason"] == "CredentialsUnavailable"
    assert "default/absent" in status["registry"]["error"]

    # A new version, and the alias moves to it.
    cluster.set_metrics({"1.1.0": GOOD})
    register_bundle(mlflow, bundles["1.1.0"].path, model_name)
    moved_at = time.monotonic()
    mlflow.call("POST", "registered-models/alias", {"name": model_name, "alias": "champion", "version": "2"})

    def canary_started() -> bool:
        return (
            cluster.status("applied").get("canaryVersion") == "1.1.0"
            or cluster.status("applied").get("stableVersion") == "1.1.0"
        )

    cluster.wait_for(canary_started, "Apply: canary of 1.1.0 started", 40, operator, interval=0.1)
    started_after = time.monotonic() - moved_at
    print(f"\nFIGURE alias moved -> canary started: {started_after:.2f} s (poll interval {POLL}, tick 0.3 s)")
    assert started_after <= 10 + 0.3 + 2.0  # poll interval + one tick, and the test's own polling

    applied = cluster.mdep("applied")
    assert applied["spec"]["model"]["version"] == "1.1.0"
    assert applied["spec"]["model"]["sha256"] == bundles["1.1.0"].manifest_sha256
    assert applied["spec"]["model"]["uri"].startswith(
        f"{mlflow.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/"
    )

    status = cluster.wait_for(
        lambda: (s := cluster.status("proposed")).get("registry", {}).get("pendingVersion") == "1.1.0" and s,
        "Propose: pendingVersion 1.1.0",
        20,
        operator,
    )
    assert status["stableVersion"] == "1.0.0" and "canaryVersion" not in status
    assert cluster.mdep("proposed")["spec"]["model"]["version"] == "1.0.0"  # the spec stays the truth
    proposal = event_of(cluster, operator, "proposed", "NewModelVersionAvailable")
    assert "1.1.0" in proposal["message"]

    cluster.wait_for(
        lambda: (
            cluster.status("applied").get("stableVersion") == "1.1.0"
            and cluster.status("applied").get("phase") == "Healthy"
        ),
        "Apply: 1.1.0 promoted",
        60,
        operator,
    )
    cluster.wait_for(
        lambda: tags_of(mlflow, model_name, "2").get("mlcanary.io/outcome") == "promoted",
        "outcome written back",
        20,
        operator,
    )
    tags = tags_of(mlflow, model_name, "2")
    assert tags["mlcanary.io/model-deployment"] == "default/applied"
    assert alias_of(mlflow, model_name, "production")["version"] == "2"
    assert alias_of(mlflow, model_name, "champion")["version"] == "2"  # the watched alias: untouched
    # The serving pods of a registry bundle are told where MLflow is (credentials: unit tests).
    stable = cluster.status("applied")["stable"]["revision"]
    [serving] = [d for d in cluster.deployments() if d["metadata"]["name"] == stable]
    [container] = serving["spec"]["template"]["spec"]["containers"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": mlflow.tracking_uri} in container["env"]

    assert cluster.status("unreachable").get("phase") == "Healthy"
    for name in ("proposed", "applied", "unreachable", "nosecret"):
        assert TOKEN not in str(cluster.mdep(name))
    assert TOKEN not in operator.logs()
    assert TOKEN not in str(cluster.events())


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_refused_credentials_are_reported_and_a_fixed_secret_is_picked_up(
    cluster: Cluster,
    operator: OperatorProcess,
    mlflow_auth_server: tuple[str, str],
    bundles: dict[str, BuildResult],
    model_name: str,
) -> None:
    """MLflow's own basic-auth app: a wrong password in the Secret is Unauthorized (condition, Event,
    the model keeps serving, the password nowhere); correcting the Secret is picked up within a poll
    interval or two, though nothing watches Secrets and the object is idle."""
    url, password = mlflow_auth_server
    wrong = "wrong-password-never-logged"
    admin = MlflowServer(url, username="admin", password=password)
    first = register_bundle(admin, bundles["1.0.0"].path, model_name, alias="champion")
    uri = admin.download_url(first.source)
    cluster.apply(secret("mlflow-basic", {"username": "admin", "password": wrong}))
    cluster.apply(follower("guarded", url, model_name, uri, basicAuthSecret="mlflow-basic"))
    status = cluster.wait_for(
        lambda: (
            (s := cluster.status("guarded")).get("phase") == "Healthy"
            and condition(s, "RegistryReachable").get("reason") == "Unauthorized"
            and s
        ),
        "refused credentials reported",
        60,
        operator,
    )
    assert "refused the credentials (HTTP 401)" in status["registry"]["error"]
    event_of(cluster, operator, "guarded", "RegistryUnreachable")

    cluster.apply(secret("mlflow-basic", {"username": "admin", "password": password}))
    fixed_at = time.monotonic()
    status = cluster.wait_for(
        lambda: (
            (s := cluster.status("guarded")).get("registry", {}).get("resolvedVersion") == first.version and s
        ),
        "fixed Secret picked up",
        40,
        operator,
    )
    print(
        f"\nFIGURE fixed Secret -> alias resolved: {time.monotonic() - fixed_at:.1f} s (poll interval {POLL})"
    )
    assert condition(status, "RegistryReachable")["status"] == "True"
    [deployment] = cluster.deployments()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": "mlflow-basic", "key": "password"}}
    for text in (wrong, password):
        assert text not in str(cluster.mdep("guarded")) and text not in str(cluster.events())
        assert text not in operator.logs()
