"""The Prometheus metric provider: the only module of the analysis that performs I/O.

It renders a metric's queries (:mod:`mlcanary.analysis.queries`), runs them on ``prometheus-api-client``
in a thread pool of its own per Prometheus address (so a hung Prometheus ties up its own threads
only, never the other ModelDeployments' queries), classifies each answer, and lets
:func:`mlcanary.analysis.judge.evaluate` decide. It never raises for a backend problem: every failure
is a Measurement with verdict Error.

Load on a shared Prometheus is bounded twice. Each query carries Prometheus's own ``timeout``
parameter, a little shorter than the operator's bound, so Prometheus cancels the evaluation and
says so instead of computing on for a client that gave up. And a metric's queries are never started
while that metric's previous queries (same namespace, ModelDeployment and metric) are still running
in their threads, whatever the rounds' timing: the round gets an Error measurement instead.

Credentials (bearer token, basic-auth password) are sent as headers and are never logged, put in a
message, or written to status: every message is scrubbed of them before it leaves this module.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from mlcanary.analysis import judge
from mlcanary.analysis import queries as q
from mlcanary.analysis.promql import DEFAULT_LIMITS, QueryLimits
from mlcanary.analysis.provider import AnalysisContext
from mlcanary.durations import parse_duration
from mlcanary.models import Measurement, Metric, ModelDeploymentSpec, PrometheusSource

if TYPE_CHECKING:
    from mlcanary.settings import CustomQueryMode, Settings

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
POOL_WORKERS = 8


def prometheus_timeout(timeout_seconds: float) -> float:
    """The evaluation timeout sent to Prometheus: shorter than the operator's own bound by a quarter
    of it (at most one second), so Prometheus's answer ("query timed out") arrives before the
    operator gives up, and the query is over on both sides."""
    return max(timeout_seconds - min(1.0, timeout_seconds / 4), 0.001)


InFlightKey = tuple[str, str, str]  # namespace, ModelDeployment, metric


class InFlight:
    """Queries still running, per (namespace, ModelDeployment, metric), across provider instances.

    A query counts from its submission until its thread returns, not until a round stopped waiting
    for it: a query abandoned at the operator's timeout may still be running on Prometheus, and
    starting the next round's copy beside it is how a struggling Prometheus gets buried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[InFlightKey, tuple[int, float]] = {}

    def start(self, key: InFlightKey, queries: int) -> float | None:
        """Count ``queries`` new queries for ``key`` and return None; or, while earlier ones are
        still running, count nothing and return how many seconds ago they started."""
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return time.monotonic() - running[1]
            if queries > 0:
                self._running[key] = (queries, time.monotonic())
            return None

    def finish(self, key: InFlightKey) -> None:
        with self._lock:
            count, started = self._running[key]
            if count <= 1:
                del self._running[key]
            else:
                self._running[key] = (count - 1, started)

    def running(self, key: InFlightKey) -> int:
        with self._lock:
            return self._running.get(key, (0, 0.0))[0]


IN_FLIGHT = InFlight()


@dataclass(frozen=True)
class PrometheusAuth:
    """Credentials for Prometheus. ``repr`` never shows the secret values."""

    bearer_token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        return [s for s in (self.bearer_token, self.password) if s]


