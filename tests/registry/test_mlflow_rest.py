"""The registry's REST API as the operator, the serving pods and `mlcanary bundle register` use it,
against a real MLflow tracking server: alias resolution, SemVer mapping, artifact upload and
download through the mlflow-artifacts HTTP API, tags and aliases written back, failures named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcanary.registry.client import MlflowClient
from mlcanary.registry.core import ProblemKind
from mlcanary.registry.poller import RegistryPoller
from mlcanary_local.process import free_port
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.cli import main as bundle_cli
from mlcanary_serving.fetch import fetch_bundle
from mlcanary_serving.mlflow_registry import MlflowError, MlflowServer, register_bundle

from .conftest import alias_of, tags_of

# One worker runs them all (make test uses xdist --dist loadgroup): the session's MLflow servers start once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("mlflow")]


async def test_register_then_resolve_the_alias_and_fetch_the_bundle(
    mlflow: MlflowServer, bundles: dict[str, BuildResult], model_name: str, tmp_path: Path
) -> None:
    first = register_bundle(mlflow, bundles["1.0.0"].path, model_name, alias="champion")
    second = register_bundle(mlflow, bundles["1.1.0"].path, model_name)
    assert (first.version, second.version) == ("1", "2")
    assert alias_of(mlflow, model_name, "champion")["version"] == "1"
    assert tags_of(mlflow, model_name, "2")["mlcanary.io/version"] == "1.1.0"

    client = MlflowClient(mlflow.tracking_uri)
    try:
        resolved = await client.resolve(model_name, "champion")
        assert client.requests == 1  # the source is an mlflow-artifacts: location: no second request
    finally:
        await client.close()
    assert resolved.registry_version == "1" and resolved.model_version == "1.0.0"
    assert resolved.sha256 == bundles["1.0.0"].manifest_sha256
    assert resolved.uri.startswith(f"{mlflow.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/")

    # The serving pod's side: the URI the operator writes, verified against the pinned sha256.
    bundle = fetch_bundle(resolved.uri, tmp_path / "cache", expected_sha256=resolved.sha256)
    assert bundle.manifest.version == "1.0.0"


def test_serving_resolves_models_and_mlflow_artifacts_uris(
    mlflow: MlflowServer,
    bundles: dict[str, BuildResult],
    model_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = register_bundle(mlflow, bundles["1.1.0"].path, model_name, alias="champion")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.tracking_uri)
    by_alias = fetch_bundle(f"models:/{model_name}@champion", tmp_path / "a")
    by_number = fetch_bundle(f"models:/{model_name}/{done.version}", tmp_path / "b")
    by_source = fetch_bundle(done.source, tmp_path / "c")
    assert {b.manifest.version for b in (by_alias, by_number, by_source)} == {"1.1.0"}
    assert by_alias.manifest_sha256 == bundles["1.1.0"].manifest_sha256
    with pytest.raises(MlflowError, match="alias nobody not found"):
        fetch_bundle(f"models:/{model_name}@nobody", tmp_path / "d")


async def test_a_version_without_the_semver_tag_maps_to_n_0_0(
    mlflow: MlflowServer, bundles: dict[str, BuildResult], model_name: str
) -> None:
    done = register_bundle(mlflow, bundles["1.0.0"].path, model_name)
    # A version registered by something else (no mlcanary.io/version tag), from the same run.
    created = mlflow.call(
        "POST", "model-versions/create", {"name": model_name, "source": done.source, "run_id": done.run_id}
    )["model_version"]
    mlflow.call(
        "POST",
        "registered-models/alias",
        {"name": model_name, "alias": "champion", "version": created["version"]},
    )
    client = MlflowClient(mlflow.tracking_uri)
    try:
        resolved = await client.resolve(model_name, "champion")
    finally:
        await client.close()
    assert resolved.registry_version == "2" and resolved.model_version == "2.0.0" and resolved.sha256 is None


async def test_write_back_tags_and_the_promotion_alias(
    mlflow: MlflowServer, bundles: dict[str, BuildResult], model_name: str
) -> None:
    register_bundle(mlflow, bundles["1.0.0"].path, model_name, alias="champion")
    client = MlflowClient(mlflow.tracking_uri)
    try:
        await client.set_tag(model_name, "1", "mlcanary.io/outcome", "promoted")
        await client.set_tag(model_name, "1", "mlcanary.io/reason", "every step passed")
        await client.set_alias(model_name, "production", "1")
    finally:
        await client.close()
    tags = tags_of(mlflow, model_name, "1")
    assert tags["mlcanary.io/outcome"] == "promoted" and tags["mlcanary.io/reason"] == "every step passed"
    assert alias_of(mlflow, model_name, "production")["version"] == "1"
    assert alias_of(mlflow, model_name, "champion")["version"] == "1"  # the watched alias never moves


async def test_failures_are_named_without_secrets(mlflow: MlflowServer, model_name: str) -> None:
    client = MlflowClient(mlflow.tracking_uri)
    try:
        with pytest.raises(Exception) as missing:
            await client.resolve(model_name, "champion")
    finally:
        await client.close()
    assert missing.value.problem.kind == ProblemKind.NOT_FOUND  # type: ignore[attr-defined]

    nowhere = MlflowClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(Exception) as refused:
            await nowhere.resolve(model_name, "champion")
    finally:
        await nowhere.close()
    problem = refused.value.problem  # type: ignore[attr-defined]
    assert problem.kind == ProblemKind.UNREACHABLE and "cannot reach" in problem.message


async def test_one_poll_loop_per_alias_however_many_follow_it(
    mlflow: MlflowServer, bundles: dict[str, BuildResult], model_name: str
) -> None:
    import asyncio

    from mlcanary.registry.client import Credentials

    register_bundle(mlflow, bundles["1.0.0"].path, model_name, alias="champion")
    register_bundle(mlflow, bundles["1.1.0"].path, model_name, alias="challenger")
    poller = RegistryPoller()
    woken: list[str] = []
    key = (mlflow.tracking_uri, model_name, "champion", Credentials().fingerprint())
    try:
        for n in range(50):
            poller.subscribe(
                f"uid-{n}",
                key,
                Credentials(),
                interval=3600,
                timeout=10,
                wake=lambda n=n: woken.append(f"uid-{n}"),
                config="c",
            )
        other = (mlflow.tracking_uri, model_name, "challenger", Credentials().fingerprint())
        poller.subscribe(
            "uid-other", other, Credentials(), interval=3600, timeout=10, wake=lambda: None, config="c"
        )
        for _ in range(200):
            if poller.latest("uid-0") is not None and poller.latest("uid-other") is not None:
                break
            await asyncio.sleep(0.05)
        assert poller.loops() == 2
        # 51 subscribers, two aliases: two requests, one per alias, and every follower woken once.
        assert poller.requests() == 2
        assert sorted(woken) == sorted(f"uid-{n}" for n in range(50))
        assert poller.latest("uid-7").result.model_version == "1.0.0"  # type: ignore[union-attr]
        assert poller.latest("uid-other").result.model_version == "1.1.0"  # type: ignore[union-attr]
        for n in range(50):
            poller.unsubscribe(f"uid-{n}")
        assert poller.loops() == 1
    finally:
        await poller.stop()


def test_bundle_register_command(
    mlflow: MlflowServer, bundles: dict[str, BuildResult], model_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bundle", "register", str(bundles["1.0.0"].path), "--model", model_name, "--alias", "champion"]
    assert bundle_cli([*argv, "--tracking-uri", mlflow.tracking_uri]) == 0
    assert f"registered {model_name} version 1 (bundle 1.0.0)" in capsys.readouterr().out
    assert alias_of(mlflow, model_name, "champion")["version"] == "1"
    assert bundle_cli([*argv, "--tracking-uri", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "cannot reach" in capsys.readouterr().err
