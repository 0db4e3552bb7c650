"""Kopf handlers: the only module that imports kopf. Thin on purpose.

One timer per ModelDeployment is the single writer of its status; everything else happens in
:mod:`mlcanary.reconcile`. Kopf's own bookkeeping goes to annotations under our prefix, and no handler
returns a value (Kopf would write it into status).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import kopf
import kubernetes.client
import kubernetes.config

from mlcanary.analysis.provider import MetricProvider
from mlcanary.analysis.static import FileMetricProvider
from mlcanary.kube import Kube
from mlcanary.models import API_GROUP, API_VERSION, PLURAL, ModelDeploymentSpec
from mlcanary.reconcile import OperatorContext, reconcile
from mlcanary.settings import Settings

SETTINGS = Settings.from_env()
logger = logging.getLogger("mlcanary")


def _api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


def make_provider_factory(settings: Settings, kube: Kube) -> Any:
    """Metric provider per ModelDeployment: Prometheus in production, a JSON file for tests/dev."""

    def factory(spec: ModelDeploymentSpec, namespace: str) -> MetricProvider:
        if settings.metrics_source.startswith("file:"):
            return FileMetricProvider(Path(settings.metrics_source.removeprefix("file:")))
        from mlcanary.analysis.prometheus import provider_for_spec

        provider: MetricProvider = provider_for_spec(
            spec, namespace, settings, kube, namespace_label=settings.prometheus_namespace_label
        )
        return provider

    return factory


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{API_GROUP}/kopf-finalizer"
    settings.watching.server_timeout = 300
    if SETTINGS.namespaces:
        # Namespaced mode runs with Roles only: Kopf must not try to watch CRDs or namespaces
        # cluster-wide (it would log permission errors); the CRD is installed before the operator.
        settings.scanning.disabled = True
    kube = Kube(_api_client())
    context = OperatorContext(
        kube=kube, settings=SETTINGS, provider_factory=make_provider_factory(SETTINGS, kube)
    )
    memo["mlcanary"] = context
    if SETTINGS.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(
            SETTINGS.metrics_port, addr=SETTINGS.metrics_host, registry=context.metrics.registry
        )
        logger.info("operator metrics on %s:%s/metrics", SETTINGS.metrics_host, SETTINGS.metrics_port)


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=SETTINGS.tick_seconds, sharp=False)
async def tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await reconcile(copy.deepcopy(dict(body)), memo["mlcanary"])