class SecretReader(Protocol):
    """What :func:`provider_for_spec` needs from the Kubernetes facade (``mlcanary.kube.Kube``)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...


AuthLoader = Callable[[], Awaitable[PrometheusAuth | None]]


@dataclass(frozen=True)
class MetricResult:
    """A measurement with the queries that produced it (what ``mlcanary analyze`` prints)."""

    measurement: Measurement
    results: list[judge.QueryResult]


_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(address: str) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(address)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=POOL_WORKERS, thread_name_prefix="mlcanary-prometheus")
            _POOLS[address] = pool
        return pool


class PrometheusProvider:
    """Measures metrics on one Prometheus.

    ``address``: base URL. ``auth``: credentials, or ``auth_loader``: an async callable that returns
    them at first use (the operator reads the Secret then; a failure becomes an Error measurement).
    ``timeout_seconds``: per query, the operator's bound (the HTTP client waits one second more), and
    :func:`prometheus_timeout` of it is sent as Prometheus's own evaluation ``timeout``.
    ``verify_tls=False`` only when ``insecureSkipVerify`` says so. ``namespace_label``: scope every
    query to the ModelDeployment's namespace by this label (off by default, see
    :mod:`mlcanary.analysis.queries`). ``custom_queries`` and ``limits``: the operator's policy and
    bounds for custom queries. ``at``: evaluate every query at this time instead of Prometheus's
    "now" (tests and ``mlcanary analyze --at``).
    """

    def __init__(
        self,
        address: str,
        *,
        auth: PrometheusAuth | None = None,
        auth_loader: AuthLoader | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        verify_tls: bool = True,
        namespace_label: str | None = None,
        custom_queries: CustomQueryMode = "scoped",
        limits: QueryLimits = DEFAULT_LIMITS,
        at: datetime | None = None,
    ) -> None:
        if auth is not None and auth_loader is not None:
            raise ValueError("give auth or auth_loader, not both")
        self.address = address.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.verify_tls = verify_tls
        self.namespace_label = namespace_label
        self.custom_queries: CustomQueryMode = custom_queries
        self.limits = limits
        self.at = at
        self._auth = auth
        self._auth_loader = auth_loader
        self._client: PrometheusConnect | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._secrets: list[str] = auth.secrets() if auth else []

    def __repr__(self) -> str:
        return f"PrometheusProvider({self.address!r}, timeout_seconds={self.timeout_seconds})"

    # -- MetricProvider

    async def measure(self, metric: Metric, context: AnalysisContext, now: datetime) -> Measurement:
        return (await self.measure_detailed(metric, context, now)).measurement

    async def measure_detailed(self, metric: Metric, context: AnalysisContext, now: datetime) -> MetricResult:
        """Render, query and judge one metric, keeping every query and its classified answer."""
        qctx = q.QueryContext(
            name=context.name,
            namespace=context.namespace,
            model_name=context.model_name,
            version=context.version,
            stable_version=context.stable_version,
            interval=context.interval,
            namespace_label=self.namespace_label,
            custom_queries=self.custom_queries,
            limits=self.limits,
        )
        problems = q.metric_problems(metric)
        specs: list[q.QuerySpec] = []
        if not problems:
            try:
                specs = q.metric_queries(metric, qctx)
            except q.QueryTemplateError as error:
                problems = [str(error)]
        if problems:
            return MetricResult(judge.evaluate(metric, [], now, problems=problems), [])
        try:
            client = await self._connect()
        except Exception as error:
            message = self._scrub(f"cannot load Prometheus credentials: {type(error).__name__}: {error}")
            results = [judge.QueryResult(spec=spec, error=message) for spec in specs]
            return MetricResult(judge.evaluate(metric, results, now), results)
        key = (context.namespace, context.name, metric.name)
        running_for = IN_FLIGHT.start(key, len(specs))
        if running_for is not None:
            message = (
                f"the previous round's queries for this metric are still running on {self.address} "
                f"(for {running_for:.0f}s): not starting more until they end (Prometheus is slow, or "
                "the query is expensive)"
            )
            return MetricResult(judge.evaluate(metric, [], now, problems=[message]), [])
        # Submit every query before the first await, each releasing its place in IN_FLIGHT when its
        # thread ends (or when it is cancelled before starting), so no cancellation can leak one.
        futures: list[Future[Any]] = []
        try:
            for spec in specs:
                future = _pool(self.address).submit(_run_query, client, spec.promql, self._params())
                futures.append(future)
                future.add_done_callback(lambda _: IN_FLIGHT.finish(key))
        finally:
            for _ in range(len(specs) - len(futures)):
                IN_FLIGHT.finish(key)
        started = time.monotonic()
        results = list(
            await asyncio.gather(
                *(self._answer(spec, f, started) for spec, f in zip(specs, futures, strict=True))
            )
        )
        return MetricResult(judge.evaluate(metric, results, now), results)

    # -- I/O

    async def _connect(self) -> PrometheusConnect:
        if self._client is not None:
            return self._client
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:  # the metrics of a round connect concurrently: load secrets once
            if self._client is None:
                self._client = await self._new_client()
            return self._client

    async def _new_client(self) -> PrometheusConnect:
        auth = self._auth
        if self._auth_loader is not None:
            auth = await self._auth_loader()
            self._secrets = auth.secrets() if auth else []
        headers: dict[str, str] = {}
        basic: tuple[str, str] | None = None
        if auth is not None:
            if auth.bearer_token:
                headers["Authorization"] = f"Bearer {auth.bearer_token}"
            if auth.username is not None and auth.password is not None:
                basic = (auth.username, auth.password)
        return PrometheusConnect(
            url=self.address,
            headers=headers or None,
            disable_ssl=not self.verify_tls,
            auth=basic,
            # The asyncio bound in _answer is the authoritative timeout; the HTTP client's own is a
            # little longer so the two never race (a read timeout inside urllib3's retry surfaces as
            # a ConnectionError and would read as "cannot connect").
            timeout=self.timeout_seconds + 1,
            # One quick retry of a refused connection or a 502/504 from a proxy (Prometheus
            # restarting); never of a read timeout, which would double the wait, nor of a 503:
            # Prometheus answers 503 when it cancelled a query at its timeout, and an immediate retry
            # would run the expensive query again.
            retry=Retry(total=1, connect=1, read=0, status=1, backoff_factor=0, status_forcelist=(502, 504)),
        )

    def _params(self) -> dict[str, str]:
        # Prometheus's own evaluation timeout, in (float) seconds: it cancels the query itself.
        params = {"timeout": f"{prometheus_timeout(self.timeout_seconds):g}"}
        if self.at is not None:
            params["time"] = f"{self.at.timestamp():.3f}"
        return params

    async def _answer(self, spec: q.QuerySpec, future: Future[Any], started: float) -> judge.QueryResult:
        try:
            raw = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_seconds)
        except TimeoutError:
            return judge.QueryResult(
                spec=spec,
                error=f"timed out after {self.timeout_seconds:g}s",
                seconds=time.monotonic() - started,
            )
        except Exception as error:
            return judge.QueryResult(
                spec=spec,
                error=self._scrub(_describe_error(error, self.address)),
                seconds=time.monotonic() - started,
            )
        result = classify_response(spec, raw)
        logger.debug("prometheus %s: %s -> %s", self.address, spec.promql, result.describe())
        return judge.QueryResult(
            spec=spec,
            series=result.series,
            result_type=result.result_type,
            error=self._scrub(result.error) if result.error is not None else None,
            seconds=time.monotonic() - started,
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[: judge.MESSAGE_LIMIT]


def _run_query(client: PrometheusConnect, promql: str, params: dict[str, str]) -> Any:
    return client.custom_query(promql, params=params)


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]*")


def _describe_error(error: BaseException, address: str) -> str:
    if isinstance(error, PrometheusApiClientException):
        # "HTTP Status Code 400 (b'{...json...}')": keep the status and Prometheus's own error text.
        text = str(error)
        status, _, rest = text.partition(" (")
        try:
            body = json.loads(ast.literal_eval(rest.removesuffix(")")))
            return f"{status}: {body.get('errorType', 'error')}: {body.get('error', '')}"
        except (ValueError, SyntaxError, TypeError, AttributeError):
            return text
    if isinstance(error, requests.exceptions.RetryError):
        return f"{address} kept answering with a proxy error (502/504)"
    if isinstance(error, requests.exceptions.Timeout):
        return f"{address} did not answer in time"
    if isinstance(error, requests.exceptions.SSLError):
        return f"TLS error talking to {address} (certificate not trusted? see insecureSkipVerify)"
    if isinstance(error, requests.exceptions.ConnectionError) and "timed out" in str(error).lower():
        return f"{address} did not answer in time"
    if isinstance(error, requests.exceptions.ConnectionError):
        errno = _ERRNO.search(str(error))
        return f"cannot connect to {address}" + (f": {errno.group(0).strip()}" if errno else "")
    return f"{type(error).__name__}: {error}"


def classify_response(spec: q.QuerySpec, raw: Any) -> judge.QueryResult:
    """Turn ``custom_query``'s ``data.result`` into series (a scalar becomes one unlabelled series).

    ``custom_query`` drops ``resultType``, so the shape tells: a ``[time, "text"]`` pair is a scalar
    (or a string when the text is not a number); a list of ``{"metric", "value"}`` is a vector; a
    list of ``{"metric", "values"}`` a matrix. Prometheus writes NaN and +-Inf as "NaN", "+Inf",
    "-Inf", which ``float`` reads."""
    try:
        if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
            try:
                value = float(raw[1])
            except ValueError:
                return judge.QueryResult(spec=spec, result_type="string")
            return judge.QueryResult(spec=spec, series=(judge.Series({}, value),), result_type="scalar")
        if isinstance(raw, list):
            series: list[judge.Series] = []
            for item in raw:
                if "values" in item:
                    return judge.QueryResult(spec=spec, result_type="matrix")
                labels = {str(k): str(v) for k, v in item.get("metric", {}).items()}
                series.append(judge.Series(labels, float(item["value"][1])))
            return judge.QueryResult(spec=spec, series=tuple(series))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        return judge.QueryResult(spec=spec, error=f"unexpected response shape: {type(error).__name__}")
    return judge.QueryResult(spec=spec, error="unexpected response shape")


# --------------------------------------------------------------------------- construction


def auth_loader_for(source: PrometheusSource, namespace: str, reader: SecretReader) -> AuthLoader | None:
    """An async loader of the credentials a PrometheusSource names, from Secrets in ``namespace``."""
    if source.bearer_token_secret is None and source.basic_auth_secret is None:
        return None

    async def load() -> PrometheusAuth:
        token: str | None = None
        username: str | None = None
        password: str | None = None
        if source.bearer_token_secret is not None:
            ref = source.bearer_token_secret
            data = await reader.read_secret(namespace, ref.name)
            if ref.key not in data:
                raise KeyError(f"Secret {ref.name} has no key {ref.key!r}")
            token = data[ref.key].strip()
        if source.basic_auth_secret is not None:
            data = await reader.read_secret(namespace, source.basic_auth_secret)
            missing = [k for k in ("username", "password") if k not in data]
            if missing:
                raise KeyError(f"Secret {source.basic_auth_secret} has no key {' or '.join(missing)}")
            username, password = data["username"], data["password"]
        return PrometheusAuth(bearer_token=token, username=username, password=password)

    return load


def provider_for_spec(
    spec: ModelDeploymentSpec,
    namespace: str,
    settings: Settings,
    kube: SecretReader,
    *,
    namespace_label: str | None = None,
) -> PrometheusProvider:
    """The provider for one ModelDeployment: its ``analysis.prometheus`` when set, else the operator's
    ``MLCANARY_PROMETHEUS_URL`` and ``MLCANARY_QUERY_TIMEOUT_SECONDS``. Credentials are read from the
    named Secrets in the ModelDeployment's namespace at first use."""
    source = spec.analysis.prometheus
    limits = q.limits_of(settings)
    if source is None:
        return PrometheusProvider(
            settings.prometheus_url,
            timeout_seconds=settings.query_timeout_seconds,
            namespace_label=namespace_label,
            custom_queries=settings.custom_queries,
            limits=limits,
        )
    return PrometheusProvider(
        source.address,
        auth_loader=auth_loader_for(source, namespace, kube),
        timeout_seconds=parse_duration(source.timeout).total_seconds(),
        verify_tls=not source.insecure_skip_verify,
        namespace_label=namespace_label,
        custom_queries=settings.custom_queries,
        limits=limits,
    )


async def measure_all(
    provider: PrometheusProvider, metrics: Sequence[Metric], context: AnalysisContext, now: datetime
) -> list[MetricResult]:
    """Every metric of a round, concurrently, with details (for ``mlcanary analyze``)."""
    return list(await asyncio.gather(*(provider.measure_detailed(m, context, now) for m in metrics)))
