"""Manifests the kind quickstart applies, printed as one YAML stream (scripts/kind-quickstart.sh).

    python scripts/kind_quickstart_manifests.py gateway   # GatewayClass + Gateway for Envoy Gateway
    python scripts/kind_quickstart_manifests.py bundles   # namespace ml + an HTTP server for the bundles
    python scripts/kind_quickstart_manifests.py example [examples/gateway-api.yaml]

``example`` adapts the ModelDeployments of an example to the kind cluster and changes nothing else:
the bundle URI points at the in-cluster bundle server (``/<model>/<version>/``, pinned by no sha256),
the route attaches to the quickstart Gateway, and the serving pods ask for little CPU and memory.
tests/chart/test_kind_quickstart.py validates every object printed here.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "ml"
GATEWAY_NAMESPACE = "infra"
GATEWAY_NAME = "quickstart"
GATEWAY_CLASS = "envoy-gateway"
BUNDLE_HOST = f"bundles.{NAMESPACE}.svc.cluster.local"
BUNDLE_PORT = 8000
NODE_BUNDLE_DIR = "/mlcanary-bundles"  # kind-config.yaml mounts out/kind-bundles here on every node


def gateway() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "port": 80,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
    ]


def bundle_server() -> list[dict[str, Any]]:
    """A read-only static file server for the demo bundles (kind only: it mounts a node directory)."""
    labels = {"app.kubernetes.io/name": "bundles", "app.kubernetes.io/part-of": "mlcanary-quickstart"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "bundles", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "http",
                                "image": "python:3.11-slim-bookworm",
                                "command": [
                                    "python",
                                    "-m",
                                    "http.server",
                                    str(BUNDLE_PORT),
                                    "--directory",
                                    "/bundles",
                                ],
                                "ports": [{"name": "http", "containerPort": BUNDLE_PORT}],
                                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "32Mi"},
                                    "limits": {"memory": "64Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [
                                    {"name": "bundles", "mountPath": "/bundles", "readOnly": True}
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "bundles", "hostPath": {"path": NODE_BUNDLE_DIR, "type": "Directory"}}
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "bundles", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": BUNDLE_PORT, "targetPort": "http"}],
            },
        },
    ]


def bundle_uri(model: str, version: str) -> str:
    return f"http://{BUNDLE_HOST}:{BUNDLE_PORT}/{model}/{version}/"


def adapt(manifest: dict[str, Any]) -> dict[str, Any]:
    """One example object adapted to the quickstart cluster (only ModelDeployments change)."""
    obj = copy.deepcopy(manifest)
    if obj.get("kind") != "ModelDeployment":
        return obj
    obj["metadata"]["namespace"] = NAMESPACE
    spec = obj["spec"]
    model = spec["model"]
    model["uri"] = bundle_uri(model["name"], model["version"])
    model.pop("sha256", None)
    serving = spec.setdefault("serving", {})
    serving["replicas"] = min(int(serving.get("replicas", 1)), 2)
    serving["resources"] = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    router = spec.get("traffic", {}).get("gatewayAPI")
    if router is not None:
        router["parentRefs"] = [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE, "sectionName": "http"}]
    return obj


def example(path: Path) -> list[dict[str, Any]]:
    return [adapt(doc) for doc in yaml.safe_load_all(path.read_text()) if doc]


def model_versions(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (o["spec"]["model"]["name"], o["spec"]["model"]["version"])
        for o in objects
        if o["kind"] == "ModelDeployment"
    ]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"gateway", "bundles", "example", "versions"}:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[1]) if len(argv) > 1 else REPO / "examples" / "gateway-api.yaml"
    if argv[0] == "versions":  # model/version pairs the example needs bundles for, one per line
        for name, version in model_versions(example(path)):
            print(f"{name} {version}")
        return 0
    objects = {"gateway": gateway, "bundles": bundle_server}.get(argv[0], lambda: example(path))()
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
