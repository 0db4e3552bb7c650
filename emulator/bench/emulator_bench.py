"""Throughput of the Kubernetes API emulator at 1,000 custom objects + 1,000 Deployments.

Measures, over real HTTP from a separate client process, create / get / list-with-selector / patch and
watch fan-out (req/s, p50, p99), for:

* ``emulator`` - kube_emulator (indexed store), Deployment controller off; the client is a
                 ServiceAccount bound by a ClusterRole, so every request is authenticated and authorized
                 by RBAC (cached decisions), and names, labels and CRD schemas are checked (``--cel`` adds
                 a CEL rule to the widgets' spec);
* ``naive``    - the same HTTP server with a naive store swapped in (linear scans, deep copies on
                 every read): the alternative an index-free emulator would be, measured in the same run;
* ``kmock``    - optionally kmock 0.8's KubernetesEmulator, run from a throwaway venv
                 (``--kmock-python /tmp/kmock-bench-venv/bin/python``; create it with
                 ``python3 -m venv /tmp/kmock-bench-venv && /tmp/kmock-bench-venv/bin/pip install kmock==0.8``).
                 kmock slows down quadratically with the object count, so it runs at ``--kmock-objects``
                 (default 200) and its ratios are a lower bound; it ignores selectors and resourceVersions.

It also times the store's selector LIST in-process (no HTTP), the figure the "far below 10 ms at 1,000
objects" goal is about. This is a benchmark, never a unit test: run it by hand::

    .venv/bin/python emulator/bench/emulator_bench.py [--objects 1000] [--concurrency 8] [--kmock-python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kube_emulator import KubernetesEmulator
from kube_emulator.auth import Authorizer, bootstrap_objects
from kube_emulator.openapi import OpenApiV3
from kube_emulator.resources import RKey
from kube_emulator.selectors import FieldSelector, LabelSelector
from kube_emulator.store import Obj, Store

NS = "default"
WIDGETS = f"/apis/example.com/v1/namespaces/{NS}/widgets"
DEPLOYS = f"/apis/apps/v1/namespaces/{NS}/deployments"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "minimum": 0},
                                    "model": {"type": "string"},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def widget(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {
            "name": f"w{i:05d}",
            "labels": {"app": f"app{i % 50}", "track": "canary" if i % 2 else "stable"},
        },
        "spec": {"size": i % 7, "model": f"model-{i % 13}"},
    }


def deployment(i: int) -> dict[str, Any]:
    name = f"d{i:05d}"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": f"app{i % 50}"}},
        "spec": {
            "replicas": 1 + i % 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "main", "image": f"model:{i % 5}", "ports": [{"containerPort": 8080}]}
                    ]
                },
            },
        },
    }


# ------------------------------------------------------------------------------------ naive store


class NaiveStore(Store):
    """The same semantics without the index: every read scans every object and deep-copies."""

    def peek(self, key: RKey, namespace: str, name: str) -> Obj | None:
        for bucket in self._objects.get(key, {}).values():
            for obj in bucket.values():
                meta = obj["metadata"]
                if meta["name"] == name and meta.get("namespace", "") == namespace:
                    return obj
        return None

    def select(
        self,
        key: RKey,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> list[Obj]:
        out = []
        for bucket in self._objects.get(key, {}).values():
            for obj in bucket.values():
                candidate = copy.deepcopy(obj)
                meta = candidate["metadata"]
                if namespace is not None and meta.get("namespace", "") != namespace:
                    continue
                if labels and not labels.matches(meta.get("labels")):
                    continue
                if fields and not fields.matches(candidate):
                    continue
                out.append(candidate)
        return sorted(out, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))


# What the benchmark's client may do: it runs as a ServiceAccount bound by this, so every request goes
# through authentication and RBAC authorization (the admin's group would skip authorization).
BENCH_RULES = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["create"]},
    {
        "apiGroups": ["example.com"],
        "resources": ["widgets"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
]


def _grant(emulator: KubernetesEmulator) -> str:
    """A ServiceAccount token bound by BENCH_RULES (through a ClusterRole and ClusterRoleBinding)."""
    rbac = "rbac.authorization.k8s.io/v1"
    emulator.apply(
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "bench"}, "rules": BENCH_RULES}
    )
    emulator.apply(
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": NS}],
        }
    )
    return emulator.service_account_token(NS, "bench")


async def serve(kind: str) -> None:
    """Child-process mode: run one server, print its URL and a token, exit when stdin closes."""
    emulator = KubernetesEmulator(deployment_controller=False)
    if kind == "naive":
        emulator.store = NaiveStore()
        emulator.authorizer = Authorizer(emulator.store)
        emulator.store.listeners.append(emulator._on_store_event)
        emulator.openapi = OpenApiV3(emulator.store.registry)
        for manifest in bootstrap_objects():
            emulator.apply(manifest)
    async with emulator:
        print(emulator.url, _grant(emulator), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


KMOCK_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    import kmock

    async def main():
        async with kmock.KubernetesEmulator() as k, kmock.Server(k) as srv:
            k.resources["example.com/v1/widgets"] = {"kind": "Widget", "namespaced": True}
            k.resources["apps/v1/deployments"] = {"kind": "Deployment", "namespaced": True}
            print(str(srv.url).rstrip("/"), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
    """
)


