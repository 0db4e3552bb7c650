"""Operator settings, read once from the environment (the Helm chart sets these).

| variable | default | meaning |
|---|---|---|
| MLCANARY_PROMETHEUS_URL | http://prometheus-operated.monitoring:9090 | default Prometheus for analysis |
| MLCANARY_METRICS_SOURCE | prometheus | `prometheus`, or `file:/path.json` (tests/dev stand-in) |
| MLCANARY_TICK_SECONDS | 10 | how often a ModelDeployment with a rollout in flight is reconciled (and the retry interval after a failed tick) |
| MLCANARY_CHILD_CACHE | true | read children (Deployments, Services, routes) from watch-fed caches; `false` reads them with a request per tick (diagnostics, and the benchmark's naive baseline) |
| MLCANARY_IDLE_SECONDS | 300 | how often a settled ModelDeployment is reconciled when nothing changes (changes to it or its children wake it at once) |
| MLCANARY_QUERY_TIMEOUT_SECONDS | 10 | timeout of one analysis query |
| MLCANARY_PROMETHEUS_NAMESPACE_LABEL | (none) | scope every analysis query, built-in and custom, to the ModelDeployment's namespace by this label (e.g. `namespace`, which PodMonitors add): the matcher is injected into every selector |
| MLCANARY_CUSTOM_QUERIES | scoped | custom PromQL in `spec.analysis.metrics[].query`: `scoped` (allowed only with a namespace label, which is then enforced), `unscoped` (allowed without one: such queries can read every namespace's series), `disabled` |
| MLCANARY_QUERY_MAX_RANGE_SECONDS | 3600 | longest range (`[5m]`) or subquery window a custom query may use; `[{{interval}}]` counts as the spec's interval |
| MLCANARY_QUERY_MIN_SUBQUERY_STEP_SECONDS | 10 | finest subquery resolution (`[30m:10s]`) a custom query may use; nested subqueries may evaluate at most max range / this many points |
| MLCANARY_METRICS_PORT | 8080 | port of the operator's own /metrics (0 disables) |
| MLCANARY_METRICS_HOST | 0.0.0.0 | address of the operator's own /metrics |
| MLCANARY_LOG_FORMAT | plain | `plain` or `json` |
| MLCANARY_NAMESPACES | (all) | comma-separated namespaces to watch; empty = cluster-wide |
| MLCANARY_SERVING_IMAGE_PULL_POLICY | IfNotPresent | pull policy of serving containers |
| MLCANARY_LEADER_ELECTION | false | run Kopf only while holding a `coordination.k8s.io/v1` Lease (`mlcanary run`; several replicas) |
| MLCANARY_LEADER_ELECTION_NAMESPACE | (the pod's) | namespace of the Lease: else `POD_NAMESPACE`, else the ServiceAccount's namespace file |
| MLCANARY_LEADER_ELECTION_LEASE_NAME | mlcanary-operator | name of the Lease |
| MLCANARY_POD_NAME | (hostname) | this replica's identity: the Lease's holderIdentity |
| MLCANARY_LEADER_ELECTION_LEASE_DURATION_SECONDS | 15 | how long followers wait after the last renewal seen before taking over (whole seconds, 1-300) |
| MLCANARY_LEADER_ELECTION_RENEW_DEADLINE_SECONDS | 10 | the leader exits when it could not renew for this long (< lease duration) |
| MLCANARY_LEADER_ELECTION_RETRY_PERIOD_SECONDS | 2 | how often the leader renews and followers try (0.1-60, renew deadline > 1.2 x this) |
| MLCANARY_NOTIFY_TIMEOUT_SECONDS | 5 | timeout of one notification attempt (at most 60) |
| MLCANARY_NOTIFY_ATTEMPTS | 3 | attempts per notification (backoff 1 s, 2 s, ... between them); 1..10 |
| MLCANARY_LOAD_TEST_TARGET_URL | http://{service}.{namespace}.svc:{port} | where a load test Job sends its requests: the canary revision's own Service (`{service}`, `{namespace}`, `{port}` are filled in; the local stack points it at its gateway) |
| MLCANARY_RETRAIN_EVAL_SECONDS | 60 | how often the one retraining loop queries Prometheus for every `spec.retraining` trigger (one query per metric kind across all objects); 1..3600 |
| MLCANARY_NOTIFY_QUEUE_SIZE | 256 | notifications waiting to be sent; past it new ones are dropped (and counted); 1..100000 |
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

CustomQueryMode = Literal["scoped", "unscoped", "disabled"]
CUSTOM_QUERY_MODES: tuple[CustomQueryMode, ...] = ("scoped", "unscoped", "disabled")
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# client-go's leader election jitters the retry period by up to this factor; the renew deadline
# must leave room for at least one jittered retry.
RETRY_JITTER = 1.2


@dataclass(frozen=True)
class LeaderElection:
    """Lease timings as client-go's (15 s / 10 s / 2 s). A leader that cannot renew for
    ``renew_deadline`` exits; followers take over ``lease_duration`` after the last renewal they saw:
    the gap between the two is what keeps two leaders from ever writing at once."""

    enabled: bool = False
    namespace: str = ""
    lease_name: str = "mlcanary-operator"
    identity: str = ""
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.lease_duration <= 300:
            raise ValueError("MLCANARY_LEADER_ELECTION_LEASE_DURATION_SECONDS must be 1 to 300 seconds")
        if not 0.1 <= self.retry_period <= 60:
            raise ValueError("MLCANARY_LEADER_ELECTION_RETRY_PERIOD_SECONDS must be 0.1 to 60 seconds")
        if not self.retry_period * RETRY_JITTER < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "MLCANARY_LEADER_ELECTION_RENEW_DEADLINE_SECONDS must be below the lease duration "
                f"({self.lease_duration}) and above {RETRY_JITTER} x the retry period ({self.retry_period})"
            )
        if self.enabled and not (self.namespace and self.identity):
            raise ValueError(
                "leader election needs the Lease's namespace (MLCANARY_LEADER_ELECTION_NAMESPACE or "
                "POD_NAMESPACE) and an identity (MLCANARY_POD_NAME)"
            )

    @classmethod
    def from_env(cls, get: Callable[[str, str], str]) -> LeaderElection:
        enabled = get("LEADER_ELECTION", "false").lower() in ("true", "1", "yes", "on")
        namespace = get("LEADER_ELECTION_NAMESPACE", "") or os.environ.get("POD_NAMESPACE", "")
        if enabled and not namespace and os.path.exists(SERVICE_ACCOUNT_NAMESPACE_FILE):
            with open(SERVICE_ACCOUNT_NAMESPACE_FILE) as file:
                namespace = file.read().strip()
        try:
            lease_duration = int(get("LEADER_ELECTION_LEASE_DURATION_SECONDS", "15"))
            renew_deadline = float(get("LEADER_ELECTION_RENEW_DEADLINE_SECONDS", "10"))
            retry_period = float(get("LEADER_ELECTION_RETRY_PERIOD_SECONDS", "2"))
        except ValueError as error:
            raise ValueError(f"MLCANARY_LEADER_ELECTION_*_SECONDS: {error}") from None
        return cls(
            enabled=enabled,
            namespace=namespace,
            lease_name=get("LEADER_ELECTION_LEASE_NAME", cls.lease_name),
            identity=get("POD_NAME", "") or (socket.gethostname() if enabled else ""),
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
        )


NOTIFY_MAX_TIMEOUT_SECONDS = 60.0  # a longer attempt only holds a worker: the receiver is down


@dataclass(frozen=True)
class Settings:
    prometheus_url: str = "http://prometheus-operated.monitoring:9090"
    metrics_source: str = "prometheus"
    tick_seconds: float = 10.0
    idle_seconds: float = 300.0
    child_cache: bool = True
    query_timeout_seconds: float = 10.0
    prometheus_namespace_label: str | None = None
    custom_queries: CustomQueryMode = "scoped"
    query_max_range_seconds: float = 3600.0
    query_min_subquery_step_seconds: float = 10.0
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    log_format: str = "plain"
    namespaces: list[str] = field(default_factory=list)
    image_pull_policy: str = "IfNotPresent"
    leader_election: LeaderElection = field(default_factory=LeaderElection)
    notify_timeout_seconds: float = 5.0
    notify_attempts: int = 3
    notify_queue_size: int = 256
    load_test_target_url: str = "http://{service}.{namespace}.svc:{port}"
    retrain_eval_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        source = dict(os.environ if env is None else env)
        defaults = cls()

        def get(name: str, default: str) -> str:
            return source.get(f"MLCANARY_{name}", default) or default

        namespaces = [n.strip() for n in get("NAMESPACES", "").split(",") if n.strip()]
        log_format = get("LOG_FORMAT", defaults.log_format)
        if log_format not in ("plain", "json"):
            raise ValueError(f"MLCANARY_LOG_FORMAT must be plain or json, not {log_format!r}")
        label = get("PROMETHEUS_NAMESPACE_LABEL", "") or None
        if label is not None and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
            raise ValueError(f"MLCANARY_PROMETHEUS_NAMESPACE_LABEL {label!r} is not a Prometheus label name")
        target = get("LOAD_TEST_TARGET_URL", defaults.load_test_target_url)
        if not re.fullmatch(r"https?://\S+", target) or "{service}" not in target:
            raise ValueError("MLCANARY_LOAD_TEST_TARGET_URL must be an http(s) URL containing {service}")
        custom_queries = get("CUSTOM_QUERIES", defaults.custom_queries)
        if custom_queries not in CUSTOM_QUERY_MODES:
            raise ValueError(f"MLCANARY_CUSTOM_QUERIES must be one of {', '.join(CUSTOM_QUERY_MODES)}")

        def positive(name: str, default: float) -> float:
            value = float(get(name, str(default)))
            if not 0 < value < float("inf"):
                raise ValueError(f"MLCANARY_{name} must be a positive number of seconds")
            return value

        def bounded(name: str, default: int, low: int, high: int) -> int:
            value = int(get(name, str(default)))
            if not low <= value <= high:
                raise ValueError(f"MLCANARY_{name} must be between {low} and {high}")
            return value

        return cls(
            prometheus_url=get("PROMETHEUS_URL", defaults.prometheus_url),
            metrics_source=get("METRICS_SOURCE", defaults.metrics_source),
            tick_seconds=float(get("TICK_SECONDS", str(defaults.tick_seconds))),
            idle_seconds=float(get("IDLE_SECONDS", str(defaults.idle_seconds))),
            child_cache=get("CHILD_CACHE", "true").lower() not in ("false", "0", "no", "off"),
            query_timeout_seconds=float(get("QUERY_TIMEOUT_SECONDS", str(defaults.query_timeout_seconds))),
            prometheus_namespace_label=label,
            custom_queries=custom_queries,
            query_max_range_seconds=positive("QUERY_MAX_RANGE_SECONDS", defaults.query_max_range_seconds),
            query_min_subquery_step_seconds=positive(
                "QUERY_MIN_SUBQUERY_STEP_SECONDS", defaults.query_min_subquery_step_seconds
            ),
            metrics_port=int(get("METRICS_PORT", str(defaults.metrics_port))),
            metrics_host=get("METRICS_HOST", defaults.metrics_host),
            log_format=log_format,
            namespaces=namespaces,
            image_pull_policy=get("SERVING_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            leader_election=LeaderElection.from_env(get),
            notify_timeout_seconds=min(
                positive("NOTIFY_TIMEOUT_SECONDS", defaults.notify_timeout_seconds),
                NOTIFY_MAX_TIMEOUT_SECONDS,
            ),
            notify_attempts=bounded("NOTIFY_ATTEMPTS", defaults.notify_attempts, 1, 10),
            notify_queue_size=bounded("NOTIFY_QUEUE_SIZE", defaults.notify_queue_size, 1, 100_000),
            load_test_target_url=target,
            retrain_eval_seconds=float(
                bounded("RETRAIN_EVAL_SECONDS", int(defaults.retrain_eval_seconds), 1, 3600)
            ),
        )

    def load_test_target(self, service: str, namespace: str, port: int) -> str:
        """URL of a revision's own Service for its load test."""
        return self.load_test_target_url.format(service=service, namespace=namespace, port=port)

    @property
    def user_agent(self) -> str:
        """Names this replica in API requests (several replicas share one ServiceAccount)."""
        return f"mlcanary-operator/{self.leader_election.identity or socket.gethostname()}"
