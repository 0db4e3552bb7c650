"""The local gateway: splits real HTTP traffic between local pods the way the cluster would.

``http://127.0.0.1:<port>/<namespace>/<name>/<path>`` reaches the model ``<name>`` (a
ModelDeployment, or any Service) in ``<namespace>``; ``<path>`` (e.g. ``predict``) is sent to one
ready pod:

* when an HTTPRoute of that name exists in the namespace (or one labelled
  ``mlcanary.io/model-deployment=<name>``), by its rules: the first rule whose matches fit the
  request (header matches are tried before path-only rules), then a backendRef drawn by weight,
  then a ready pod of that backend Service — the Gateway API router's split, realised;
* otherwise through the Service ``<name>`` (the operator's entry Service): uniformly over the ready
  pods its selector picks — the replica-ratio router's split, realised.

Ready means the Pod's ``Ready`` condition is True (written by the local kubelet from ``/readyz``);
the pod's port is its ``local.mlcanary.io/port`` annotation. Connections are pooled (keep-alive,
closed before the server's own idle timeout), a connection failure is retried on another pod, and a
backend without ready pods is skipped in favour of one that has them (so a weight the router could
not yet move never turns into errors). Every response carries ``X-Mlcanary-Pod``.

A rule's ``RequestMirror`` filter (the shadow phase) is realised too: that share of the rule's
requests (``percent`` or ``fraction``) is also sent to a ready pod of the mirror Service, with
``X-Mlcanary-Shadow: 1``; the copy is sent beside the user's request, its answer is read and
thrown away, and the user's answer never waits for it (at most ``MAX_MIRRORS_IN_FLIGHT`` copies
are in flight; beyond that a copy is dropped and counted, never queued).

Run as ``python -m mlcanary_local.gateway --kubeconfig K --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import signal
from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp import web

from mlcanary.kubeapi import HTTPROUTES, PODS, SERVICES, ApiClient, Informer, Obj, Transport, load_connection
from mlcanary_local.kubelet import PORT_ANNOTATION
from mlcanary_local.process import LOCALHOST

logger = logging.getLogger("mlcanary_local.gateway")

MDEP_LABEL = "mlcanary.io/model-deployment"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
UPSTREAM_KEEPALIVE = 4.0  # below uvicorn's 5 s idle timeout: never reuse a connection it is closing
MAX_MIRRORS_IN_FLIGHT = 64
MIRROR_TIMEOUT = 10.0
SHADOW_HEADER = "X-Mlcanary-Shadow"


class NoBackendError(Exception):
    pass


def selector_matches(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def pod_endpoint(pod: Obj) -> str | None:
    port = ((pod.get("metadata") or {}).get("annotations") or {}).get(PORT_ANNOTATION)
    ip = (pod.get("status") or {}).get("podIP") or LOCALHOST
    return f"{ip}:{port}" if port else None


def _rule_matches(rule: Obj, path: str, headers: Any, method: str | None = None) -> tuple[bool, int]:
    """(matches, specificity) of an HTTPRoute rule for a request; no matches = matches everything.
    Exact paths outrank prefixes, as the Gateway API's precedence says."""
    matches = rule.get("matches") or [{}]
    best: tuple[bool, int] = (False, -1)
    for match in matches:
        if method is not None and match.get("method") not in (None, method):
            continue
        path_match = match.get("path") or {"type": "PathPrefix", "value": "/"}
        value = str(path_match.get("value") or "/")
        kind = path_match.get("type", "PathPrefix")
        if kind == "Exact":
            ok = path == value
        else:
            prefix = value.rstrip("/")
            ok = path == prefix or path.startswith(prefix + "/") or prefix == ""
        for header in match.get("headers") or []:
            if headers.get(header.get("name", "")) != header.get("value"):
                ok = False
        if ok:
            exact = 100_000 if kind == "Exact" else 0
            specificity = exact + 1000 * len(match.get("headers") or []) + len(value)
            best = max(best, (True, specificity))
    return best


