"""Authentication and RBAC as a real API server does them: tokens, bindings, 401/403 and their messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_kit import CM, DEPLOYS, Http, admin_headers, configmap, deployment

from kube_emulator import KubernetesEmulator

RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture
async def anonymous(emu: KubernetesEmulator) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(emu.url) as session:
        yield Http(session)


async def as_token(emu: KubernetesEmulator, token: str) -> Http:
    session = aiohttp.ClientSession(emu.url, headers={"Authorization": f"Bearer {token}"})
    return Http(session)


async def sa_token(http: Http, namespace: str, name: str) -> str:
    """A token through the real TokenRequest API, as `kubectl create token` gets one."""
    status, _ = await http.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}}
    )
    assert status in (201, 409)
    body = await http.ok(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    assert body["kind"] == "TokenRequest" and body["status"]["expirationTimestamp"]
    return str(body["status"]["token"])


def role(name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "rules": rules}


def binding(name: str, role_kind: str, role_name: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def sa_subject(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


async def test_anonymous_requests_get_the_public_info_only(anonymous: Http) -> None:
    assert (await anonymous.get("/version"))[0] == 200
    assert (await anonymous.get("/healthz"))[0] == 200
    status, body = await anonymous.get("/apis")
    assert (status, body["message"]) == (403, 'forbidden: User "system:anonymous" cannot get path "/apis"')
    status, body = await anonymous.get(CM)
    assert status == 403
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'configmaps is forbidden: User "system:anonymous" cannot list resource "configmaps" in API group "" '
        'in the namespace "default"'
    )


async def test_an_unknown_token_is_unauthorized(emu: KubernetesEmulator) -> None:
    client = await as_token(emu, "not-a-token")
    async with client.session:
        status, body = await client.get("/version")
    assert (status, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")


async def test_a_service_account_is_forbidden_until_bound(emu: KubernetesEmulator, http: Http) -> None:
    token = await sa_token(http, "ops", "deployer")
    client = await as_token(emu, token)
    async with client.session:
        assert (await client.get("/apis"))[0] == 200  # discovery: every authenticated user
        status, body = await client.get("/apis/apps/v1/namespaces/x/deployments")
        assert status == 403
        assert body["message"] == (
            'deployments.apps is forbidden: User "system:serviceaccount:ops:deployer" cannot list resource '
            '"deployments" in API group "apps" in the namespace "x"'
        )
        assert body["details"] == {"kind": "deployments", "group": "apps"}

        rules = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "create"]}]
        await http.ok("POST", f"{RBAC}/namespaces/x/roles", role("deploy", rules))
        await http.ok(
            "POST",
            f"{RBAC}/namespaces/x/rolebindings",
            binding("deploy", "Role", "deploy", [sa_subject("ops", "deployer")]),
        )
        assert (await client.get("/apis/apps/v1/namespaces/x/deployments"))[0] == 200  # cache dropped
        assert (await client.post("/apis/apps/v1/namespaces/x/deployments", deployment("web")))[0] == 201
        status, body = await client.delete("/apis/apps/v1/namespaces/x/deployments/web")
        assert status == 403
        assert body["message"] == (
            'deployments.apps "web" is forbidden: User "system:serviceaccount:ops:deployer" cannot delete '
            'resource "deployments" in API group "apps" in the namespace "x"'
        )
        status, body = await client.get("/apis/apps/v1/namespaces/y/deployments")
        assert status == 403  # a RoleBinding grants in its own namespace only
        status, body = await client.get("/apis/apps/v1/deployments")
        assert body["message"].endswith(
            'cannot list resource "deployments" in API group "apps" at the cluster scope'
        )

        await http.ok("DELETE", f"{RBAC}/namespaces/x/rolebindings/deploy")
        assert (await client.get("/apis/apps/v1/namespaces/x/deployments"))[0] == 403


async def test_cluster_roles_by_cluster_and_namespace_bindings_groups_and_users(
    emu: KubernetesEmulator, http: Http
) -> None:
    reader = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    await http.ok("POST", f"{RBAC}/clusterroles", role("cm-reader", reader))
    # A ClusterRole through a RoleBinding: only in the binding's namespace.
    alice = emu.user_token("alice")
    await http.ok(
        "POST",
        f"{RBAC}/namespaces/team/rolebindings",
        binding("alice-reads", "ClusterRole", "cm-reader", [{"kind": "User", "name": "alice"}]),
    )
    # Through a ClusterRoleBinding to a group: everywhere.
    bob = emu.user_token("bob", groups=["auditors"])
    await http.ok(
        "POST",
        f"{RBAC}/clusterrolebindings",
        binding("auditors-read", "ClusterRole", "cm-reader", [{"kind": "Group", "name": "auditors"}]),
    )
    alice_http, bob_http = await as_token(emu, alice), await as_token(emu, bob)
    async with alice_http.session, bob_http.session:
        assert (await alice_http.get("/api/v1/namespaces/team/configmaps"))[0] == 200
        assert (await alice_http.get("/api/v1/namespaces/other/configmaps"))[0] == 403
        assert (await alice_http.get("/api/v1/configmaps"))[0] == 403
        assert (await bob_http.get("/api/v1/configmaps"))[0] == 200
        assert (await bob_http.post("/api/v1/namespaces/team/configmaps", configmap("x")))[0] == 403


async def test_resource_names_and_subresources(emu: KubernetesEmulator, http: Http) -> None:
    await http.ok("POST", DEPLOYS, deployment("web"))
    await http.ok("POST", DEPLOYS, deployment("api"))
    token = await sa_token(http, "default", "status-writer")
    rules = [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["web"],
            "verbs": ["get", "list"],
        },
        {"apiGroups": ["apps"], "resources": ["deployments/status"], "verbs": ["patch"]},
    ]
    await http.ok("POST", f"{RBAC}/namespaces/default/roles", role("one", rules))
    await http.ok(
        "POST",
        f"{RBAC}/namespaces/default/rolebindings",
        binding("one", "Role", "one", [sa_subject("default", "status-writer")]),
    )
    client = await as_token(emu, token)
    async with client.session:
        assert (await client.get(f"{DEPLOYS}/web"))[0] == 200
        assert (await client.get(f"{DEPLOYS}/api"))[0] == 403
        assert (await client.get(DEPLOYS))[0] == 403  # a list names no object
        assert (await client.get(DEPLOYS, fieldSelector="metadata.name=web"))[0] == 200  # ... unless it does
        assert (await client.patch(f"{DEPLOYS}/web/status", {"status": {"replicas": 1}}))[0] == 200
        status, body = await client.patch(f"{DEPLOYS}/web", {"spec": {"replicas": 3}})
        assert status == 403
        assert 'cannot patch resource "deployments" in API group "apps"' in body["message"]
        status, body = await client.patch(f"{DEPLOYS}/api/scale", {"spec": {"replicas": 3}})
        assert 'cannot patch resource "deployments/scale"' in body["message"]


async def test_a_deleted_service_account_token_stops_working(emu: KubernetesEmulator, http: Http) -> None:
    token = emu.service_account_token("default", "short-lived")
    client = await as_token(emu, token)
    async with client.session:
        assert (await client.get("/version"))[0] == 200
        await http.ok("DELETE", "/api/v1/namespaces/default/serviceaccounts/short-lived")
        assert (await client.get("/version"))[0] == 401
        await http.ok(
            "POST", "/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": "short-lived"}}
        )
        assert (await client.get("/version"))[0] == 401  # bound to the old account's uid


async def test_bootstrap_roles_exist_like_on_a_real_cluster(http: Http) -> None:
    names = {o["metadata"]["name"] for o in (await http.ok("GET", f"{RBAC}/clusterrolebindings"))["items"]}
    assert {"cluster-admin", "system:discovery", "system:public-info-viewer", "system:basic-user"} <= names


async def test_decisions_are_cached_until_rbac_changes(emu: KubernetesEmulator, http: Http) -> None:
    token = emu.service_account_token("default", "cached")
    client = await as_token(emu, token)
    async with client.session:
        for _ in range(5):
            assert (await client.get(CM))[0] == 403
        evaluations = emu.authorizer.evaluations
        for _ in range(5):
            await client.get(CM)
        assert emu.authorizer.evaluations == evaluations  # served from the cache
        await http.ok("POST", f"{RBAC}/namespaces/default/roles", role("x", []))
        await client.get(CM)
        assert emu.authorizer.evaluations == evaluations + 1  # an RBAC write dropped the cache


async def test_requests_are_counted_per_user_verb_and_resource(emu: KubernetesEmulator, http: Http) -> None:
    emu.reset_requests()
    token = emu.service_account_token("default", "counted")
    client = await as_token(emu, token)
    async with client.session:
        await client.get(CM)  # forbidden
        await http.ok("POST", CM, configmap("a"))
        await http.ok("GET", CM)
        await http.ok("GET", CM)
        events = await http.watch(CM, within=0.3, timeoutSeconds="1")
        assert events
        status, _ = await client.get("/emulator/v1/requests")
        assert status == 403  # admin only
    counts = emu.requests()
    admin = "kubernetes-admin"
    rows = {(r["user"], r["verb"], r["resource"]): r["count"] for r in counts["requests"]}
    assert rows[(admin, "list", "configmaps")] == 2
    assert rows[(admin, "create", "configmaps")] == 1
    assert {(r["user"], r["verb"], r["resource"]) for r in counts["watches"]} == {
        (admin, "watch", "configmaps")
    }
    assert {(r["user"], r["verb"], r["resource"]) for r in counts["forbidden"]} >= {
        ("system:serviceaccount:default:counted", "list", "configmaps")
    }
    over_http = await http.ok("GET", "/emulator/v1/requests")
    assert over_http["watches"] == counts["watches"]
    assert emu.accounting.used(admin) >= {("list", "", "configmaps"), ("watch", "", "configmaps")}


async def test_always_allow_mode_needs_no_token() -> None:
    async with (
        KubernetesEmulator(authorization="AlwaysAllow") as emu,
        aiohttp.ClientSession(emu.url) as session,
        session.get(CM) as response,
    ):
        assert response.status == 200


def test_admin_headers_helper_matches_the_kubeconfig(emu_thread: Any, kubeconfig: Any) -> None:
    import yaml

    config = yaml.safe_load(kubeconfig.read_text())
    assert config["users"][0]["user"]["token"] == admin_headers(emu_thread)["Authorization"].split()[1]
