"""Kopf handlers: the only module that imports kopf. Thin on purpose.

One daemon per ModelDeployment runs its loop (:mod:`mlcanary.runner`), the single writer of its
status; Kopf's watch events wake it. Kopf's own bookkeeping goes to annotations under our prefix,
and no handler returns a value (Kopf would write it into status).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import kopf

from mlcanary.analysis.provider import MetricProvider
from mlcanary.analysis.static import FileMetricProvider
from mlcanary.kube import ChildCache, Kube
from mlcanary.kubeapi import ApiClient, load_connection
from mlcanary.models import API_GROUP, API_VERSION, PLURAL, ModelDeploymentSpec
from mlcanary.notify.dispatch import Notifier
from mlcanary.operator_metrics import OperatorMetrics
from mlcanary.reconcile import OperatorContext
from mlcanary.retraining.monitor import RetrainingMonitor, WebhookSender
from mlcanary.retraining.shell import Retrainer
from mlcanary.runner import Runner
from mlcanary.settings import Settings

SETTINGS = Settings.from_env()
logger = logging.getLogger("mlcanary")
CACHE_SYNC_SECONDS = 120.0


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
    metrics = OperatorMetrics()
    client = ApiClient(load_connection(), on_request=metrics.count_request, user_agent=SETTINGS.user_agent)
    cache: ChildCache | None = None
    if SETTINGS.child_cache:
        cache = ChildCache(client, SETTINGS.namespaces)
        cache.start()
        # A tick must see every child that exists: a restarted operator that missed one would act on
        # a partial picture. Resources the server does not serve count as synced (and empty).
        if not await cache.wait_synced(CACHE_SYNC_SECONDS):
            raise kopf.PermanentError("the caches of the operator's children did not fill in time")
    # What lives now (modules, the filled caches) lives for the process: out of the cyclic garbage
    # collector's full passes, which otherwise walk it all and pause every tick for ~100 ms with a
    # few hundred objects cached (acyclic objects are still freed when dropped).
    gc.collect()
    gc.freeze()
    kube = Kube(client, cache)
    notifier = Notifier(
        kube,
        metrics,
        queue_size=SETTINGS.notify_queue_size,
        timeout_seconds=SETTINGS.notify_timeout_seconds,
        attempts=SETTINGS.notify_attempts,
    )
    notifier.start()
    context = OperatorContext(
        kube=kube,
        settings=SETTINGS,
        provider_factory=make_provider_factory(SETTINGS, kube),
        metrics=metrics,
        notifier=notifier,
    )
    runner = Runner(context)
    # spec.retraining: one trigger loop for every object (batched queries), one webhook sender.
    monitor = None
    if not SETTINGS.metrics_source.startswith("file:"):
        monitor = RetrainingMonitor(
            SETTINGS.prometheus_url,
            interval_seconds=SETTINGS.retrain_eval_seconds,
            timeout_seconds=SETTINGS.query_timeout_seconds,
            namespace_label=SETTINGS.prometheus_namespace_label,
            wake=runner.wake,
        )
        monitor.start()
    context.retrainer = Retrainer(
        monitor=monitor,
        webhooks=WebhookSender(
            kube,
            timeout_seconds=SETTINGS.notify_timeout_seconds,
            attempts=SETTINGS.notify_attempts,
            wake=runner.wake,
        ),
    )
    memo["mlcanary_retrainer"] = context.retrainer
    for informer in cache.informers.values() if cache is not None else ():
        informer.listeners.append(runner.notify_child)
    memo["mlcanary"] = runner
    memo["mlcanary_client"] = client
    memo["mlcanary_cache"] = cache
    memo["mlcanary_notifier"] = notifier
    if SETTINGS.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(SETTINGS.metrics_port, addr=SETTINGS.metrics_host, registry=metrics.registry)
        logger.info("operator metrics on %s:%s/metrics", SETTINGS.metrics_host, SETTINGS.metrics_port)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    cache = memo.get("mlcanary_cache")
    if cache is not None:
        await cache.stop()
    notifier = memo.get("mlcanary_notifier")
    if notifier is not None:
        await notifier.stop()
    retrainer = memo.get("mlcanary_retrainer")
    if retrainer is not None and retrainer.monitor is not None:
        await retrainer.monitor.stop()
    runner = memo.get("mlcanary")
    if runner is not None:
        await runner.ctx.registry.poller.stop()
    client = memo.get("mlcanary_client")
    if client is not None:
        await client.close()


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=10.0)
async def run(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """The object's loop; ``body`` is kept current by Kopf, ``stopped`` is set when it must end."""
    await memo["mlcanary"].run(body, stopped)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # async: Kopf runs plain functions in a thread pool, which costs a thread hop per event.
    runner = memo.get("mlcanary")
    if runner is not None:
        runner.notify(str(event.get("type")), body)


def configure_logging(*, verbose: bool, log_format: str) -> None:
    """What ``kopf run --log-format=... [--verbose]`` configures, for :func:`run_operator`."""
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN
    )


async def run_operator(*, namespaces: list[str], liveness_endpoint: str | None) -> None:
    """Kopf in this event loop, as ``kopf run --standalone -m mlcanary.handlers`` would run it (this
    module's handlers are registered on import). Used under leader election (:mod:`mlcanary.leader`)."""
    await kopf.operator(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness_endpoint,
    )
