"""Pure builders for the children of a ModelDeployment: one Deployment and one Service per revision,
plus the entry Service that addresses the model as a whole.

The role (stable/canary) is a label on the Deployment object only, never on its pod template:
promotion flips the label and the pointer in status, and no pod restarts.

Every field that decides where traffic goes or whether pods run is written explicitly, defaults
included (``paused: false``, ``sessionAffinity: None``, ``publishNotReadyAddresses: false`` ...): the
operator compares what it owns with the live objects every tick (:mod:`mlcanary.ownership`), and a
field it leaves to the server's default is a field a hand edit could change unseen.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mlcanary.models import (
    API_GROUP,
    API_VERSION,
    KIND,
    Autoscaling,
    LoadTest,
    ModelDeploymentSpec,
    ModelRef,
    ModelRegistry,
    RevisionState,
    ScalingMetric,
    ScalingMetricType,
)

LABEL_MDEP = "mlcanary.io/model-deployment"
LABEL_REVISION = "mlcanary.io/revision"
LABEL_ROLE = "mlcanary.io/role"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlcanary"
HTTP_PORT_NAME = "http"


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(
        self, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "ownerReferences": [self.reference()],
        }
        if annotations:
            meta["annotations"] = annotations
        return meta


def selector_for(owner_name: str) -> str:
    """Label selector of every child of one ModelDeployment."""
    return f"{LABEL_MDEP}={owner_name},{LABEL_MANAGED_BY}={MANAGED_BY}"


def pod_labels(owner: Owner, revision: RevisionState) -> dict[str, str]:
    model = revision.template.model
    return {
        "app.kubernetes.io/name": model.name,
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/version": _label_value(model.version),
        "app.kubernetes.io/component": "model-server",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MDEP: owner.name,
        LABEL_REVISION: revision.revision,
    }


def _label_value(text: str) -> str:
    """Label values allow [A-Za-z0-9-_.] up to 63 characters; versions like 1.0+build are mapped."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:63]
    return cleaned.strip("-_.") or "unknown"