class RouteTable:
    """Answers "which pod gets this request" from the informers' caches."""

    def __init__(self, pods: Informer, services: Informer, routes: Informer) -> None:
        self.pods = pods
        self.services = services
        self.routes = routes
        self._rr = itertools.count()

    def ready_pods(self, namespace: str, selector: dict[str, str]) -> list[str]:
        endpoints = []
        for (ns, _), pod in self.pods.items():
            if ns != namespace or not pod_ready(pod):
                continue
            if selector_matches(selector, (pod.get("metadata") or {}).get("labels")):
                endpoint = pod_endpoint(pod)
                if endpoint:
                    endpoints.append(endpoint)
        return sorted(endpoints)

    def service_pods(self, namespace: str, name: str) -> list[str] | None:
        service = self.services.get(namespace, name)
        if service is None:
            return None
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return []
        return self.ready_pods(namespace, selector)

    def route_for(self, namespace: str, name: str) -> Obj | None:
        route = self.routes.get(namespace, name)
        if route is not None:
            return route
        for (ns, _), candidate in self.routes.items():
            labels = (candidate.get("metadata") or {}).get("labels") or {}
            if ns == namespace and labels.get(MDEP_LABEL) == name:
                return candidate
        return None

    def rule_for(
        self, namespace: str, name: str, path: str, headers: Any, method: str | None = None
    ) -> Obj | None:
        """The HTTPRoute rule a request takes (None: no route, or no rule fits)."""
        route = self.route_for(namespace, name)
        if route is None:
            return None
        rules = (route.get("spec") or {}).get("rules") or []
        scored = [(_rule_matches(rule, path, headers, method), i, rule) for i, rule in enumerate(rules)]
        fitting = sorted(((s, -i, r) for (ok, s), i, r in scored if ok), key=lambda t: t[:2], reverse=True)
        return fitting[0][2] if fitting else None

    def mirror_pods(self, namespace: str, rule: Obj | None) -> list[str]:
        """Ready pods to send a copy of this request to: those of the rule's RequestMirror backend,
        when the filter's share (percent or fraction) draws this request; else none."""
        for flt in (rule or {}).get("filters") or []:
            mirror = flt.get("requestMirror") if flt.get("type") == "RequestMirror" else None
            if not mirror:
                continue
            if "fraction" in mirror:
                fraction = mirror["fraction"]
                share = int(fraction.get("numerator", 0)) / max(1, int(fraction.get("denominator", 100)))
            else:
                share = int(mirror.get("percent", 100)) / 100
            if random.random() >= share:
                return []
            ref = mirror.get("backendRef") or {}
            return self.service_pods(ref.get("namespace") or namespace, str(ref.get("name"))) or []
        return []

    def backends(
        self, namespace: str, name: str, path: str, headers: Any, method: str | None = None
    ) -> list[tuple[str, int, list[str]]]:
        """Candidate backends as (service, weight, ready pods), for one request."""
        if self.route_for(namespace, name) is not None:
            rule = self.rule_for(namespace, name, path, headers, method)
            if rule is not None:
                result = []
                for ref in rule.get("backendRefs") or []:
                    if ref.get("kind", "Service") != "Service":
                        continue
                    ref_ns = ref.get("namespace") or namespace
                    ref_pods = self.service_pods(ref_ns, ref["name"]) or []
                    result.append((str(ref["name"]), int(ref.get("weight", 1)), ref_pods))
                return result
        pods = self.service_pods(namespace, name)
        if pods is None:
            raise NoBackendError(f"no HTTPRoute or Service {namespace}/{name}")
        return [(name, 1, pods)]

    def pick(self, backends: list[tuple[str, int, list[str]]], exclude: Iterable[str] = ()) -> str:
        excluded = set(exclude)
        usable = [(svc, w, [p for p in pods if p not in excluded]) for svc, w, pods in backends]
        weighted = [(svc, w, pods) for svc, w, pods in usable if w > 0 and pods]
        if not weighted:
            # The split names a backend with no ready pod (or all weights are 0): send to any ready pod.
            weighted = [(svc, 1, pods) for svc, _, pods in usable if pods]
        if not weighted:
            raise NoBackendError("no ready pod")
        _, _, pods = random.choices(weighted, weights=[w for _, w, _ in weighted])[0]
        return pods[next(self._rr) % len(pods)]

    def describe(self) -> list[Obj]:
        out = []
        for namespace, name in sorted(self.services.keys()):
            try:
                backends = self.backends(namespace, name, "/", {})
            except NoBackendError:
                continue
            out.append(
                {
                    "namespace": namespace,
                    "name": name,
                    "via": "HTTPRoute" if self.route_for(namespace, name) else "Service",
                    "backends": [{"service": s, "weight": w, "readyPods": p} for s, w, p in backends],
                }
            )
        return out


