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
| MLCANARY_NOTIFY_TIMEOUT_SECONDS | 5 | timeout of one notification attempt (at most 60) |
| MLCANARY_NOTIFY_ATTEMPTS | 3 | attempts per notification (backoff 1 s, 2 s, ... between them); 1..10 |
| MLCANARY_NOTIFY_QUEUE_SIZE | 256 | notifications waiting to be sent; past it new ones are dropped (and counted); 1..100000 |
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal

CustomQueryMode = Literal["scoped", "unscoped", "disabled"]
CUSTOM_QUERY_MODES: tuple[CustomQueryMode, ...] = ("scoped", "unscoped", "disabled")


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
    notify_timeout_seconds: float = 5.0
    notify_attempts: int = 3
    notify_queue_size: int = 256

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
            notify_timeout_seconds=min(
                positive("NOTIFY_TIMEOUT_SECONDS", defaults.notify_timeout_seconds),
                NOTIFY_MAX_TIMEOUT_SECONDS,
            ),
            notify_attempts=bounded("NOTIFY_ATTEMPTS", defaults.notify_attempts, 1, 10),
            notify_queue_size=bounded("NOTIFY_QUEUE_SIZE", defaults.notify_queue_size, 1, 100_000),
        )