WORKERS_ENV = "MLCANARY_WORKERS"
# The shadow phase's reference model (the serving image's names: mlcanary_serving.settings).
REFERENCE_URI_ENV = "MLCANARY_REFERENCE_BUNDLE_URI"
REFERENCE_VERSION_ENV = "MLCANARY_REFERENCE_VERSION"
REFERENCE_SHA256_ENV = "MLCANARY_REFERENCE_BUNDLE_SHA256"
MAX_WORKERS = 64
# Kubernetes quantity suffixes (a CPU limit is usually "2" or "1500m", but any quantity is valid)
_SUFFIX = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([KMGTPE]i|[numkMGTPE])?)$"
)


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number ("1500m" -> 1.5, "2" -> 2.0, "1e3" -> 1000.0)."""
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, exponent, suffix = m.groups()
    return float(number + (exponent or "")) * _SUFFIX[suffix or ""]


def serving_workers(limits: dict[str, str] | None) -> int | None:
    """Server processes for a serving container: one per whole CPU of its CPU limit (at least one,
    at most MAX_WORKERS), so a pod with N CPUs serves with N cores; None without a CPU limit (the
    server then runs one process)."""
    cpu = (limits or {}).get("cpu")
    if cpu is None:
        return None
    return max(1, min(MAX_WORKERS, int(quantity(cpu))))


def registry_env(registry: ModelRegistry | None, uri: str) -> list[dict[str, Any]]:
    """MLflow's variables for a pod whose bundle is on the registry's tracking server: the server, and
    its credentials by reference to the registry's Secret (the serving image sends them to that
    server only). None for a bundle stored elsewhere: its pods are not restarted by a registry block.

    >>> from mlcanary.models import ModelRegistry, SecretKeyRef
    >>> r = ModelRegistry(tracking_uri="http://mlflow:5000", registered_model="m", alias="champion",
    ...     bearer_token_secret=SecretKeyRef(name="mlflow", key="token"))
    >>> [e["name"] for e in registry_env(r, "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/x/")]
    ['MLFLOW_TRACKING_URI', 'MLFLOW_TRACKING_TOKEN']
    >>> registry_env(r, "s3://models/m/1/")
    []
    """
    if registry is None:
        return []
    server = registry.tracking_uri.rstrip("/")
    if not uri.startswith(server + "/"):
        return []

    def secret(name: str, key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": name, "key": key}}

    env: list[dict[str, Any]] = [{"name": "MLFLOW_TRACKING_URI", "value": server}]
    if registry.bearer_token_secret is not None:
        ref = registry.bearer_token_secret
        env.append({"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": secret(ref.name, ref.key)})
    elif registry.basic_auth_secret is not None:
        env.append(
            {"name": "MLFLOW_TRACKING_USERNAME", "valueFrom": secret(registry.basic_auth_secret, "username")}
        )
        env.append(
            {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": secret(registry.basic_auth_secret, "password")}
        )
    return env


def deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    revision: RevisionState,
    role: str,
    replicas: int | None,
    image_pull_policy: str = "IfNotPresent",
    reference: ModelRef | None = None,
) -> dict[str, Any]:
    """The Deployment running one revision's serving pods (restricted pod security).

    ``replicas`` None: the revision's HPA owns the count, so the Deployment carries none (created
    with the API's default of one, which the HPA raises to its floor) and the operator never
    writes it back. ``reference``: a second model (the stable's, for the shadow phase) the pods
    load and score every request with, exporting how often the two agree."""
    template = revision.template
    serving, model = template.serving, template.model
    labels = pod_labels(owner, revision)
    env = [
        {"name": "MLCANARY_BUNDLE_URI", "value": model.uri},
        {"name": "MLCANARY_MODEL_NAME", "value": model.name},
        {"name": "MLCANARY_MODEL_VERSION", "value": model.version},
        {"name": "PORT", "value": str(serving.port)},
    ]
    if model.sha256:
        env.append({"name": "MLCANARY_BUNDLE_SHA256", "value": model.sha256})
    if reference is not None:
        env.append({"name": REFERENCE_URI_ENV, "value": reference.uri})
        env.append({"name": REFERENCE_VERSION_ENV, "value": reference.version})
        if reference.sha256:
            env.append({"name": REFERENCE_SHA256_ENV, "value": reference.sha256})
    workers = serving_workers(serving.resources.limits if serving.resources else None)
    if workers is not None and not any(e.name == WORKERS_ENV for e in serving.env or []):
        env.append({"name": WORKERS_ENV, "value": str(workers)})
    own = {e.name for e in serving.env or []}
    env.extend(e for e in registry_env(spec.model.registry, model.uri) if e["name"] not in own)
    env.extend({"name": e.name, "value": e.value} for e in serving.env or [])
    container: dict[str, Any] = {
        "name": "server",
        "image": serving.image,
        "imagePullPolicy": image_pull_policy,
        "args": ["--host", "0.0.0.0", "--port", str(serving.port)],
        "env": env,
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": serving.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": HTTP_PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": HTTP_PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - the pod's own emptyDir
    }
    if serving.resources is not None:
        container["resources"] = serving.resources.to_wire()
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "automountServiceAccountToken": False,
    }
    if serving.service_account_name:
        pod_spec["serviceAccountName"] = serving.service_account_name
    deployment_spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(revision.revision, {**labels, LABEL_ROLE: role}),
        "spec": {
            **deployment_spec,
            "selector": {"matchLabels": {LABEL_MDEP: owner.name, LABEL_REVISION: revision.revision}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "minReadySeconds": 0,
            "paused": False,
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 2,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(serving.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def _service_spec(selector: dict[str, str], port: int) -> dict[str, Any]:
    """A ClusterIP Service spec that balances over ready pods only, without stickiness: the
    replicas router's split is exactly the ready-pod ratio only under these settings."""
    return {
        "type": "ClusterIP",
        "selector": selector,
        "ports": [{"name": HTTP_PORT_NAME, "port": port, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"}],
        "sessionAffinity": "None",
        "publishNotReadyAddresses": False,
        "internalTrafficPolicy": "Cluster",
    }


def revision_service(
    owner: Owner, spec: ModelDeploymentSpec, revision: RevisionState, role: str
) -> dict[str, Any]:
    """The Service of one revision: what mesh routers weight."""
    labels = {**pod_labels(owner, revision), LABEL_ROLE: role}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(revision.revision, labels),
        "spec": _service_spec(
            {LABEL_MDEP: owner.name, LABEL_REVISION: revision.revision}, revision.template.serving.port
        ),
    }


def entry_service(
    owner: Owner, spec: ModelDeploymentSpec, stable_revision: str | None = None
) -> dict[str, Any]:
    """The Service named after the ModelDeployment: the model's stable address.

    With the replicas router it selects the pods of every revision, which *is* the traffic split.
    With a mesh router it selects only the stable revision (``stable_revision``), so a client outside
    the mesh never bypasses the weights and reaches the canary; mesh clients are routed by the
    HTTPRoute or VirtualService."""
    selector = {LABEL_MDEP: owner.name}
    if not spec.traffic.router_kind.follows_ready_pods and stable_revision is not None:
        selector[LABEL_REVISION] = stable_revision
    labels = {
        "app.kubernetes.io/name": spec.model.name,
        "app.kubernetes.io/instance": owner.name,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MDEP: owner.name,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(owner.name, labels),
        "spec": _service_spec(selector, spec.serving.port),
    }


def _scaling_metric(autoscaling: Autoscaling) -> dict[str, Any]:
    """The HPA's one metric: CPU utilization, or the custom metric (autoscaling/v2 MetricSpec)."""
    if autoscaling.metric is None:
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                },
            },
        }
    metric: ScalingMetric = autoscaling.metric
    identifier: dict[str, Any] = {"name": metric.name}
    if metric.selector:
        identifier["selector"] = {"matchLabels": dict(metric.selector)}
    if metric.target_average_value is not None:
        target = {"type": "AverageValue", "averageValue": metric.target_average_value}
    else:
        target = {"type": "Value", "value": str(metric.target_value)}
    if metric.type == ScalingMetricType.PODS:
        return {"type": "Pods", "pods": {"metric": identifier, "target": target}}
    if metric.type == ScalingMetricType.OBJECT:
        assert metric.described_object is not None
        described = metric.described_object.to_wire()
        return {
            "type": "Object",
            "object": {"describedObject": described, "metric": identifier, "target": target},
        }
    return {"type": "External", "external": {"metric": identifier, "target": target}}


