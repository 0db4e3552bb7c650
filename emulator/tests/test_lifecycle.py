"""Deletion with finalizers, ownerReference garbage collection, CRD registration and validation."""

from __future__ import annotations

from typing import Any

from emulator_kit import (
    CM,
    CRDS,
    DEPLOYS,
    JSON_PATCH,
    WIDGETS,
    Http,
    configmap,
    deployment,
    meta_of,
    widget,
    widget_crd,
)

from kube_emulator import KubernetesEmulator


def owned(name: str, owner: dict[str, Any], kind: str = "ConfigMap") -> dict[str, Any]:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}, "kind": kind}


# ---------------------------------------------------------------------------------------- finalizers


async def test_finalizers_keep_the_object_until_removed(http: Http) -> None:
    created = await http.ok(
        "POST", CM, {"metadata": {"name": "f", "finalizers": ["example.com/a", "example.com/b"]}}
    )
    deleting = await http.ok("DELETE", f"{CM}/f")
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == created["metadata"]["generation"] + 1
    again = await http.ok("DELETE", f"{CM}/f", body={"propagationPolicy": "Foreground"})
    assert again["metadata"]["deletionTimestamp"] == deleting["metadata"]["deletionTimestamp"]

    current = deleting["metadata"]["resourceVersion"]
    await http.ok(
        "PATCH",
        f"{CM}/f",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": current},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ],
        content_type=JSON_PATCH,
    )
    still = await http.ok("GET", f"{CM}/f")
    assert still["metadata"]["finalizers"] == ["example.com/b"]
    status, _ = await http.patch(f"{CM}/f", {"metadata": {"deletionTimestamp": None}})
    assert (await http.ok("GET", f"{CM}/f"))["metadata"]["deletionTimestamp"], "clients cannot undelete"

    start = (await http.ok("GET", CM))["metadata"]["resourceVersion"]
    await http.ok("PATCH", f"{CM}/f", {"metadata": {"finalizers": []}})
    status, _ = await http.get(f"{CM}/f")
    assert status == 404
    events = await http.watch(CM, resourceVersion=start, timeoutSeconds="0.3")
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


async def test_delete_preconditions(http: Http) -> None:
    created = await http.ok("POST", CM, configmap("p"))
    status, body = await http.delete(f"{CM}/p", {"preconditions": {"uid": "not-the-uid"}})
    assert (status, body["reason"]) == (409, "Conflict")
    await http.ok("DELETE", f"{CM}/p", {"preconditions": {"uid": created["metadata"]["uid"]}})


async def test_delete_collection_by_label(http: Http) -> None:
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        await http.ok("POST", CM, configmap(name, {"app": app}))
    await http.ok("DELETE", CM, labelSelector="app=x")
    assert [i["metadata"]["name"] for i in (await http.ok("GET", CM))["items"]] == ["c"]


# ------------------------------------------------------------------------------ garbage collection