# ------------------------------------------------------------------------------------- load client


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    phase: str
    count: int
    seconds: float
    latencies: list[float]
    server_cpu: float = float("nan")

    @property
    def cpu_us(self) -> float:
        """Server CPU per request (per delivered event for fan-out), in microseconds."""
        return self.server_cpu / self.count * 1e6

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else float("inf")

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_requests(
    count: int, concurrency: int, make: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            await make(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def expect(response: aiohttp.ClientResponse, *ok: int) -> Any:
    body = await response.read()
    if response.status not in ok:
        raise RuntimeError(f"{response.method} {response.url} -> {response.status}: {body[:300]!r}")
    return body


async def bench_server(
    url: str,
    pid: int,
    *,
    objects: int,
    ops: int,
    concurrency: int,
    watchers: int,
    events: int,
    kmock: bool,
    token: str | None = None,
) -> list[Result]:
    results: list[Result] = []
    mark = [cpu_seconds(pid)]

    def spent() -> float:
        now = cpu_seconds(pid)
        used, mark[0] = now - mark[0], now
        return used

    connector = aiohttp.TCPConnector(limit=concurrency + watchers + 4)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout, headers=headers) as http:
        if not kmock:
            async with http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD) as rsp:
                await expect(rsp, 201)
        ok_create = (200, 201)

        async def create(i: int) -> None:
            path, body = (WIDGETS, widget(i // 2)) if i % 2 == 0 else (DEPLOYS, deployment(i // 2))
            async with http.post(path, json=body) as rsp:
                await expect(rsp, *ok_create)

        seconds, lat = await run_requests(2 * objects, concurrency, create)
        results.append(
            Result(f"create ({objects} CRs + {objects} Deployments)", 2 * objects, seconds, lat, spent())
        )

        async def get(i: int) -> None:
            path = (
                f"{WIDGETS}/w{(i * 7919) % objects:05d}"
                if i % 2 == 0
                else f"{DEPLOYS}/d{(i * 7919) % objects:05d}"
            )
            async with http.get(path) as rsp:
                await expect(rsp, 200)

        seconds, lat = await run_requests(ops, concurrency, get)
        results.append(Result("get", ops, seconds, lat, spent()))

        list_ops = max(1, ops // 5)

        async def list_selector(i: int) -> None:
            async with http.get(WIDGETS, params={"labelSelector": f"app=app{i % 50},track=canary"}) as rsp:
                await expect(rsp, 200)

        seconds, lat = await run_requests(list_ops, concurrency, list_selector)
        results.append(Result("list, label selector (2% of the CRs match)", list_ops, seconds, lat, spent()))

        async def patch(i: int) -> None:
            headers = {"Content-Type": "application/merge-patch+json"}
            body = json.dumps({"spec": {"size": i % 5}, "metadata": {"annotations": {"bench/patch": str(i)}}})
            async with http.patch(f"{WIDGETS}/w{i % objects:05d}", data=body, headers=headers) as rsp:
                await expect(rsp, 200)

        seconds, lat = await run_requests(ops, concurrency, patch)
        results.append(Result("patch (merge)", ops, seconds, lat, spent()))

        if kmock:  # kmock 0.8 replays the state on connect but streams no later events
            results.append(Result("n/a: kmock 0.8 streams no live watch events", 0, 0.0, []))
        else:
            fanout = await watch_fanout(
                http, objects=objects, watchers=watchers, events=events, concurrency=concurrency
            )
            fanout.server_cpu = spent()
            results.append(fanout)
    return results


async def watch_fanout(
    http: aiohttp.ClientSession, *, objects: int, watchers: int, events: int, concurrency: int
) -> Result:
    async with http.get(WIDGETS, params={"limit": "1"}) as rsp:
        listing = json.loads(await expect(rsp, 200))
    since = str(listing.get("metadata", {}).get("resourceVersion", ""))
    sent: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    all_connected = asyncio.Event()
    remaining = [watchers * events]
    ready = [0]

    async def watch() -> None:
        params = {"watch": "true"}
        if since.isdigit():
            params["resourceVersion"] = since
        seen: set[int] = set()
        async with http.get(WIDGETS, params=params) as rsp:
            ready[0] += 1
            if ready[0] == watchers:
                all_connected.set()
            async for line in rsp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                seq = ((event.get("object") or {}).get("metadata", {}).get("annotations") or {}).get(
                    "bench/fanout"
                )
                if seq is None or int(seq) in seen:
                    continue
                seen.add(int(seq))
                latencies.append(time.perf_counter() - sent[int(seq)])
                remaining[0] -= 1
                if remaining[0] <= 0:
                    done.set()
                if len(seen) >= events:
                    return

    tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
    await asyncio.wait_for(all_connected.wait(), timeout=60)
    await asyncio.sleep(0.3)

    async def create(i: int) -> None:
        body = widget(objects + i)
        body["metadata"]["name"] = f"fanout{i:05d}"
        body["metadata"]["annotations"] = {"bench/fanout": str(i)}
        sent[i] = time.perf_counter()
        async with http.post(WIDGETS, json=body) as rsp:
            await expect(rsp, 200, 201)

    started = time.perf_counter()
    await run_requests(events, concurrency, create)
    complete = True
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
    except TimeoutError:
        complete = False
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.perf_counter() - started
    phase = f"watch fan-out ({watchers} watchers x {events} creates)"
    if not complete:
        phase += f" INCOMPLETE: {len(latencies)} delivered"
    return Result(phase, max(1, len(latencies)), seconds, latencies)


def start_server(argv: list[str]) -> tuple[subprocess.Popen[str], str, str | None]:
    """The server process, its URL and (emulators) the bench ServiceAccount's token."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url, _, token = process.stdout.readline().strip().partition(" ")
    if not url.startswith("http://"):
        process.kill()
        raise RuntimeError(f"server did not start: {argv}")
    return process, url, token or None


def stop_server(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def store_list_micro(objects: int, repeats: int = 2000) -> dict[str, float]:
    """In-process: microseconds per selector LIST over ``objects`` CRs, indexed vs naive store."""
    out: dict[str, float] = {}
    for name, store in (("emulator", Store()), ("naive", NaiveStore())):
        crds = store.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert crds is not None
        store.create(crds, None, CRD)
        info = store.registry.get("example.com", "v1", "widgets")
        assert info is not None
        for i in range(objects):
            store.create(info, NS, widget(i))
        selector = LabelSelector.parse("app=app7,track=canary")
        count = repeats if name == "emulator" else max(20, repeats // 50)
        started = time.perf_counter()
        for _ in range(count):
            items, *_ = store.list_objects(info, NS, selector, FieldSelector())
        out[name] = (time.perf_counter() - started) / count * 1e6
        assert len(items) == objects // 50
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000, help="custom objects (and as many Deployments)")
    parser.add_argument("--ops", type=int, default=2000, help="requests per get/patch phase (lists: ops/5)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--events", type=int, default=200, help="patches observed by every watcher")
    parser.add_argument("--kmock-python", help="python of a venv with kmock==0.8 installed (optional)")
    parser.add_argument("--kmock-objects", type=int, default=200)
    parser.add_argument("--kmock-ops", type=int, default=100)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--cel", action="store_true", help="give the widgets' spec a CEL rule (its cost on create and patch)"
    )
    parser.add_argument("--serve", choices=["emulator", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cel:
        spec_schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        spec_schema["x-kubernetes-validations"] = [
            {"rule": "self.size <= 100 && self.model.startsWith('model-')", "message": "a bench rule"}
        ]
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    try:  # a faster client loop, for every target alike
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        client_loop = "uvloop"
    except ImportError:
        client_loop = "asyncio"

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; one client process ({client_loop}, "
        f"concurrency {args.concurrency}) and each server in its own process"
    )
    micro = store_list_micro(args.objects)
    print(
        f"in-process selector LIST over {args.objects} CRs (2% match): emulator {micro['emulator']:.1f} µs, "
        f"naive {micro['naive']:.0f} µs ({micro['naive'] / micro['emulator']:.0f}x)\n"
    )
    targets: list[tuple[str, list[str], dict[str, Any]]] = [
        ("emulator", [sys.executable, __file__, "--serve", "emulator"], {}),
    ]
    if not args.skip_naive:
        targets.append(("naive", [sys.executable, __file__, "--serve", "naive"], {}))
    script_dir = tempfile.mkdtemp(prefix="kmock-bench-")
    if args.kmock_python:
        script = Path(script_dir) / "kmock_server.py"
        script.write_text(KMOCK_SERVER)
        targets.append(
            (
                "kmock",
                [args.kmock_python, str(script)],
                {"objects": args.kmock_objects, "ops": args.kmock_ops, "kmock": True},
            )
        )

    table: dict[str, list[Result]] = {}
    for name, argv, overrides in targets:
        process, url, token = start_server(argv)
        try:
            params = {
                "objects": args.objects,
                "ops": args.ops,
                "concurrency": args.concurrency,
                "watchers": args.watchers,
                "events": args.events,
                "kmock": False,
            }
            params.update(overrides)
            started = time.perf_counter()
            table[name] = asyncio.run(bench_server(url, process.pid, token=token, **params))
            print(f"[{name}] done in {time.perf_counter() - started:.1f}s at {url}", file=sys.stderr)
        finally:
            stop_server(process)

    header = f"{'phase':<46} {'target':<9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'srv µs/req':>10} {'vs emulator':>12}"
    print(header)
    print("-" * len(header))
    for index, baseline in enumerate(table["emulator"]):
        for name, results in table.items():
            result = results[index]
            if not result.count:
                print(f"{'  (' + result.phase + ')':<46} {name:<9}")
                continue
            ratio = "" if name == "emulator" else f"{result.cpu_us / baseline.cpu_us:.1f}x"
            label = baseline.phase if name == "emulator" else ""
            if name == "kmock":
                label = f"  (kmock at {args.kmock_objects} objects, {result.count} ops)"
            print(
                f"{label:<46} {name:<9} {result.rate:>7.0f} {result.pct(0.5):>8.2f} {result.pct(0.99):>8.2f} "
                f"{result.cpu_us:>10.0f} {ratio:>12}"
            )
    print(
        "\nreq/s and latencies are end to end, from one aiohttp client process (often the bottleneck on small"
        "\nmachines); 'srv µs/req' is the server process's CPU time per request, and 'vs emulator' its ratio to"
        "\nthe emulator's (how many times more server CPU the alternative needs). Watch fan-out: per event"
        "\ndelivered to one watcher; latency = create sent -> event received."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