def horizontal_pod_autoscaler(
    owner: Owner,
    autoscaling: Autoscaling,
    revision: RevisionState,
    role: str,
    hold_scale_down: bool = False,
) -> dict[str, Any]:
    """The HPA (autoscaling/v2) of one revision, named after its Deployment.

    ``hold_scale_down``: scale up only (``selectPolicy: Disabled``), for stable behind the replicas
    router while the canary's share is counted against stable's pods."""
    labels = {**pod_labels(owner, revision), LABEL_ROLE: role}
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": revision.revision},
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        "metrics": [_scaling_metric(autoscaling)],
    }
    if hold_scale_down:
        spec["behavior"] = {"scaleDown": {"selectPolicy": "Disabled"}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": owner.metadata(revision.revision, labels),
        "spec": spec,
    }


LABEL_LOAD_TEST_OF = "mlcanary.io/load-test-of"
LOAD_TEST_CONTAINER = "loadtest"
LOAD_TEST_TTL_SECONDS = 3600  # finished load test Jobs stay an hour for `kubectl logs`, then go
TERMINATION_LOG = "/dev/termination-log"


LOAD_TEST_BODIES_DIR = "/etc/mlcanary/load-test"
LOAD_TEST_BODIES_FILE = "bodies.json"


def load_test_job(
    owner: Owner,
    spec: ModelDeploymentSpec,
    revision: RevisionState,
    job_name: str,
    target_url: str,
    active_deadline_seconds: int,
    rps: float | None = None,
) -> dict[str, Any]:
    """The Job that load-tests ``revision`` through ``target_url`` (its own Service, never the
    public route). Its pods carry no ModelDeployment label: no Service of the model ever selects them.

    Built-in generator: one pod, no retry (a second run would measure a different canary state),
    the result as one JSON line in the container's termination message (read by the operator from
    the pod's status: no log access needed). jobTemplate: the user's pod template, restartPolicy
    Never, MLCANARY_TARGET_URL added to each container; its exit code is the verdict."""
    test = spec.load_test
    assert test is not None
    labels = {
        LABEL_MDEP: owner.name,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_REVISION: revision.revision,
    }
    pod_meta_labels = {LABEL_LOAD_TEST_OF: owner.name, LABEL_REVISION: revision.revision}
    if test.job_template:
        template = _user_load_test_pod(test, target_url)
    else:
        assert rps is not None, "the built-in generator needs its rate"
        template = _generator_pod(test, revision, target_url, rps)
    template.setdefault("metadata", {})
    template["metadata"]["labels"] = {**(template["metadata"].get("labels") or {}), **pod_meta_labels}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(job_name, labels),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": active_deadline_seconds,
            "ttlSecondsAfterFinished": LOAD_TEST_TTL_SECONDS,
            "template": template,
        },
    }


