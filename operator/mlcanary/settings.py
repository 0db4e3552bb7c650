"""Operator settings, read once from the environment (the Helm chart sets these).

| variable | default | meaning |
|---|---|---|
| MLCANARY_PROMETHEUS_URL | http://prometheus-operated.monitoring:9090 | default Prometheus for analysis |
| MLCANARY_METRICS_SOURCE | prometheus | `prometheus`, or `file:/path.json` (tests/dev stand-in) |
| MLCANARY_TICK_SECONDS | 10 | how often each ModelDeployment is reconciled |
| MLCANARY_QUERY_TIMEOUT_SECONDS | 10 | timeout of one analysis query |
| MLCANARY_PROMETHEUS_NAMESPACE_LABEL | (none) | also select serving series by this label = the ModelDeployment's namespace (e.g. `namespace` when the scrape config adds it) |
| MLCANARY_METRICS_PORT | 8080 | port of the operator's own /metrics (0 disables) |
| MLCANARY_METRICS_HOST | 0.0.0.0 | address of the operator's own /metrics |
| MLCANARY_LOG_FORMAT | plain | `plain` or `json` |
| MLCANARY_NAMESPACES | (all) | comma-separated namespaces to watch; empty = cluster-wide |
| MLCANARY_SERVING_IMAGE_PULL_POLICY | IfNotPresent | pull policy of serving containers |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    prometheus_url: str = "http://prometheus-operated.monitoring:9090"
    metrics_source: str = "prometheus"
    tick_seconds: float = 10.0
    query_timeout_seconds: float = 10.0
    prometheus_namespace_label: str | None = None
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    log_format: str = "plain"
    namespaces: list[str] = field(default_factory=list)
    image_pull_policy: str = "IfNotPresent"

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
        return cls(
            prometheus_url=get("PROMETHEUS_URL", defaults.prometheus_url),
            metrics_source=get("METRICS_SOURCE", defaults.metrics_source),
            tick_seconds=float(get("TICK_SECONDS", str(defaults.tick_seconds))),
            query_timeout_seconds=float(get("QUERY_TIMEOUT_SECONDS", str(defaults.query_timeout_seconds))),
            prometheus_namespace_label=get("PROMETHEUS_NAMESPACE_LABEL", "") or None,
            metrics_port=int(get("METRICS_PORT", str(defaults.metrics_port))),
            metrics_host=get("METRICS_HOST", defaults.metrics_host),
            log_format=log_format,
            namespaces=namespaces,
            image_pull_policy=get("SERVING_IMAGE_PULL_POLICY", defaults.image_pull_policy),
        )
