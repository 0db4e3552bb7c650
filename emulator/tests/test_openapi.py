"""OpenAPI v3 from the served resources: `kubectl explain` works and kubectl validates without
`--validate=false` (it hands validation to the server: fieldValidation=Strict), as against a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from emulator_kit import CRDS, Http, widget_crd

from kube_emulator import EmulatorThread

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modeldeployments.mlcanary.io.yaml"


def _find_kubectl() -> str | None:
    local = REPO / ".venv" / "bin" / "kubectl"  # make setup installs kubectl 1.32 there
    return str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which("kubectl")


KUBECTL = _find_kubectl()
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (make setup installs it)")


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    return subprocess.run(
        [KUBECTL, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def mdep(name: str, **spec_extra: Any) -> str:
    obj = yaml.safe_load((REPO / "examples" / "replicas.yaml").read_text())
    obj["metadata"] = {"name": name, "namespace": "default"}
    obj["spec"].update(spec_extra)
    return yaml.safe_dump(obj)


async def test_the_root_lists_each_group_version_with_a_hash_that_follows_the_crds(http: Http) -> None:
    root = await http.ok("GET", "/openapi/v3")
    assert "apis/apps/v1" in root["paths"] and "api/v1" in root["paths"]
    assert "apis/example.com/v1" not in root["paths"]
    await http.ok("POST", CRDS, widget_crd())
    root = await http.ok("GET", "/openapi/v3")
    url = root["paths"]["apis/example.com/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/example.com/v1?hash=")
    document = await http.ok("GET", url)
    schema = document["components"]["schemas"]["com.example.v1.Widget"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "example.com", "kind": "Widget", "version": "v1"}
    ]
    assert schema["properties"]["spec"]["properties"]["size"]["maximum"] == 10
    patch = document["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert {"name": "fieldValidation", "in": "query"}.items() <= next(
        p for p in patch["parameters"] if p["name"] == "fieldValidation"
    ).items()
    assert (await http.get("/openapi/v3/apis/nothing.example/v1"))[0] == 404


@pytest.fixture
def cluster(emu_tls: EmulatorThread, tls_kubeconfig: Path) -> Path:
    emu_tls.apply(yaml.safe_load(CRD.read_text()))
    return tls_kubeconfig


@needs_kubectl
def test_kubectl_explain_reads_the_crd_schema(cluster: Path) -> None:
    result = kubectl(cluster, "explain", "mdep.spec.rollout")
    assert result.returncode == 0, result.stderr
    assert "KIND:       ModelDeployment" in result.stdout
    assert "FIELD: rollout <Object>" in result.stdout
    assert "steps" in result.stdout and "stepDuration" in result.stdout


@needs_kubectl
def test_kubectl_validates_without_validate_false(emu_tls: EmulatorThread, cluster: Path) -> None:
    applied = kubectl(cluster, "apply", "-f", "-", stdin=mdep("good"))
    assert applied.returncode == 0, applied.stderr
    assert emu_tls.get_object("mdep", "good") is not None
    refused = kubectl(cluster, "apply", "-f", "-", stdin=mdep("typo", rollut={"steps": [5]}))
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.rollut"' in refused.stderr
    assert emu_tls.get_object("mdep", "typo") is None
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    built_in = kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(deploy))
    assert built_in.returncode == 0, built_in.stderr


@needs_kubectl
def test_kubectl_as_a_service_account_gets_the_real_forbidden_message(
    emu_tls: EmulatorThread, tmp_path: Path
) -> None:
    token = emu_tls.service_account_token("default", "viewer")
    kubeconfig = emu_tls.write_kubeconfig(tmp_path / "viewer.kubeconfig", token=token)
    denied = kubectl(kubeconfig, "get", "deployments")
    assert denied.returncode != 0
    assert (
        'deployments.apps is forbidden: User "system:serviceaccount:default:viewer" cannot list resource '
        '"deployments" in API group "apps" in the namespace "default"'
    ) in denied.stderr


async def test_self_subject_access_review_answers_from_rbac(emu: Any, http: Http) -> None:
    import aiohttp
    from emulator_kit import Http as Client

    token = emu.service_account_token("default", "viewer")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}},
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    async with aiohttp.ClientSession(emu.url, headers={"Authorization": f"Bearer {token}"}) as session:
        client = Client(session)
        assert (await client.ok("POST", path, review))["status"]["allowed"] is False
        await http.ok(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            {
                "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
            },
        )
        await http.ok(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            {
                "metadata": {"name": "r"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "default"}],
            },
        )
        assert (await client.ok("POST", path, review))["status"]["allowed"] is True