def _generator_pod(test: LoadTest, revision: RevisionState, target_url: str, rps: float) -> dict[str, Any]:
    model = revision.template.model
    serving = revision.template.serving
    bodies = test.bodies_config_map
    source = (
        ["--bodies", f"{LOAD_TEST_BODIES_DIR}/{LOAD_TEST_BODIES_FILE}"] if bodies else ["--bundle", model.uri]
    )
    args = [
        "--url",
        target_url,
        *source,
        "--rps",
        f"{rps:g}",
        "--concurrency",
        str(test.concurrency),
        "--duration",
        test.duration,
        "--warmup",
        test.warmup,
        "--timeout",
        test.request_timeout,
        "--termination-log",
        TERMINATION_LOG,
    ]
    if model.sha256 and not bodies:
        args += ["--sha256", model.sha256]
    container: dict[str, Any] = {
        "name": LOAD_TEST_CONTAINER,
        "image": test.image or serving.image,
        "command": ["python", "-m", "mlcanary_serving.loadtest"],
        "args": args,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if bodies:  # the ConfigMap key as one read-only file: the kubelet mounts it, the operator never reads it
        container["volumeMounts"] = [{"name": "bodies", "mountPath": LOAD_TEST_BODIES_DIR, "readOnly": True}]
        pod_spec["volumes"] = [
            {
                "name": "bodies",
                "configMap": {
                    "name": bodies.name,
                    "items": [{"key": bodies.key, "path": LOAD_TEST_BODIES_FILE}],
                },
            }
        ]
    return {"metadata": {}, "spec": pod_spec}


def _user_load_test_pod(test: LoadTest, target_url: str) -> dict[str, Any]:
    template = json.loads(json.dumps(test.job_template))
    pod_spec = template.setdefault("spec", {})
    pod_spec["restartPolicy"] = "Never"
    for container in pod_spec.get("containers") or []:
        env = [e for e in container.get("env") or [] if e.get("name") != "MLCANARY_TARGET_URL"]
        container["env"] = [*env, {"name": "MLCANARY_TARGET_URL", "value": target_url}]
    return dict(template)
