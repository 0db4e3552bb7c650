"""`mlcanary render`: the objects the operator would create at a point of a rollout."""

from __future__ import annotations

import yaml

from mlcanary.cli import main
from mlcanary.render import render_objects

MANIFEST = {
    "apiVersion": "mlcanary.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "ml"},
    "spec": {
        "model": {"name": "fraud", "version": "2.0.0", "uri": "s3://models/fraud/2.0.0/"},
        "serving": {"replicas": 4},
        "traffic": {"replicas": {}},
    },
}


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_at_rest_one_revision_and_the_entry_service() -> None:
    objects = render_objects(MANIFEST)
    deployments = by_kind(objects, "Deployment")
    assert [d["spec"]["replicas"] for d in deployments] == [4]
    assert deployments[0]["metadata"]["labels"]["mlcanary.io/role"] == "stable"
    assert {s["metadata"]["name"] for s in by_kind(objects, "Service")} == {
        "fraud",
        deployments[0]["metadata"]["name"],
    }
    assert all(o["metadata"]["ownerReferences"][0]["controller"] for o in objects)


def test_replica_router_splits_replicas_by_step() -> None:
    # 4 replicas: the default steps the replicas router can serve are 20% and 50%
    objects = render_objects(MANIFEST, stable_version="1.0.0", step=2)  # 50%
    stable, canary = by_kind(objects, "Deployment")
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (4, 4)
    assert (
        stable["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "s3://models/fraud/1.0.0/"
    )
    assert canary["metadata"]["labels"]["mlcanary.io/role"] == "canary"
    # The role never reaches the pod template: a promotion must not restart pods.
    assert "mlcanary.io/role" not in canary["spec"]["template"]["metadata"]["labels"]


def test_serving_pods_run_restricted() -> None:
    pod = by_kind(render_objects(MANIFEST), "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["allowPrivilegeEscalation"] is False


def test_cli_prints_yaml(tmp_path, capsys) -> None:
    path = tmp_path / "mdep.yaml"
    path.write_text(yaml.safe_dump(MANIFEST))
    assert main(["render", "-f", str(path), "--stable-version", "1.0.0", "--canary-weight", "20"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert sorted(d["spec"]["replicas"] for d in docs if d["kind"] == "Deployment") == [1, 4]


def test_a_weight_the_replicas_router_cannot_serve_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "mdep.yaml"
    path.write_text(yaml.safe_dump(MANIFEST))
    assert main(["render", "-f", str(path), "--stable-version", "1.0.0", "--canary-weight", "5"]) == 2
    assert "5% cannot be served by the replicas router" in capsys.readouterr().err