class Gateway:
    def __init__(self, api: Transport, retries: int = 2) -> None:
        self.api = api
        self.retries = retries
        # Decoded objects (compact=False): a pod is picked per request.
        self.pods = Informer(api, PODS, compact=False)
        self.services = Informer(api, SERVICES, compact=False)
        self.routes = Informer(api, HTTPROUTES, compact=False, retry_seconds=2.0)
        self.table = RouteTable(self.pods, self.services, self.routes)
        self.client: aiohttp.ClientSession | None = None
        self.mirrors: set[asyncio.Task[None]] = set()
        self.mirrors_sent = 0
        self.mirrors_dropped = 0

    async def start(self) -> None:
        for informer in (self.pods, self.services, self.routes):
            informer.start()
        await asyncio.wait_for(self.pods.synced.wait(), 60)
        await asyncio.wait_for(self.services.synced.wait(), 60)
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE),
            auto_decompress=False,
        )

    async def stop(self) -> None:
        for task in list(self.mirrors):
            task.cancel()
        for informer in (self.pods, self.services, self.routes):
            await informer.stop()
        if self.client is not None:
            await self.client.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/-/healthz", self.healthz)
        app.router.add_get("/-/routes", self.describe)
        app.router.add_route("*", "/{namespace}/{name}/{tail:.*}", self.proxy)
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "mirrorsSent": self.mirrors_sent, "mirrorsDropped": self.mirrors_dropped}
        )

    def _send_mirror(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> None:
        """Fire a copy of the request and forget it: the caller never awaits it."""
        if len(self.mirrors) >= MAX_MIRRORS_IN_FLIGHT:
            self.mirrors_dropped += 1
            return
        self.mirrors_sent += 1
        task = asyncio.get_running_loop().create_task(self._mirror(method, url, body, headers))
        self.mirrors.add(task)
        task.add_done_callback(self.mirrors.discard)

    async def _mirror(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> None:
        assert self.client is not None
        try:
            async with self.client.request(
                method,
                url,
                data=body or None,
                headers={**headers, SHADOW_HEADER: "1"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=MIRROR_TIMEOUT, connect=2),
            ) as answer:
                await answer.read()  # thrown away: users only ever get the stable's answer
        except (aiohttp.ClientError, TimeoutError) as error:
            logger.debug("mirror %s %s: %s", method, url, error)

    async def describe(self, _: web.Request) -> web.Response:
        return web.json_response(self.table.describe())

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        assert self.client is not None
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        path = "/" + request.match_info["tail"]
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        rule = self.table.rule_for(namespace, name, path, request.headers, request.method)
        mirror_pods = self.table.mirror_pods(namespace, rule)
        if mirror_pods:
            endpoint = mirror_pods[next(self.table._rr) % len(mirror_pods)]
            query = "?" + request.query_string if request.query_string else ""
            self._send_mirror(request.method, f"http://{endpoint}{path}{query}", body, headers)
        tried: list[str] = []
        last_error = ""
        for _attempt in range(self.retries + 1):
            try:
                backends = self.table.backends(namespace, name, path, request.headers, request.method)
                endpoint = self.table.pick(backends, exclude=tried)
            except NoBackendError as error:
                if tried:
                    break
                return web.json_response({"error": str(error)}, status=503)
            tried.append(endpoint)
            url = f"http://{endpoint}{path}"
            if request.query_string:
                url += "?" + request.query_string
            try:
                async with self.client.request(
                    request.method,
                    url,
                    data=body or None,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=60, connect=2),
                ) as upstream:
                    payload = await upstream.read()
                    out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                    out_headers["X-Mlcanary-Pod"] = endpoint
                    return web.Response(status=upstream.status, body=payload, headers=out_headers)
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                # Nothing was answered: the pod went away between routing and connecting. Try another.
                last_error = f"{type(error).__name__}: {error}"
                logger.debug("%s %s via %s: %s", request.method, path, endpoint, last_error)
        return web.json_response({"error": f"upstream failed: {last_error}"}, status=502)


async def amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ApiClient(load_connection(args.kubeconfig)) as api:
        await api.wait_ready()
        gateway = Gateway(api)
        await gateway.start()
        runner = web.AppRunner(gateway.app(), access_log=None, keepalive_timeout=75)
        await runner.setup()
        site = web.TCPSite(runner, LOCALHOST, args.port, backlog=1024)
        await site.start()
        logger.info("gateway on http://%s:%s", LOCALHOST, args.port)
        await stop.wait()
        await runner.cleanup()
        await gateway.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcanary_local.gateway", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s gateway: %(message)s",
    )
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
