"""API semantics over real HTTP: discovery, CRUD, concurrency, generation, patches, status, selectors."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from emulator_kit import (
    APPLY,
    CM,
    CRDS,
    DEPLOYS,
    JSON_PATCH,
    MERGE,
    STRATEGIC,
    WIDGETS,
    Http,
    admin_headers,
    configmap,
    deployment,
    widget,
    widget_crd,
)

from kube_emulator import KubernetesEmulator

# --------------------------------------------------------------------------------------- discovery


async def test_server_binds_loopback_on_an_ephemeral_port(emu: KubernetesEmulator) -> None:
    assert emu.url.startswith("http://127.0.0.1:")
    assert int(emu.url.rsplit(":", 1)[1]) > 0
    async with KubernetesEmulator() as other:
        assert other.url != emu.url


async def test_discovery_documents(http: Http) -> None:
    version = await http.ok("GET", "/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    assert (await http.ok("GET", "/api"))["versions"] == ["v1"]
    core = await http.ok("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    for plural in ("namespaces", "pods", "services", "secrets", "configmaps", "events", "serviceaccounts"):
        assert plural in by_name
    assert by_name["namespaces"]["namespaced"] is False
    assert by_name["configmaps"]["shortNames"] == ["cm"]
    assert "watch" in by_name["configmaps"]["verbs"]
    groups = {g["name"]: g for g in (await http.ok("GET", "/apis"))["groups"]}
    for group in ("apps", "events.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"):
        assert group in groups
    assert groups["apps"]["preferredVersion"]["groupVersion"] == "apps/v1"
    assert (await http.ok("GET", "/apis/apps"))["name"] == "apps"
    apps = {r["name"]: r for r in (await http.ok("GET", "/apis/apps/v1"))["resources"]}
    assert apps["deployments"]["kind"] == "Deployment"
    assert "deployments/status" in apps
    assert apps["deployments/scale"]["kind"] == "Scale"
    crds = {r["name"]: r for r in (await http.ok("GET", "/apis/apiextensions.k8s.io/v1"))["resources"]}
    assert crds["customresourcedefinitions"]["namespaced"] is False
    status, body = await http.get("/apis/nope.example.com/v1")
    assert status == 404 and body["kind"] == "Status"


async def test_unknown_resources_and_missing_objects_are_404_status(http: Http) -> None:
    for path in (
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/absent",
        "/api/v1/namespaces/default/configmaps/absent",
        "/apis/example.com/v1/namespaces/default/widgets",
        "/api/v1/namespaces/default/nonsense",
    ):
        status, body = await http.get(path)
        assert status == 404, path
        assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "NotFound"
        assert body["code"] == 404
    _, body = await http.get("/api/v1/namespaces/default/configmaps/absent")
    assert body["message"] == 'configmaps "absent" not found'
    assert body["details"] == {"name": "absent", "kind": "configmaps"}


# ---------------------------------------------------------------------------------------------- CRUD


async def test_create_get_list_replace_delete(http: Http) -> None:
    created = await http.ok("POST", CM, configmap("a", {"app": "x"}, k="v"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    assert created["kind"] == "ConfigMap" and created["apiVersion"] == "v1"

    status, body = await http.post(CM, configmap("a"))
    assert (status, body["reason"]) == (409, "AlreadyExists")

    fetched = await http.ok("GET", f"{CM}/a")
    assert fetched == created

    replaced = await http.ok("PUT", f"{CM}/a", {**created, "data": {"k": "v2"}})
    assert replaced["data"] == {"k": "v2"}
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert replaced["metadata"]["uid"] == meta["uid"]

    listing = await http.ok("GET", CM)
    assert listing["kind"] == "ConfigMapList"
    assert [i["metadata"]["name"] for i in listing["items"]] == ["a"]
    assert int(listing["metadata"]["resourceVersion"]) >= int(replaced["metadata"]["resourceVersion"])

    status, body = await http.delete(f"{CM}/a")
    assert status == 200 and body["status"] == "Success"
    status, _ = await http.get(f"{CM}/a")
    assert status == 404


async def test_resource_versions_are_global_and_increasing(http: Http) -> None:
    versions = []
    for i in range(3):
        versions.append(int((await http.ok("POST", CM, configmap(f"c{i}")))["metadata"]["resourceVersion"]))
    versions.append(int((await http.ok("POST", DEPLOYS, deployment("d")))["metadata"]["resourceVersion"]))
    assert versions == sorted(versions) and len(set(versions)) == 4


async def test_generate_name(http: Http) -> None:
    first = await http.ok("POST", CM, {"metadata": {"generateName": "gen-"}})
    second = await http.ok("POST", CM, {"metadata": {"generateName": "gen-"}})
    assert first["metadata"]["name"].startswith("gen-") and len(first["metadata"]["name"]) == 9
    assert first["metadata"]["name"] != second["metadata"]["name"]
    status, body = await http.post(CM, {"metadata": {}})
    assert status == 422 and body["reason"] == "Invalid"


async def test_invalid_names_labels_and_mismatched_namespace(http: Http) -> None:
    status, body = await http.post(CM, configmap("Upper_Case"))
    assert (status, body["details"]["causes"][0]["field"]) == (422, "metadata.name")
    status, body = await http.post(CM, configmap("ok", {"version": "1.2+build"}))
    assert (status, body["details"]["causes"][0]["field"]) == (422, "metadata.labels")
    status, body = await http.post(CM, {"metadata": {"name": "x", "namespace": "other"}})
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = await http.post(CM, {"kind": "Secret", "metadata": {"name": "x"}})
    assert (status, body["reason"]) == (400, "BadRequest")


async def test_namespaces_exist_implicitly_and_list(http: Http) -> None:
    names = {n["metadata"]["name"] for n in (await http.ok("GET", "/api/v1/namespaces"))["items"]}
    assert {"default", "kube-system"} <= names
    await http.ok("POST", "/api/v1/namespaces/team-a/configmaps", configmap("x"))
    ns = await http.ok("GET", "/api/v1/namespaces/team-a")
    assert ns["status"]["phase"] == "Active"
    await http.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "explicit"}})
    names = {n["metadata"]["name"] for n in (await http.ok("GET", "/api/v1/namespaces"))["items"]}
    assert {"team-a", "explicit"} <= names


async def test_namespace_deletion_removes_its_content(http: Http) -> None:
    await http.ok("POST", "/api/v1/namespaces/doomed/configmaps", configmap("a"))
    await http.ok(
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        {**configmap("held"), "metadata": {"name": "held", "finalizers": ["x/y"]}},
    )
    await http.ok("POST", "/api/v1/namespaces/kept/configmaps", configmap("a"))
    await http.ok("DELETE", "/api/v1/namespaces/doomed")
    status, _ = await http.get("/api/v1/namespaces/doomed/configmaps/a")
    assert status == 404
    ns = await http.ok("GET", "/api/v1/namespaces/doomed")
    assert ns["status"]["phase"] == "Terminating", (
        "a finalizer on the content keeps the namespace terminating"
    )
    status, body = await http.post("/api/v1/namespaces/doomed/configmaps", configmap("new"))
    assert (status, body["reason"]) == (403, "Forbidden")
    await http.ok(
        "PATCH",
        "/api/v1/namespaces/doomed/configmaps/held",
        {"metadata": {"finalizers": None}},
        content_type=MERGE,
    )
    status, _ = await http.get("/api/v1/namespaces/doomed")
    assert status == 404
    await http.ok("GET", "/api/v1/namespaces/kept/configmaps/a")


# ---------------------------------------------------------------------------------- concurrency


async def test_stale_resource_version_conflicts_on_put_and_every_patch_type(http: Http) -> None:
    created = await http.ok("POST", CM, configmap("a", k="1"))
    stale = created["metadata"]["resourceVersion"]
    await http.ok("PATCH", f"{CM}/a", {"data": {"k": "2"}}, content_type=MERGE)

    status, body = await http.put(f"{CM}/a", {**created, "data": {"k": "3"}})
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    for content_type, patch in (
        (MERGE, {"metadata": {"resourceVersion": stale}, "data": {"k": "4"}}),
        (STRATEGIC, {"metadata": {"resourceVersion": stale}, "data": {"k": "4"}}),
        (JSON_PATCH, [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale}]),
    ):
        status, body = await http.patch(f"{CM}/a", patch, content_type)
        assert (status, body["reason"]) == (409, "Conflict"), content_type
    assert (await http.ok("GET", f"{CM}/a"))["data"] == {"k": "2"}

    # Kopf's way: a JSON-patch `test` on resourceVersion fails with 422 when stale.
    status, body = await http.patch(
        f"{CM}/a",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
            {"op": "add", "path": "/data/x", "value": "y"},
        ],
        JSON_PATCH,
    )
    assert status == 422
    current = (await http.ok("GET", f"{CM}/a"))["metadata"]["resourceVersion"]
    patched = await http.ok(
        "PATCH",
        f"{CM}/a",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": current},
            {"op": "add", "path": "/data/x", "value": "y"},
        ],
        content_type=JSON_PATCH,
    )
    assert patched["data"] == {"k": "2", "x": "y"}


async def test_put_without_resource_version_is_unconditional_and_missing_object_404(http: Http) -> None:
    created = await http.ok("POST", CM, configmap("a", k="1"))
    body = {**created, "metadata": {"name": "a"}, "data": {"k": "9"}}
    assert (await http.ok("PUT", f"{CM}/a", body))["data"] == {"k": "9"}
    status, _ = await http.put(f"{CM}/missing", configmap("missing"))
    assert status == 404
    status, _ = await http.patch(f"{CM}/missing", {"data": {}})
    assert status == 404


async def test_no_op_writes_keep_the_resource_version(http: Http) -> None:
    created = await http.ok("POST", CM, configmap("a", k="1"))
    same = await http.ok("PATCH", f"{CM}/a", {"data": {"k": "1"}}, content_type=MERGE)
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# ------------------------------------------------------------------------------------ generation


async def test_generation_bumps_only_on_spec_changes(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    created = await http.ok("POST", WIDGETS, widget("w"))
    assert created["metadata"]["generation"] == 1
    labelled = await http.ok(
        "PATCH", f"{WIDGETS}/w", {"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    status_written = await http.ok("PATCH", f"{WIDGETS}/w/status", {"status": {"phase": "Ready"}})
    assert status_written["metadata"]["generation"] == 1
    assert int(status_written["metadata"]["resourceVersion"]) > int(labelled["metadata"]["resourceVersion"])
    spec_changed = await http.ok("PATCH", f"{WIDGETS}/w", {"spec": {"size": 4}})
    assert spec_changed["metadata"]["generation"] == 2
    again = await http.ok(
        "PUT", f"{WIDGETS}/w", {**spec_changed, "spec": {**spec_changed["spec"], "size": 5}}
    )
    assert again["metadata"]["generation"] == 3


async def test_generation_without_status_subresource_ignores_status(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd(status_subresource=False))
    await http.ok("POST", WIDGETS, widget("w"))
    written = await http.ok("PATCH", f"{WIDGETS}/w", {"status": {"phase": "Ready"}})
    assert written["status"] == {"phase": "Ready"}, "without the subresource, status is part of the object"
    assert written["metadata"]["generation"] == 1
    status, _ = await http.patch(f"{WIDGETS}/w/status", {"status": {"phase": "Failed"}})
    assert status == 404


# ------------------------------------------------------------------------------------------ patches


async def test_four_patch_types_on_a_deployment(http: Http) -> None:
    await http.ok("POST", DEPLOYS, deployment("web"))
    merged = await http.ok("PATCH", f"{DEPLOYS}/web", {"spec": {"replicas": 3}}, content_type=MERGE)
    assert merged["spec"]["replicas"] == 3

    strategic = await http.ok(
        "PATCH",
        f"{DEPLOYS}/web",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "main", "env": [{"name": "B", "value": "2"}]},
                            {"name": "sidecar", "image": "s:1"},
                        ]
                    }
                }
            }
        },
        content_type=STRATEGIC,
    )
    containers = {c["name"]: c for c in strategic["spec"]["template"]["spec"]["containers"]}
    assert containers["main"]["image"] == "model:1", "strategic merge keeps fields of merged list items"
    assert containers["main"]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert containers["sidecar"]["image"] == "s:1"

    merge_replaces = await http.ok(
        "PATCH",
        f"{DEPLOYS}/web",
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "model:2"}]}}}},
        content_type=MERGE,
    )
    assert merge_replaces["spec"]["template"]["spec"]["containers"] == [{"name": "main", "image": "model:2"}]

    json_patched = await http.ok(
        "PATCH",
        f"{DEPLOYS}/web",
        [{"op": "replace", "path": "/spec/replicas", "value": 2}],
        content_type=JSON_PATCH,
    )
    assert json_patched["spec"]["replicas"] == 2

    applied_yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {applied: 'yes'}\nspec:\n  replicas: 4\n"
    status, applied = await http.request(
        "PATCH", f"{DEPLOYS}/web", applied_yaml, content_type=APPLY, fieldManager="test"
    )
    assert status == 200
    assert applied["spec"]["replicas"] == 4 and applied["metadata"]["labels"]["applied"] == "yes"
    assert applied["spec"]["template"]["spec"]["containers"][0]["image"] == "model:2"

    status, body = await http.request("PATCH", f"{DEPLOYS}/web", applied_yaml, content_type=APPLY)
    assert (status, body["reason"]) == (400, "BadRequest"), "apply requires a field manager"
    status, body = await http.patch(f"{DEPLOYS}/web", {"spec": {}}, "application/json")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


async def test_server_side_apply_creates_missing_objects(http: Http) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: v\n"
    status, body = await http.request("PATCH", f"{CM}/ssa", text, content_type=APPLY, fieldManager="me")
    assert status == 201 and body["data"] == {"k": "v"}


async def test_strategic_merge_is_refused_for_custom_resources(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    await http.ok("POST", WIDGETS, widget("w"))
    status, body = await http.patch(f"{WIDGETS}/w", {"spec": {"size": 2}}, STRATEGIC)
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


async def test_dry_run_does_not_persist(http: Http) -> None:
    status, body = await http.request("POST", CM, configmap("dry"), dryRun="All")
    assert status == 201 and body["metadata"]["name"] == "dry"
    status, _ = await http.get(f"{CM}/dry")
    assert status == 404


# ----------------------------------------------------------------------------- status subresource


async def test_status_subresource_separates_spec_and_status(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    created = await http.ok("POST", WIDGETS, {**widget("w"), "status": {"phase": "Ready"}})
    assert "status" not in created, "status is dropped on create when it is a subresource"

    with_status = await http.ok(
        "PATCH", f"{WIDGETS}/w/status", {"status": {"phase": "Pending"}, "spec": {"size": 9}}
    )
    assert with_status["status"] == {"phase": "Pending"}
    assert with_status["spec"]["size"] == 3, "status writes change only .status"

    main = await http.ok("PATCH", f"{WIDGETS}/w", {"status": {"phase": "Failed"}, "spec": {"size": 5}})
    assert main["status"] == {"phase": "Pending"}, "main-resource writes ignore .status"
    assert main["spec"]["size"] == 5

    replaced = await http.ok(
        "PUT",
        f"{WIDGETS}/w/status",
        {**main, "status": {"phase": "Ready"}, "metadata": {**main["metadata"], "labels": {"x": "y"}}},
    )
    assert replaced["status"] == {"phase": "Ready"}
    assert "labels" not in replaced["metadata"], "status writes ignore metadata changes"
    fetched = await http.ok("GET", f"{WIDGETS}/w/status")
    assert fetched["status"] == {"phase": "Ready"}


async def test_deployment_status_subresource_without_controller() -> None:
    async with (
        KubernetesEmulator(deployment_controller=False) as emu,
        aiohttp.ClientSession(emu.url, headers=admin_headers(emu)) as session,
    ):
        http = Http(session)
        created = await http.ok("POST", DEPLOYS, {**deployment("d"), "status": {"readyReplicas": 99}})
        assert "status" not in created
        written = await http.ok("PATCH", f"{DEPLOYS}/d/status", {"status": {"readyReplicas": 1}})
        assert written["status"] == {"readyReplicas": 1}
        main = await http.ok(
            "PATCH", f"{DEPLOYS}/d", {"status": {"readyReplicas": 5}, "spec": {"replicas": 2}}
        )
        assert main["status"] == {"readyReplicas": 1} and main["spec"]["replicas"] == 2
        assert main["metadata"]["generation"] == 2


# ------------------------------------------------------------------------------------------ selectors


async def _seed_selectable(http: Http) -> None:
    for ns in ("default", "other"):
        for name, labels in (
            ("web-canary", {"app": "web", "track": "canary"}),
            ("web-stable", {"app": "web", "track": "stable"}),
            ("db", {"app": "db"}),
        ):
            await http.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap(name, labels))


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["web-canary", "web-stable"]),
        ("app!=web", ["db"]),
        ("track in (canary,x)", ["web-canary"]),
        ("track notin (canary)", ["db", "web-stable"]),
        ("track", ["web-canary", "web-stable"]),
        ("!track", ["db"]),
        ("app=web,track=stable", ["web-stable"]),
    ],
)
async def test_list_label_selectors(http: Http, selector: str, expected: list[str]) -> None:
    await _seed_selectable(http)
    listing = await http.ok("GET", CM, labelSelector=selector)
    assert [i["metadata"]["name"] for i in listing["items"]] == expected


async def test_field_selectors_and_all_namespaces(http: Http) -> None:
    await _seed_selectable(http)
    everywhere = await http.ok("GET", "/api/v1/configmaps", labelSelector="app=db")
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]] == [
        ("default", "db"),
        ("other", "db"),
    ]
    by_name = await http.ok("GET", "/api/v1/configmaps", fieldSelector="metadata.name=web-canary")
    assert len(by_name["items"]) == 2
    by_ns = await http.ok(
        "GET", "/api/v1/configmaps", fieldSelector="metadata.namespace=other,metadata.name!=db"
    )
    assert sorted(i["metadata"]["name"] for i in by_ns["items"]) == ["web-canary", "web-stable"]
    status, body = await http.get(CM, labelSelector="app in web")
    assert (status, body["reason"]) == (400, "BadRequest")


async def test_list_pagination(http: Http) -> None:
    for i in range(7):
        await http.ok("POST", CM, configmap(f"p{i}"))
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": "3"}
        if token:
            params["continue"] = token
        page = await http.ok("GET", CM, **params)
        names.extend(i["metadata"]["name"] for i in page["items"])
        token = page["metadata"]["continue"]
        pages += 1
        if not token:
            break
    assert names == [f"p{i}" for i in range(7)] and pages == 3


async def test_table_output_for_kubectl(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    await http.ok("POST", WIDGETS, widget("w"))
    await http.ok(
        "PATCH", f"{WIDGETS}/w/status", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    async with http.session.get(
        WIDGETS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    ) as rsp:
        doc = await rsp.json()
    assert doc["kind"] == "Table"
    assert [c["name"] for c in doc["columnDefinitions"]] == ["Name", "Ready", "Size", "Age"]
    assert doc["rows"][0]["cells"][:3] == ["w", "True", 3]


# ----------------------------------------------------------------------------------- events, leases


async def test_events_in_both_api_groups(http: Http) -> None:
    core = {
        "metadata": {"generateName": "w-"},
        "involvedObject": {"kind": "Widget", "name": "w"},
        "reason": "Started",
        "message": "m",
        "type": "Normal",
    }
    await http.ok("POST", "/api/v1/namespaces/default/events", core)
    new = {
        "metadata": {"name": "e1"},
        "regarding": {"kind": "Widget", "name": "w"},
        "reason": "Started",
        "note": "n",
        "type": "Normal",
        "action": "Create",
        "reportingController": "x",
        "reportingInstance": "y",
        "eventTime": "2025-01-01T00:00:00.000000Z",
    }
    await http.ok("POST", "/apis/events.k8s.io/v1/namespaces/default/events", new)
    assert len((await http.ok("GET", "/api/v1/namespaces/default/events"))["items"]) == 1
    assert len((await http.ok("GET", "/apis/events.k8s.io/v1/events"))["items"]) == 1
    by_reason = await http.ok("GET", "/api/v1/events", fieldSelector="involvedObject.name=w")
    assert by_reason["items"][0]["reason"] == "Started"


async def test_leases_are_plain_objects(http: Http) -> None:
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    status, _ = await http.get(f"{path}/lock")
    assert status == 404
    await http.ok("POST", path, {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "me"}})
    assert (await http.ok("GET", f"{path}/lock"))["spec"]["holderIdentity"] == "me"


async def test_python_api_snapshot(emu: KubernetesEmulator, http: Http) -> None:
    await http.ok("POST", CM, configmap("a", k="v"))
    snapshot = emu.objects("configmaps")
    assert [o["metadata"]["name"] for o in snapshot] == ["a"]
    snapshot[0]["data"]["k"] = "mutated"
    assert emu.get_object("cm", "a") == (await http.ok("GET", f"{CM}/a")), "snapshots are copies"
    applied = emu.apply(configmap("b", k="1"))
    assert applied["metadata"]["namespace"] == "default"
    emu.delete("configmaps", "b")
    assert emu.get_object("configmaps", "b") is None


async def test_unsupported_methods_are_405_status(http: Http) -> None:
    await http.ok("POST", CM, configmap("a"))
    status, body = await http.post(f"{CM}/a", configmap("a"))
    assert (status, body["kind"], body["reason"]) == (405, "Status", "MethodNotAllowed")
    status, body = await http.put(CM, configmap("a"))
    assert (status, body["reason"]) == (405, "MethodNotAllowed")


async def test_dependent_created_after_its_owner_is_gone_is_collected(emu) -> None:
    """A controller racing its owner's deletion must not leave an orphan behind (real GC collects it)."""
    owner = emu.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": "default"}}
    )
    uid = owner["metadata"]["uid"]
    emu.delete("configmaps", "owner", "default")
    emu.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "late-child",
                "namespace": "default",
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
            },
        }
    )
    assert emu.get_object("configmaps", "late-child", "default") is None
