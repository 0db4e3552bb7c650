"""The local stack's Prometheus runs with query limits, and the operator it starts scopes queries to
the ModelDeployment's namespace (the local kubelet's targets carry it, as a PodMonitor's do)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mlcanary_local.prometheus_proc import PrometheusMissingError, PrometheusProcess, find_prometheus
from mlcanary_local.stack import LocalStack, StackConfig


def _prometheus_available() -> bool:
    try:
        find_prometheus()
    except PrometheusMissingError:
        return False
    return True


@pytest.mark.skipif(
    not _prometheus_available(), reason="needs the prometheus binary (make setup installs it)"
)
def test_a_query_over_the_sample_limit_is_refused(tmp_path: Path) -> None:
    prometheus = PrometheusProcess(tmp_path, tmp_path / "targets.json")
    prometheus.start()
    try:
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/status/flags", timeout=5) as response:
            flags = json.loads(response.read())["data"]
        assert flags["query.max-samples"] == "5000000"
        assert flags["query.timeout"] == "30s"
        assert flags["query.max-concurrency"] == "4"
        # 5 days of 1 ms steps is far beyond 5M samples: refused, not computed.
        query = urllib.parse.urlencode({"query": "count_over_time(vector(1)[5d:1ms])"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{query}", timeout=30)
        assert "too many samples" in refused.value.read().decode()
    finally:
        prometheus.stop()


def test_the_operator_scopes_queries_by_the_namespace_label(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, StackConfig())
    assert stack.operator_env()["MLCANARY_PROMETHEUS_NAMESPACE_LABEL"] == "namespace"
