"""The official ``kubernetes`` client against the emulator (sync, in a background-thread emulator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_kit import deployment, wait_until, widget, widget_crd
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from kube_emulator import EmulatorThread


@pytest.fixture
def api(emu_thread: EmulatorThread) -> Iterator[client.ApiClient]:
    with client.ApiClient(_admin_config(emu_thread)) as api_client:
        yield api_client


def _admin_config(emu: EmulatorThread) -> client.Configuration:
    configuration = client.Configuration(host=emu.url)
    configuration.api_key = {"authorization": f"Bearer {emu.admin_token}"}
    return configuration


def test_kubeconfig_works_with_the_client_loader(emu_thread: EmulatorThread, kubeconfig: Path) -> None:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    assert configuration.host == emu_thread.url
    with client.ApiClient(configuration) as api_client:
        names = [n.metadata.name for n in client.CoreV1Api(api_client).list_namespace().items]
        assert "default" in names
        assert client.VersionApi(api_client).get_code().major == "1"


def test_core_crud_and_errors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "v"}}
    )
    assert created.metadata.uid and created.metadata.resource_version

    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert caught.value.status == 409

    merged = core.patch_namespaced_config_map("a", "default", {"data": {"k2": "v2"}})  # strategic merge
    assert merged.data == {"k": "v", "k2": "v2"}
    jsonpatched = core.patch_namespaced_config_map("a", "default", [{"op": "remove", "path": "/data/k"}])
    assert jsonpatched.data == {"k2": "v2"}

    stale = created
    stale.data = {"lost": "update"}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_config_map("a", "default", stale)
    assert caught.value.status == 409

    assert [
        c.metadata.name for c in core.list_namespaced_config_map("default", label_selector="app=x").items
    ] == ["a"]
    assert (
        core.list_config_map_for_all_namespaces(field_selector="metadata.name=a").items[0].metadata.namespace
        == "default"
    )
    core.delete_namespaced_config_map("a", "default")
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map("a", "default")
    assert caught.value.status == 404


def test_custom_objects_status_and_validation(api: client.ApiClient) -> None:
    client.ApiextensionsV1Api(api).create_custom_resource_definition(widget_crd())
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", widget("w"))
    assert created["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "default", "widgets", "w", {"status": {"phase": "Ready"}}
    )
    assert patched["status"] == {"phase": "Ready"} and patched["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w", {"spec": {"size": 99}}
        )
    assert caught.value.status == 422
    assert "spec.size" in caught.value.body
    custom.delete_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")
    assert custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")["items"] == []


def test_deployment_status_from_the_controller(emu_thread: EmulatorThread, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    emu_thread.set_readiness("default", "canary", "never")
    apps.create_namespaced_deployment("default", deployment("canary", replicas=2))
    apps.create_namespaced_deployment("default", deployment("stable", replicas=2))

    def observed(name: str) -> client.V1DeploymentStatus | None:
        dep = apps.read_namespaced_deployment_status(name, "default")
        return (
            dep.status if dep.status and dep.status.observed_generation == dep.metadata.generation else None
        )

    assert wait_until(lambda: observed("stable")).ready_replicas == 2
    canary = wait_until(lambda: observed("canary"))
    assert canary.ready_replicas is None and canary.unavailable_replicas == 2


def test_watch_streams_and_410(emu_thread: EmulatorThread, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    for name in ("a", "b"):
        core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    core.delete_namespaced_config_map("a", "default")

    stream = watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=1
    )
    seen = [(event["type"], event["object"].metadata.name) for event in stream]
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]

    with EmulatorThread(history_size=3) as small, client.ApiClient(_admin_config(small)) as small_api:
        small_core = client.CoreV1Api(small_api)
        for i in range(6):
            small_core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as caught:
            list(
                watch.Watch().stream(
                    small_core.list_namespaced_config_map, "default", resource_version="1", timeout_seconds=1
                )
            )
        assert caught.value.status == 410