async def test_garbage_collection_cascades_across_kinds_and_levels(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    parent = await http.ok("POST", WIDGETS, widget("parent"))
    child_deploy = await http.ok(
        "POST",
        DEPLOYS,
        {
            **deployment("child"),
            **owned("child", parent, "Deployment"),
            "metadata": {**owned("child", parent)["metadata"], "labels": {"app": "child"}},
        },
    )
    await http.ok("POST", CM, owned("child-cm", parent))
    await http.ok("POST", CM, owned("grandchild", child_deploy))
    await http.ok(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {**owned("secret", child_deploy, "Secret"), "stringData": {"a": "b"}},
    )
    await http.ok("POST", CM, configmap("bystander"))

    await http.ok("DELETE", f"{WIDGETS}/parent")
    names = [i["metadata"]["name"] for i in (await http.ok("GET", CM))["items"]]
    assert names == ["bystander"]
    assert (await http.ok("GET", DEPLOYS))["items"] == []
    assert (await http.ok("GET", "/api/v1/namespaces/default/secrets"))["items"] == []


async def test_garbage_collection_waits_for_the_owner_finalizers_and_respects_child_finalizers(
    http: Http,
) -> None:
    parent = await http.ok("POST", CM, {"metadata": {"name": "parent", "finalizers": ["x.io/hold"]}})
    await http.ok("POST", CM, owned("child", parent))
    child_held = owned("held", parent)
    child_held["metadata"]["finalizers"] = ["x.io/hold"]
    await http.ok("POST", CM, child_held)

    await http.ok("DELETE", f"{CM}/parent")
    await http.ok("GET", f"{CM}/child")  # the owner still exists (terminating): no collection yet
    await http.ok("PATCH", f"{CM}/parent", {"metadata": {"finalizers": None}})
    status, _ = await http.get(f"{CM}/child")
    assert status == 404
    held = await http.ok("GET", f"{CM}/held")
    assert held["metadata"]["deletionTimestamp"], "a dependent with finalizers is deleted gracefully"


async def test_garbage_collection_keeps_objects_with_another_live_owner_and_orphans_on_request(
    http: Http,
) -> None:
    a = await http.ok("POST", CM, configmap("a"))
    b = await http.ok("POST", CM, configmap("b"))
    shared = owned("shared", a)
    shared["metadata"]["ownerReferences"].append(owned("x", b)["metadata"]["ownerReferences"][0])
    await http.ok("POST", CM, shared)
    await http.ok("POST", CM, owned("orphan", b))
    await http.ok("DELETE", f"{CM}/a")
    await http.ok("GET", f"{CM}/shared")
    await http.ok("DELETE", f"{CM}/b", {"propagationPolicy": "Orphan"})
    orphan = await http.ok("GET", f"{CM}/orphan")
    assert "ownerReferences" not in orphan["metadata"]


# ----------------------------------------------------------------------------------------------- CRDs


async def test_crd_registration_serves_discovery_and_unregisters_on_delete(http: Http) -> None:
    status, _ = await http.get(WIDGETS)
    assert status == 404
    crd = await http.ok("POST", CRDS, widget_crd())
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    groups = {g["name"] for g in (await http.ok("GET", "/apis"))["groups"]}
    assert "example.com" in groups
    resources = {r["name"]: r for r in (await http.ok("GET", "/apis/example.com/v1"))["resources"]}
    assert resources["widgets"]["shortNames"] == ["wdg"]
    assert resources["widgets"]["categories"] == ["all"]
    assert resources["widgets"]["namespaced"] is True
    assert resources["widgets"]["kind"] == "Widget"
    assert "widgets/status" in resources

    await http.ok("POST", WIDGETS, widget("w"))
    await http.ok("DELETE", f"{CRDS}/widgets.example.com")
    status, _ = await http.get(WIDGETS)
    assert status == 404
    groups = {g["name"] for g in (await http.ok("GET", "/apis"))["groups"]}
    assert "example.com" not in groups

    await http.ok("POST", CRDS, widget_crd())
    assert (await http.ok("GET", WIDGETS))["items"] == [], "objects of a deleted CRD are gone"


async def test_cluster_scoped_crd(http: Http) -> None:
    crd = widget_crd(plural="gadgets", kind="Gadget", short="gd")
    crd["spec"]["scope"] = "Cluster"
    await http.ok("POST", CRDS, crd)
    await http.ok("POST", "/apis/example.com/v1/gadgets", {**widget("g"), "kind": "Gadget"})
    got = await http.ok("GET", "/apis/example.com/v1/gadgets/g")
    assert "namespace" not in got["metadata"]
    status, _ = await http.get("/apis/example.com/v1/namespaces/default/gadgets/g")
    assert status == 404


async def test_invalid_crd_is_rejected(http: Http) -> None:
    crd = widget_crd()
    crd["metadata"]["name"] = "wrong.example.com"
    status, body = await http.post(CRDS, crd)
    assert status == 422
    assert "metadata.name" in [c["field"] for c in body["details"]["causes"]]


async def test_schema_validation_names_the_field_path(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    bad = widget(
        "bad",
        size=30,
        color="green",
        rollout={"steps": [{"weight": 5}, {"weight": 150}, {}]},
        nick="UPPER",
        port=True,
    )
    status, body = await http.post(WIDGETS, bad)
    assert status == 422
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    fields = {c["field"]: c for c in body["details"]["causes"]}
    assert set(fields) == {
        "spec.size",
        "spec.color",
        "spec.rollout.steps[1].weight",
        "spec.rollout.steps[2].weight",
        "spec.nick",
        "spec.port",
    }
    assert fields["spec.rollout.steps[1].weight"]["reason"] == "FieldValueInvalid"
    assert fields["spec.rollout.steps[2].weight"]["reason"] == "FieldValueRequired"
    assert fields["spec.color"]["reason"] == "FieldValueNotSupported"
    assert "spec.rollout.steps[1].weight" in body["message"]
    assert body["message"].startswith('Widget.example.com "bad" is invalid: ')
    assert body["details"]["name"] == "bad" and body["details"]["group"] == "example.com"

    status, body = await http.post(WIDGETS, {**widget("missing"), "spec": {}})
    assert (status, body["details"]["causes"][0]["field"]) == (422, "spec.size")


async def test_schema_validation_on_update_patch_and_status(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    created = await http.ok("POST", WIDGETS, widget("w", port="http", nick=None))
    assert created["spec"]["color"] == "red", "defaults are applied"
    status, body = await http.patch(f"{WIDGETS}/w", {"spec": {"size": 0}})
    assert (status, body["details"]["causes"][0]["field"]) == (422, "spec.size")
    status, body = await http.put(f"{WIDGETS}/w", {**created, "spec": {"size": "three"}})
    assert (status, body["details"]["causes"][0]["reason"]) == (422, "FieldValueTypeInvalid")
    status, body = await http.patch(f"{WIDGETS}/w/status", {"status": {"phase": "Bogus"}})
    assert (status, body["details"]["causes"][0]["field"]) == (422, "status.phase")
    await http.ok("PATCH", f"{WIDGETS}/w/status", {"status": {"phase": "Ready", "anything": {"goes": 1}}})
    assert (await http.ok("GET", f"{WIDGETS}/w"))["spec"]["size"] == 3


async def test_unknown_fields_are_pruned_or_refused_in_strict_mode(http: Http) -> None:
    await http.ok("POST", CRDS, widget_crd())
    async with http.session.post(WIDGETS, json=widget("w", typo=1, extra={"free": {"form": True}})) as rsp:
        assert rsp.status == 201
        body = await rsp.json()
        assert "unknown field" in rsp.headers.get("Warning", "")
    assert "typo" not in body["spec"]
    assert body["spec"]["extra"] == {"free": {"form": True}}, "preserve-unknown-fields keeps content"
    status, body = await http.request("POST", WIDGETS, widget("w2", typo=1), fieldValidation="Strict")
    assert (status, body["reason"]) == (400, "BadRequest")
    assert "spec.typo" in body["message"]


async def test_crd_with_two_versions_serves_both(http: Http) -> None:
    crd = widget_crd()
    v1beta1 = {**crd["spec"]["versions"][0], "name": "v1beta1", "storage": False}
    crd["spec"]["versions"].append(v1beta1)
    await http.ok("POST", CRDS, crd)
    await http.ok("POST", WIDGETS, widget("w"))
    old = await http.ok("GET", "/apis/example.com/v1beta1/namespaces/default/widgets/w")
    assert old["apiVersion"] == "example.com/v1beta1"
    group = await http.ok("GET", "/apis/example.com")
    assert group["preferredVersion"]["version"] == "v1"


async def test_crd_update_changes_the_schema(emu: KubernetesEmulator, http: Http) -> None:
    crd = await http.ok("POST", CRDS, widget_crd())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"][
        "maximum"
    ] = 100
    await http.ok("PUT", f"{CRDS}/widgets.example.com", crd)
    await http.ok("POST", WIDGETS, widget("big", size=50))
    assert [w["metadata"]["name"] for w in emu.objects("wdg")] == ["big"]
    events = await http.watch(CRDS, timeoutSeconds="0.2")
    assert [meta_of(e)["name"] for e in events] == ["widgets.example.com"]
