"""The Helm chart with the real helm binary: lint, render matrix, values schema, RBAC, pod security."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlcanary import kubeapi, resources
from mlcanary.settings import Settings

from .helpers import CHART, CI_VALUES, NAMESPACE, RELEASE, by_kind, helm, needs_helm, one, render

pytestmark = needs_helm

MATRIX = [pytest.param(path, id=path.stem) for path in CI_VALUES]
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}


def test_ci_values_matrix_covers_the_modes() -> None:
    stems = {p.stem for p in CI_VALUES}
    assert {"default-values", "namespaced-values", "monitoring-values", "ha-values"} <= stems


@pytest.mark.parametrize("values_file", MATRIX)
def test_helm_lint_strict(values_file: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "--values", str(values_file))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", MATRIX)
def test_template_renders_the_operator(values_file: Path, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered[values_file.stem]
    deployment = one(objects, "Deployment")
    values = yaml.safe_load(values_file.read_text()) or {}
    if (values.get("leaderElection") or {}).get("enabled"):
        assert deployment["spec"]["replicas"] == values["replicaCount"]
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert (
            one(objects, "PodDisruptionBudget")["spec"]["minAvailable"]
            == values["podDisruptionBudget"]["minAvailable"]
        )
    else:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert not by_kind(objects, "PodDisruptionBudget")
    crd = one(objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "modeldeployments.mlcanary.io"
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED and obj["kind"] not in {"Role", "RoleBinding", "ConfigMap"}:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


# --------------------------------------------------------------------------------- values schema


def _values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def test_values_yaml_and_ci_values_satisfy_the_schema() -> None:
    schema = _values_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    for path in CI_VALUES:
        merged = _merge(defaults, yaml.safe_load(path.read_text()) or {})
        jsonschema.validate(merged, schema)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicaCount=2", "leaderElection.enabled"),  # several replicas only with leader election
        ("replicaCount=0", "replicaCount"),
        ("replicaCount=6", "replicaCount"),
        ("leaderElection.leaseDurationSeconds=1", "leaseDurationSeconds"),
        ("leaderElection.retryPeriodSeconds=0", "retryPeriodSeconds"),
        ("podDisruptionBudget.minAvailable=0", "minAvailable"),
        ("logFormat=xml", "logFormat"),
        ("metrics.port=-1", "metrics.port"),
        ("health.port=70000", "health.port"),
        ("analysis.tickSeconds=0", "analysis.tickSeconds"),
        ("analysis.metricsSource=influx", "analysis.metricsSource"),
        ("prometheus.url=prometheus:9090", "prometheus.url"),
        ("prometheus.namespaceLabel=k8s-namespace", "prometheus.namespaceLabel"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
        ("image.digest=latest", "image.digest"),
        ("watchNamespaces={Team_A}", "watchNamespaces"),
        ("monitoring.prometheusRule.stuckAfter=an hour", "stuckAfter"),
        ("monitoring.serving.podMonitor.enabled=yes", "enabled"),
        ("replicas=1", "replicas"),  # a typo of replicaCount: unknown keys are refused
        ("rbac.secrets=false", "secrets"),
    ],
)
def test_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    result = helm("template", "mlc", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_leader_election_mode_renders_replicas_lease_rbac_and_a_disruption_budget() -> None:
    objects = render(
        sets=("replicaCount=3", "leaderElection.enabled=true", "leaderElection.retryPeriodSeconds=1")
    )
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--leader-election" in container["args"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert set(env) >= LEADER_ELECTION_ENV - {"MLCANARY_LEADER_ELECTION"}
    assert env["MLCANARY_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MLCANARY_LEADER_ELECTION_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["MLCANARY_LEADER_ELECTION_LEASE_NAME"] == f"{RELEASE}-mlcanary"
    timings = {
        k: env[f"MLCANARY_LEADER_ELECTION_{k}_SECONDS"]
        for k in ("LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD")
    }
    assert timings == {"LEASE_DURATION": "15", "RENEW_DEADLINE": "10", "RETRY_PERIOD": "1"}
    # The operator accepts exactly what the chart renders.
    assert Settings.from_env(
        {
            **env,
            "MLCANARY_POD_NAME": "p",
            "MLCANARY_LEADER_ELECTION_NAMESPACE": NAMESPACE,
            "MLCANARY_LEADER_ELECTION": "true",
        }
    ).leader_election.enabled
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    role = next(r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader-election"))
    assert role["metadata"]["namespace"] == NAMESPACE
    assert {r["resources"][0] for r in role["rules"]} == {"leases"}


def test_one_replica_has_no_lease_rbac_and_no_disruption_budget() -> None:
    objects = render()
    assert not by_kind(objects, "PodDisruptionBudget")
    assert not [r for r in by_kind(objects, "Role") if "leases" in str(r["rules"])]
    assert (
        "--leader-election"
        not in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    )


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (("leaderElection.renewDeadlineSeconds=15",), "below leaderElection.leaseDurationSeconds"),
        (("leaderElection.retryPeriodSeconds=9",), "above 1.2 x leaderElection.retryPeriodSeconds"),
    ],
)
def test_leader_election_timings_must_nest(sets: tuple[str, ...], complaint: str) -> None:
    args = [item for s in ("leaderElection.enabled=true", *sets) for item in ("--set", s)]
    result = helm("template", "mlc", str(CHART), *args, check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


# -------------------------------------------------------------------------------------------- RBAC


def _rules(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for role in by_kind(objects, kind) for rule in role.get("rules", [])]


@pytest.mark.parametrize("values_file", MATRIX)
def test_rbac_has_no_wildcards_and_secrets_are_read_only(
    values_file: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[values_file.stem]
    rules = _rules(objects, "ClusterRole") + _rules(objects, "Role")
    assert rules
    for rule in rules:
        for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(key, []), rule
            assert not any("*" in item for item in rule.get(key, []) if item), rule
        if "secrets" in rule["resources"]:
            assert rule["apiGroups"] == [""]
            assert rule["verbs"] == ["get"], "Secrets are read-only: get only, no list/watch"


def _allowed(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


NEEDED = {
    # (group, resource): verbs the operator (and Kopf) use — tests/integration/test_chart_rbac.py checks
    # them against what the operator really requested. No update (PUT) anywhere: it only patches.
    ("mlcanary.io", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("mlcanary.io", "modeldeployments/status"): {"patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch", "delete"},
    ("networking.istio.io", "virtualservices"): {"get", "list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "patch", "delete"},
    # spec.loadTest: its Job (never patched: a pod template is immutable) and the result its pod
    # leaves in the termination message (a label-selected list; no pod logs). spec.retraining:
    # requested training Jobs are created once; the schedule's CronJob is owned.
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "pods"): {"list"},
    ("batch", "cronjobs"): {"get", "list", "watch", "create", "patch", "delete"},
}


def test_cluster_role_grants_exactly_what_the_operator_uses(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["default-values"]
    role = next(r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"] == "mlc-mlcanary")
    rules = role["rules"]
    for (group, resource), verbs in NEEDED.items():
        assert _allowed(rules, group, resource) == verbs, (group, resource)
    assert _allowed(rules, "apiextensions.k8s.io", "customresourcedefinitions") == {"list", "watch"}
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == set(NEEDED) | {("apiextensions.k8s.io", "customresourcedefinitions")}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "mlc-mlcanary"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlc-mlcanary", "namespace": NAMESPACE}]


def test_every_resource_the_kube_facade_addresses_is_granted(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["default-values"]
    rules = _rules(objects, "ClusterRole")
    for resource in (
        kubeapi.DEPLOYMENTS, kubeapi.SERVICES, kubeapi.SECRETS, kubeapi.EVENTS,
        kubeapi.MODEL_DEPLOYMENTS, kubeapi.HTTPROUTES, kubeapi.VIRTUALSERVICES,
        kubeapi.HORIZONTAL_POD_AUTOSCALERS, kubeapi.JOBS, kubeapi.PODS,
    ):  # fmt: skip
        group = resource.api_version.rpartition("/")[0]
        assert _allowed(rules, group, resource.plural), resource


def test_namespaced_mode_uses_roles_and_only_reads_crds_cluster_wide(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespaced-values"]
    # Kopf observes CRDs in every mode; without this it retries 403s for a minute before serving.
    cluster_role = one(objects, "ClusterRole")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        }
    ]
    assert one(objects, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objects, "RoleBinding")}
    assert set(roles) == set(bindings) == {"ml-team-a", "ml-team-b"}
    for namespace, role in roles.items():
        for (group, resource), verbs in NEEDED.items():
            assert _allowed(role["rules"], group, resource) == verbs, (namespace, group, resource)
        assert bindings[namespace]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]
        }  # fmt: skip
        assert bindings[namespace]["subjects"][0]["namespace"] == NAMESPACE
    env = _env(one(objects, "Deployment"))
    assert env["MLCANARY_NAMESPACES"] == "ml-team-a,ml-team-b"
    assert Settings.from_env(env).namespaces == ["ml-team-a", "ml-team-b"]
    podmonitor = one(objects, "PodMonitor")
    assert podmonitor["spec"]["namespaceSelector"] == {"matchNames": ["ml-team-a", "ml-team-b"]}


def test_rbac_toggles_trim_rules(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["custom-values"]
    rules = _rules(objects, "ClusterRole")
    assert not _allowed(rules, "", "secrets")
    assert not _allowed(rules, "networking.istio.io", "virtualservices")
    assert _allowed(rules, "gateway.networking.k8s.io", "httproutes")
    assert len(by_kind(objects, "ClusterRole")) == 1, "aggregateToDefaultRoles: false"
    assert not by_kind(objects, "ServiceAccount"), "serviceAccount.create: false"
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ml-operator"


def test_aggregated_roles_let_editors_manage_modeldeployments(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(rendered["default-values"], "ClusterRole")}
    edit, view = roles["mlc-mlcanary-edit"], roles["mlc-mlcanary-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert set(view["rules"][0]["verbs"]) == {"get", "list", "watch"}


# -------------------------------------------------------------------------- pod, probes, settings


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(deployment)["env"] if "value" in e}


@pytest.mark.parametrize("values_file", MATRIX)
def test_pod_security_is_restricted(values_file: Path, rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = one(rendered[values_file.stem], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    container = _container(deployment)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp next to the read-only root"


@pytest.mark.parametrize("values_file", MATRIX)
def test_probes_resources_and_ports(values_file: Path, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered[values_file.stem]
    container = _container(one(objects, "Deployment"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness_flag = next(a for a in container["args"] if a.startswith("--liveness="))
    assert liveness_flag == f"--liveness=http://0.0.0.0:{ports['health']}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert container["args"][0] == "run"
    env = _env(one(objects, "Deployment"))
    assert int(env["MLCANARY_METRICS_PORT"]) == ports["metrics"]
    service = next(s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics"))
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    selector = service["spec"]["selector"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


SETTINGS_ENV = {
    "MLCANARY_PROMETHEUS_URL", "MLCANARY_METRICS_SOURCE", "MLCANARY_TICK_SECONDS",
    "MLCANARY_IDLE_SECONDS", "MLCANARY_CHILD_CACHE",
    "MLCANARY_QUERY_TIMEOUT_SECONDS",
    "MLCANARY_PROMETHEUS_NAMESPACE_LABEL", "MLCANARY_METRICS_PORT", "MLCANARY_METRICS_HOST",
    "MLCANARY_LOG_FORMAT", "MLCANARY_NAMESPACES", "MLCANARY_SERVING_IMAGE_PULL_POLICY",
    "MLCANARY_CUSTOM_QUERIES", "MLCANARY_QUERY_MAX_RANGE_SECONDS", "MLCANARY_QUERY_MIN_SUBQUERY_STEP_SECONDS",
    "MLCANARY_NOTIFY_TIMEOUT_SECONDS", "MLCANARY_NOTIFY_ATTEMPTS", "MLCANARY_NOTIFY_QUEUE_SIZE",
    "MLCANARY_LOAD_TEST_TARGET_URL",
    "MLCANARY_RETRAIN_EVAL_SECONDS",
}  # fmt: skip
# Set in leader-election mode only (MLCANARY_LEADER_ELECTION by the --leader-election argument).
LEADER_ELECTION_ENV = {
    "MLCANARY_LEADER_ELECTION", "MLCANARY_POD_NAME", "MLCANARY_LEADER_ELECTION_NAMESPACE",
    "MLCANARY_LEADER_ELECTION_LEASE_NAME", "MLCANARY_LEADER_ELECTION_LEASE_DURATION_SECONDS",
    "MLCANARY_LEADER_ELECTION_RENEW_DEADLINE_SECONDS", "MLCANARY_LEADER_ELECTION_RETRY_PERIOD_SECONDS",
}  # fmt: skip


def test_settings_documented_in_settings_py_are_all_set() -> None:
    import mlcanary.settings as settings_module

    documented = {
        word.strip("|` ") for word in (settings_module.__doc__ or "").split() if "MLCANARY_" in word
    }
    assert documented == SETTINGS_ENV | LEADER_ELECTION_ENV


def test_values_reach_the_operator_settings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    default = Settings.from_env(_env(one(rendered["default-values"], "Deployment")))
    assert default == Settings(), "chart defaults equal the operator's own defaults"
    deployment = one(rendered["custom-values"], "Deployment")
    env = _env(deployment)
    assert set(env) >= SETTINGS_ENV
    settings = Settings.from_env(env)
    assert settings.prometheus_url == "https://prometheus.monitoring.svc:9091"
    assert settings.tick_seconds == 5
    assert settings.query_timeout_seconds == 3.5
    assert settings.metrics_port == 9102
    assert settings.log_format == "json"
    assert settings.image_pull_policy == "Always"
    assert settings.namespaces == []
    assert settings.prometheus_namespace_label is None, "no PodMonitor, no explicit label"
    assert settings.custom_queries == "unscoped"
    assert (settings.query_max_range_seconds, settings.query_min_subquery_step_seconds) == (86400, 60)
    assert settings.retrain_eval_seconds == 30
    assert (settings.notify_timeout_seconds, settings.notify_attempts, settings.notify_queue_size) == (
        2.5,
        5,
        1000,
    )
    container = _container(deployment)
    assert container["image"] == (
        "registry.example.com/ml/mlcanary-operator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert "--verbose" in container["args"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"} in container["env"]


def test_namespace_label_follows_the_podmonitor_unless_set(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The chart's PodMonitor gives serving series a "namespace" label, so analysis can select on it."""
    with_podmonitor = Settings.from_env(_env(one(rendered["monitoring-values"], "Deployment")))
    assert with_podmonitor.prometheus_namespace_label == "namespace"
    explicit = render(sets=("prometheus.namespaceLabel=kubernetes_namespace",))
    assert (
        Settings.from_env(_env(one(explicit, "Deployment"))).prometheus_namespace_label
        == "kubernetes_namespace"
    )


def test_image_tag_defaults_to_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    container = _container(one(render(), "Deployment"))
    assert container["image"] == f"mlcanary/operator:{chart['appVersion']}"


def test_serving_pod_labels_match_the_podmonitor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The PodMonitor selects what resources.py puts on serving pods, on the port it names."""
    spec = one(rendered["monitoring-values"], "PodMonitor")["spec"]
    assert spec["selector"]["matchLabels"] == {resources.LABEL_MANAGED_BY: resources.MANAGED_BY}
    assert spec["selector"]["matchExpressions"] == [{"key": resources.LABEL_MDEP, "operator": "Exists"}]
    assert spec["podMetricsEndpoints"][0]["port"] == resources.HTTP_PORT_NAME
    assert spec["namespaceSelector"] == {"any": True}
