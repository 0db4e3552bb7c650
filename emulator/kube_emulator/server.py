"""A standalone Kubernetes API emulator over real HTTP, for Kopf operators, the official client and kubectl.

Usage from Python::

    async with KubernetesEmulator() as emu:          # binds 127.0.0.1 on an ephemeral port
        write_kubeconfig(emu.url, tmp_path / "kubeconfig")
        emu.set_readiness("default", "web-canary*", "never")

    with EmulatorThread() as emu:                     # the same, in a background thread (sync tests)
        ...

From a shell::

    python -m kube_emulator --port 0 --kubeconfig /tmp/kubeconfig
    KUBECONFIG=/tmp/kubeconfig kubectl get ns

See ``docs/emulator.md`` for what is (and is not) emulated.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml
from aiohttp import web

from kube_emulator import errors
from kube_emulator.accounting import RequestAccounting
from kube_emulator.auth import (
    RBAC_GROUP,
    RBAC_KINDS,
    Authenticator,
    Authorizer,
    Request,
    User,
    bootstrap_objects,
    forbidden,
    service_account_user,
    unauthorized,
)
from kube_emulator.controllers import (
    Controller,
    CronJobController,
    HpaStatusController,
    JobSimulator,
    TtlController,
)
from kube_emulator.deployments import DeploymentController, ReadinessRule
from kube_emulator.errors import ApiError
from kube_emulator.jsonio import dumps, loads
from kube_emulator.openapi import OpenApiV3
from kube_emulator.patch import clone
from kube_emulator.resources import ResourceInfo
from kube_emulator.selectors import FieldSelector, LabelSelector
from kube_emulator.store import PATCH_TYPES, Event, Obj, Store, now_rfc3339, present
from kube_emulator.tables import table
from kube_emulator.tls import ServingCertificate, make_serving_certificate

__all__ = [
    "EmulatorThread",
    "KubernetesEmulator",
    "ReadinessRule",
    "load_manifests",
    "main",
    "write_kubeconfig",
]

logger = logging.getLogger("kube_emulator")
T = TypeVar("T")

KUBERNETES_VERSION = (1, 32)
CONTEXT_NAME = "mlcanary-emulator"
_LIVENESS_CHECK_SECONDS = 5.0


def write_kubeconfig(
    url: str,
    path: str | Path,
    *,
    namespace: str = "default",
    context: str = CONTEXT_NAME,
    token: str | None = None,
    ca_data: str | None = None,
) -> Path:
    """Write a kubeconfig for ``url`` (bearer ``token`` and CA if any) with one context, made current."""
    cluster: dict[str, Any] = {"server": url}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": {"token": token} if token else {}}],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}
        ],
        "current-context": context,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def load_manifests(paths: Iterable[str | Path]) -> list[Obj]:
    """YAML/JSON documents from files and directories (``*.yaml``, ``*.yml``, ``*.json``), CRDs first."""
    docs: list[Obj] = []
    for entry in paths:
        path = Path(entry)
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "List":
                    docs.extend(d for d in doc.get("items") or [] if isinstance(d, dict))
                elif isinstance(doc, dict):
                    docs.append(doc)
    return sorted(docs, key=lambda d: d.get("kind") != "CustomResourceDefinition")


def _json(body: Any, status: int = 200, warnings: Iterable[str] = ()) -> web.Response:
    response = web.Response(body=dumps(body), status=status, content_type="application/json")
    for warning in warnings:
        response.headers.add("Warning", f'299 - "{warning}"'.replace('\\"', '"'))
    return response


# The user of every request when authorization is AlwaysAllow (accounted under this name).
_ALWAYS_ALLOWED = User("system:always-allowed", ("system:authenticated",))


def _verb(method: str, *, collection: bool, watch: bool) -> str:
    """The authorization verb of a resource request, as a real server's RequestInfo resolves it."""
    if watch:
        return "watch"
    if method == "GET" or method == "HEAD":
        return "list" if collection else "get"
    if method == "DELETE":
        return "deletecollection" if collection else "delete"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


class KubernetesEmulator:
    """The emulator: an in-memory API server on ``host`` (127.0.0.1) and an ephemeral ``port``.

    Args:
        host: the address to bind; keep the default 127.0.0.1.
        port: 0 for an ephemeral port (the default); fixed ports are for manual use only.
        deployment_controller: run the fake Deployment controller (status per readiness mode).
        default_readiness: the readiness mode of Deployments no rule or annotation covers.
        history_size: how many change events are kept for watch resumption (older → 410 Gone).
        bookmark_interval: seconds between BOOKMARK events on watches that allow them.
        watch_timeout: the longest a watch stream lasts when the client sets no ``timeoutSeconds``.
        access_log: log every request (slow; for debugging).
        job_controller: simulate Jobs (succeed/fail/never per annotation); defaults to
            ``deployment_controller``. CronJob, TTL-after-finished and HPA status controllers always run.
        authorization: ``RBAC`` (the default: bearer tokens, the stored RBAC objects, 401/403 as a real
            server) or ``AlwaysAllow`` (every request, even anonymous, is allowed).
        tls: serve HTTPS with a certificate made at start (its CA goes into the kubeconfigs). Needed
            for kubectl to send a token: client-go sends credentials only to https servers.

    The synchronous methods (``objects``, ``get_object``, ``apply``, ``delete``, ``set_readiness`` ...) are
    safe to call from any thread: they run on the emulator's event loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        deployment_controller: bool = True,
        default_readiness: str = "ready",
        history_size: int = 10_000,
        bookmark_interval: float = 5.0,
        watch_timeout: float | None = 1800.0,
        access_log: bool = False,
        authorization: str = "RBAC",
        tls: bool = False,
        job_controller: bool | None = None,
    ) -> None:
        if authorization not in ("RBAC", "AlwaysAllow"):
            raise ValueError(f"authorization must be RBAC or AlwaysAllow, not {authorization!r}")
        self.host = host
        self.port = port
        self._clock_offset = 0.0
        self.store = Store(history_size=history_size, clock=self.now)
        self.authorization = authorization
        self.tls = tls
        self.certificate: ServingCertificate | None = None
        self.authenticator = Authenticator()
        self.authorizer = Authorizer(self.store)
        self.accounting = RequestAccounting()
        self.openapi = OpenApiV3(self.store.registry)
        self.store.listeners.append(self._on_store_event)
        if authorization == "RBAC":
            for manifest in bootstrap_objects():
                self.store.create(self._rbac_info(manifest["kind"]), None, manifest)
        self.controller: DeploymentController | None = (
            DeploymentController(self.store, default_mode=default_readiness)
            if deployment_controller
            else None
        )
        # Jobs are simulated with the built-in controllers (like Deployments); the rest always run.
        simulate_jobs = deployment_controller if job_controller is None else job_controller
        self.controllers: list[Controller] = [
            *([JobSimulator(self.store)] if simulate_jobs else []),
            CronJobController(self.store),
            TtlController(self.store),
            HpaStatusController(self.store),
        ]
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.access_log = access_log
        self._url: str | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._streams: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    async def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._url is not None:
            return self._url
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=logger if self.access_log else None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        ssl_context = None
        if self.tls:
            self.certificate = self.certificate or make_serving_certificate(self.host)
            ssl_context = self.certificate.server_context()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=ssl_context)
        await site.start()
        self._runner = runner
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.port
        self._url = f"{'https' if self.tls else 'http'}://{self.host}:{port}"
        if self.controller is not None:
            self.controller.start()
        for controller in self.controllers:
            controller.start()
        logger.info("Kubernetes API emulator serving at %s", self._url)
        return self._url

    async def stop(self) -> None:
        """Close every watch stream, stop the controller and the HTTP server."""
        if self._runner is None:
            return
        self._stopping = True
        self.store.close_watchers()
        if self.controller is not None:
            self.controller.stop()
        for controller in self.controllers:
            controller.stop()
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=2.0)
        await self._runner.cleanup()
        self._runner = None
        self._url = None
        self._loop = None

    async def __aenter__(self) -> KubernetesEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---------------------------------------------------------------------- python API (any thread)

    def _call(self, fn: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # delivered to the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=60)

    def _info(self, resource: str) -> ResourceInfo:
        info = self.store.registry.find(resource)
        if info is None:
            raise KeyError(f"unknown resource {resource!r}")
        return info

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """A snapshot (deep copies) of all objects of a resource (plural, short name, kind, ``plural.group``)."""

        def run() -> list[Obj]:
            info = self._info(resource)
            return [
                clone(present(info, o))
                for o in self.store.select(info.key, namespace if info.namespaced else None)
            ]

        return self._call(run)

    def get_object(self, resource: str, name: str, namespace: str | None = "default") -> Obj | None:
        """A deep copy of one object, or None."""

        def run() -> Obj | None:
            info = self._info(resource)
            obj = self.store.peek(info.key, namespace or "" if info.namespaced else "", name)
            return clone(present(info, obj)) if obj is not None else None

        return self._call(run)

    def apply(self, manifest: Obj) -> Obj:
        """Create the object, or merge the manifest into the existing one (like a server-side apply)."""

        def run() -> Obj:
            info = self.store.registry.by_kind(
                str(manifest.get("apiVersion", "")), str(manifest.get("kind", ""))
            )
            if info is None:
                raise KeyError(f"unknown kind {manifest.get('apiVersion')}/{manifest.get('kind')}")
            meta = manifest.get("metadata") or {}
            namespace = str(meta.get("namespace") or "default") if info.namespaced else None
            name = str(meta.get("name") or "")
            if name and self.store.peek(info.key, namespace or "", name) is not None:
                result = self.store.patch(info, namespace, name, "apply", manifest)
            else:
                result = self.store.create(info, namespace, manifest)
            if info.status_subresource and "status" in manifest:
                stored = result.obj
                result = self.store.update(
                    info,
                    namespace,
                    str(stored["metadata"]["name"]),
                    {**stored, "status": manifest["status"]},
                    subresource="status",
                )
            copied: Obj = clone(result.obj)
            return copied

        return self._call(run)

    def delete(self, resource: str, name: str, namespace: str | None = "default") -> None:
        def run() -> None:
            info = self._info(resource)
            self.store.delete(info, namespace if info.namespaced else None, name)

        self._call(run)

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def _controller(self) -> DeploymentController:
        if self.controller is None:
            raise RuntimeError("this emulator runs without the Deployment controller")
        return self.controller

    def set_readiness(self, namespace: str | None, target: str | None, mode: str) -> ReadinessRule:
        """Deployments matching ``target`` in ``namespace`` (None: all) get readiness ``mode``.

        ``target``: a name, a prefix ending with ``*``, a label selector (``app=web``), or ``*``/None for
        all. ``mode``: ``ready``, ``slow:<seconds>``, ``never``, ``crash`` or ``partial:<n>``.
        The newest rule wins; rules win over the ``emulator.mlcanary.io/readiness`` annotation.
        """
        controller = self._controller()
        return self._call(lambda: controller.set_readiness(namespace, target, mode))

    def clear_readiness(self, rule_id: int | None = None) -> int:
        controller = self._controller()
        return self._call(lambda: controller.clear_readiness(rule_id))

    def now(self) -> float:
        """The emulator's clock: wall time plus what :meth:`advance_clock` added."""
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (CronJob schedules, TTLs, deadlines) and wake the controllers."""

        def run() -> None:
            self._clock_offset += seconds
            for controller in self.controllers:
                controller.poke()

        self._call(run)

    @property
    def admin_token(self) -> str:
        """A bearer token of group ``system:masters``: allowed everything (for test setup and tools)."""
        return self.authenticator.admin_token

    def service_account_token(self, namespace: str, name: str, *, create: bool = True) -> str:
        """A token for the ServiceAccount ``namespace/name`` (created first when ``create``), like the
        TokenRequest API gives. It stops working when the ServiceAccount is deleted."""

        def run() -> str:
            info = self._info("serviceaccounts")
            account = self.store.peek(info.key, namespace, name)
            if account is None:
                if not create:
                    raise KeyError(f"no serviceaccount {namespace}/{name}")
                manifest = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
                account = self.store.create(info, namespace, manifest).obj
            uid = str(account["metadata"]["uid"])
            return self.authenticator.add(service_account_user(namespace, name, uid))

        return self._call(run)

    def user_token(self, name: str, groups: Iterable[str] = ()) -> str:
        """A token for a plain user (RBAC subjects of kind User and Group)."""
        return self.authenticator.add(User(name, (*groups, "system:authenticated")))

    def write_kubeconfig(
        self, path: str | Path, *, namespace: str = "default", token: str | None = None
    ) -> Path:
        """A kubeconfig for this emulator; as the admin unless another ``token`` is given."""
        ca_data = self.certificate.ca_data if self.certificate is not None else None
        return write_kubeconfig(
            self.url, path, namespace=namespace, token=token or self.admin_token, ca_data=ca_data
        )

    def requests(self) -> dict[str, Any]:
        """Request counters per (user, verb, resource), watch streams and refusals apart (a snapshot)."""
        return self._call(self.accounting.snapshot)

    def reset_requests(self) -> None:
        self._call(self.accounting.reset)

    def _rbac_info(self, kind: str) -> ResourceInfo:
        info = self.store.registry.by_kind(f"{RBAC_GROUP}/v1", kind)
        assert info is not None
        return info

    def _on_store_event(self, event: Event) -> None:
        if event.key[0] == RBAC_GROUP and event.key[1] in RBAC_KINDS:
            self.authorizer.invalidate()
        elif event.key == ("", "serviceaccounts") and event.type == "DELETED":
            self.authenticator.forget_service_account(str(event.obj["metadata"].get("uid")))

    # ----------------------------------------------------------------------------------- HTTP

    def _authenticate(self, request: web.Request) -> User:
        if self.authorization == "AlwaysAllow":
            return _ALWAYS_ALLOWED
        user = self.authenticator.user_for(request.headers.get("Authorization"))
        if user is None:
            raise unauthorized()  # unknown, or bound to a ServiceAccount that is gone
        return user

    def _authorize(
        self, user: User, attributes: Request, *, watch: bool = False, user_agent: str = ""
    ) -> None:
        allowed = user is _ALWAYS_ALLOWED or self.authorizer.allowed(user, attributes)
        self.accounting.record(user.name, attributes, allowed=allowed, watch=watch, user_agent=user_agent)
        if not allowed:
            raise forbidden(user, attributes)

    def _authorize_path(self, request: web.Request, user: User) -> None:
        self._authorize(user, Request(verb=request.method.lower(), path=request.path))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self._authenticate(request)
            return await self._route(request, user)
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        except Exception as exc:
            logger.exception("Emulator failure on %s %s", request.method, request.path_qs)
            return _json(ApiError(500, "InternalError", f"emulator failure: {exc!r}").status(), 500)

    async def _route(self, request: web.Request, user: User) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        head = parts[0] if parts else ""
        if len(parts) <= {"api": 2, "apis": 3}.get(head, 99):
            self._authorize_path(request, user)  # discovery, /version, /healthz, /openapi, /emulator
        if not parts:
            return _json(
                {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/openapi/v3", "/version", "/emulator/v1"]}
            )
        if head == "version" and len(parts) == 1:
            major, minor = KUBERNETES_VERSION
            return _json(
                {
                    "major": str(major),
                    "minor": str(minor),
                    "gitVersion": f"v{major}.{minor}.0",
                    "gitCommit": "mlcanary-emulator",
                    "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.23.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if head in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if head == "emulator":
            return await self._control(request, parts[1:])
        if head == "openapi" and parts[1:2] == ["v3"]:
            if len(parts) == 2:
                return _json(self.openapi.root())
            document = self.openapi.document("/".join(parts[2:]))
            if document is None:
                raise errors.unknown_path(request.path)
            return web.Response(body=document, content_type="application/json")
        registry = self.store.registry
        if head == "api":
            if len(parts) == 1:
                return _json(registry.api_versions(f"{self.host}:{request.url.port or ''}"))
            group, version, rest = "", parts[1], parts[2:]
        elif head == "apis":
            if len(parts) == 1:
                return _json(registry.group_list())
            if len(parts) == 2:
                doc = registry.group(parts[1])
                if doc is None:
                    raise errors.unknown_path(request.path)
                return _json(doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.unknown_path(request.path)
        if not rest:
            resources = registry.resource_list(group, version)
            if resources is None:
                raise errors.unknown_path(request.path)
            return _json(resources)
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise errors.unknown_path(request.path)
        info = self.store.resource(group, version, rest[0])
        if namespace is not None and not info.namespaced:
            raise errors.unknown_path(request.path)
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        finalize = False
        if subresource is not None:
            if subresource == "finalize" and info.key == ("", "namespaces"):
                finalize = True
            elif not (
                (subresource == "status" and info.status_subresource)
                or (subresource == "scale" and info.scale_subresource)
                or (subresource == "token" and info.key == ("", "serviceaccounts"))
            ):
                raise errors.unknown_path(request.path)
        query = request.query
        watch = watch_path or (name is None and _flag(query.get("watch")))
        verb = _verb(request.method, collection=name is None, watch=watch)
        named = name or ""
        if name is None and verb in ("list", "watch"):
            named = FieldSelector.parse(query.get("fieldSelector")).exact_name() or ""
        self._authorize(
            user,
            Request(verb, info.group, info.plural, subresource or "", namespace or "", named),
            watch=watch,
            user_agent=request.headers.get("User-Agent", ""),
        )
        if finalize:
            subresource = None
        if info.key == ("authorization.k8s.io", "selfsubjectaccessreviews"):
            return await self._access_review(request, user)
        if name is None:
            return await self._collection(request, info, namespace, watch)
        if watch_path:
            fields = FieldSelector.parse(f"metadata.name={name}")
            return await self._watch(request, info, namespace, fields)
        if subresource == "token":
            return await self._token_request(request, namespace or "", name)
        return await self._item(request, info, namespace, name, subresource)

    async def _access_review(self, request: web.Request, user: User) -> web.StreamResponse:
        """SelfSubjectAccessReview (``kubectl auth can-i``): may the caller do this?"""
        if request.method != "POST":
            raise errors.method_not_allowed()
        body = await self._read_body(request)
        spec = (body or {}).get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise errors.bad_request("a SelfSubjectAccessReview needs a spec")
        resource, plain = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if isinstance(resource, dict):
            attributes = Request(
                str(resource.get("verb") or ""),
                str(resource.get("group") or ""),
                str(resource.get("resource") or "*"),
                str(resource.get("subresource") or ""),
                str(resource.get("namespace") or ""),
                str(resource.get("name") or ""),
            )
        elif isinstance(plain, dict):
            attributes = Request(str(plain.get("verb") or ""), path=str(plain.get("path") or ""))
        else:
            raise errors.bad_request("resourceAttributes or nonResourceAttributes is required")
        allowed = user is _ALWAYS_ALLOWED or self.authorizer.allowed(user, attributes)
        status: dict[str, Any] = {"allowed": allowed}
        if allowed and not user.is_admin:
            status["reason"] = "RBAC: allowed by the stored roles and bindings"
        return _json(
            {
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            201,
        )

    async def _token_request(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        """TokenRequest (``POST .../serviceaccounts/NAME/token``): a bearer token for the account."""
        if request.method != "POST":
            raise errors.method_not_allowed()
        body = await self._read_body(request) or {}
        spec = body.get("spec") if isinstance(body, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        account = self.store.get(self.store.resource("", "v1", "serviceaccounts"), namespace, name)
        user = service_account_user(namespace, name, str(account["metadata"]["uid"]))
        token = self.authenticator.add(user)
        seconds = int(spec.get("expirationSeconds") or 3600)
        expires = now_rfc3339(lambda: self.store.clock() + seconds)
        return _json(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
                "spec": {
                    "audiences": list(spec.get("audiences") or ["https://kubernetes.default.svc"]),
                    "expirationSeconds": seconds,
                    "boundObjectRef": spec.get("boundObjectRef"),
                },
                "status": {"token": token, "expirationTimestamp": expires},
            },
            201,
        )

    @staticmethod
    def _wants_table(request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    async def _collection(
        self, request: web.Request, info: ResourceInfo, namespace: str | None, watch: bool
    ) -> web.StreamResponse:
        query = request.query
        method = request.method
        if method == "GET":
            if watch:
                return await self._watch(
                    request, info, namespace, FieldSelector.parse(query.get("fieldSelector"))
                )
            labels = LabelSelector.parse(query.get("labelSelector"))
            fields = FieldSelector.parse(query.get("fieldSelector"))
            limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
            items, list_rv, token, remaining = self.store.list_objects(
                info, namespace, labels, fields, limit=limit, continue_token=query.get("continue") or None
            )
            shown = [present(info, o) for o in items]
            if self._wants_table(request):
                doc = table(
                    info,
                    shown,
                    include_object=query.get("includeObject", "Metadata"),
                    resource_version=list_rv,
                )
                doc["metadata"]["continue"] = token or ""
                return _json(doc)
            metadata: dict[str, Any] = {"resourceVersion": list_rv, "continue": token or ""}
            if remaining is not None:
                metadata["remainingItemCount"] = remaining
            return _json(
                {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": metadata, "items": shown}
            )
        if method == "POST":
            body = await self._read_body(request)
            result = self.store.create(
                info, namespace, body, dry_run=self._dry_run(request), strict=self._strict(request)
            )
            return _json(present(info, result.obj), 201, result.warnings)
        if method == "DELETE":
            options = await self._read_body(request) or {}
            deleted = self.store.delete_collection(
                info,
                namespace,
                LabelSelector.parse(query.get("labelSelector")),
                FieldSelector.parse(query.get("fieldSelector")),
                propagation=self._propagation(request, options),
                dry_run=self._dry_run(request),
            )
            list_rv = str(self.store.resource_version)
            return _json(
                {
                    "kind": info.list_kind,
                    "apiVersion": info.api_version,
                    "metadata": {"resourceVersion": list_rv},
                    "items": [present(info, o) for o in deleted],
                }
            )
        raise errors.method_not_allowed()

    async def _item(
        self,
        request: web.Request,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        subresource: str | None,
    ) -> web.StreamResponse:
        method = request.method
        dry_run = self._dry_run(request)
        if subresource == "scale":
            if method == "GET":
                return _json(self.store.get_scale(info, namespace, name))
            body = await self._read_body(request)
            if method == "PATCH":
                patch_type = self._patch_type(request)
                current = self.store.get_scale(info, namespace, name)
                scale_info = ResourceInfo("autoscaling", "v1", "scale", "Scale", info.namespaced)
                body = self.store._patched(scale_info, current, patch_type, body)
            elif method != "PUT":
                raise errors.method_not_allowed()
            return _json(self.store.set_scale(info, namespace, name, body, dry_run=dry_run))
        if method == "GET":
            obj = present(info, self.store.get(info, namespace, name))
            if self._wants_table(request):
                return _json(
                    table(info, [obj], include_object=request.query.get("includeObject", "Metadata"))
                )
            return _json(obj)
        if method == "PUT":
            body = await self._read_body(request)
            result = self.store.update(
                info,
                namespace,
                name,
                body,
                subresource=subresource,
                dry_run=dry_run,
                strict=self._strict(request),
            )
            return _json(present(info, result.obj), 200, result.warnings)
        if method == "PATCH":
            patch_type = self._patch_type(request)
            body = await self._read_body(request)
            if patch_type == "apply" and not request.query.get("fieldManager"):
                raise errors.bad_request(
                    "PATCH with the apply patch type requires the fieldManager query parameter"
                )
            result = self.store.patch(
                info,
                namespace,
                name,
                patch_type,
                body,
                subresource=subresource,
                dry_run=dry_run,
                strict=self._strict(request),
            )
            return _json(present(info, result.obj), 201 if result.created else 200, result.warnings)
        if method == "DELETE":
            if subresource is not None:
                raise errors.method_not_allowed()
            options = await self._read_body(request) or {}
            if not isinstance(options, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            deleted = self.store.delete(
                info,
                namespace,
                name,
                propagation=self._propagation(request, options),
                preconditions=options.get("preconditions"),
                dry_run=dry_run or "All" in (options.get("dryRun") or []),
            )
            gone = self.store.peek(info.key, str(deleted["metadata"].get("namespace") or ""), name) is None
            if gone and info.crd is None:
                # Built-in kinds answer an immediate deletion with a Status; custom resources with the object.
                details = {"name": name, "kind": info.plural, "uid": deleted["metadata"].get("uid")}
                if info.group:
                    details["group"] = info.group
                status = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
                return _json(status)
            return _json(present(info, deleted))
        raise errors.method_not_allowed()

    @staticmethod
    def _patch_type(request: web.Request) -> str:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        patch_type = PATCH_TYPES.get(content_type)
        if patch_type is None:
            raise errors.unsupported_media_type(
                f"the body of the request was in an unknown format ({content_type or 'no Content-Type'}) - accepted "
                "media types include: " + ", ".join(PATCH_TYPES)
            )
        return patch_type

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        if any(v != "All" for v in values):
            raise errors.bad_request(f"unsupported dryRun value {values!r}: only All is supported")
        return bool(values)

    @staticmethod
    def _strict(request: web.Request) -> bool:
        return request.query.get("fieldValidation", "") == "Strict"

    @staticmethod
    def _propagation(request: web.Request, options: Any) -> str | None:
        policy = request.query.get("propagationPolicy")
        if isinstance(options, dict):
            policy = options.get("propagationPolicy") or policy
            if options.get("orphanDependents") is True:
                policy = "Orphan"
        if _flag(request.query.get("orphanDependents")):
            policy = "Orphan"
        return policy

    @staticmethod
    async def _read_body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return None
        content_type = request.headers.get("Content-Type", "").lower()
        if "protobuf" in content_type or "cbor" in content_type:
            raise errors.unsupported_media_type(
                f"the body of the request was in an unknown format ({content_type}) - accepted media types "
                "include: application/json, application/yaml"
            )
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return loads(raw)
        except Exception as exc:
            raise errors.bad_request(f"the request body could not be decoded: {exc}") from None

    # ----------------------------------------------------------------------------------- watch

    async def _watch(
        self, request: web.Request, info: ResourceInfo, namespace: str | None, fields: FieldSelector
    ) -> web.StreamResponse:
        query = request.query
        labels = LabelSelector.parse(query.get("labelSelector"))
        timeout: float | None = self.watch_timeout
        if query.get("timeoutSeconds"):
            try:
                timeout = float(query["timeoutSeconds"])
            except ValueError:
                raise errors.bad_request("timeoutSeconds must be a number") from None
        bookmarks = _flag(query.get("allowWatchBookmarks"))
        send_initial = _flag(query.get("sendInitialEvents"))
        as_table = self._wants_table(request)
        include_object = query.get("includeObject", "Metadata")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher, initial = self.store.watch(
                info, namespace, labels, fields, query.get("resourceVersion"), send_initial=send_initial
            )
        except ApiError as exc:
            if exc.code != 410:
                raise
            await response.prepare(request)
            await response.write(dumps({"type": "ERROR", "object": exc.status()}) + b"\n")
            return response
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        loop = asyncio.get_running_loop()
        first_table = [True]

        def encode(etype: str, obj: Obj) -> bytes:
            if as_table:
                doc = table(
                    info, [present(info, obj)], include_object=include_object, with_columns=first_table[0]
                )
                first_table[0] = False
                return dumps({"type": etype, "object": doc}) + b"\n"
            return dumps({"type": etype, "object": present(info, obj)}) + b"\n"

        def bookmark(initial_end: bool = False) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return (
                dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta},
                    }
                )
                + b"\n"
            )

        try:
            await response.prepare(request)
            chunk = [encode("ADDED", obj) for obj in initial]
            if send_initial and bookmarks:
                chunk.append(bookmark(initial_end=True))
            if chunk:
                await response.write(b"".join(chunk))
            started = loop.time()
            deadline = started + timeout if timeout is not None else None
            next_bookmark = started + self.bookmark_interval
            closed = False
            while not closed and not self._stopping:
                now = loop.time()
                if deadline is not None and now >= deadline:
                    break
                wait = _LIVENESS_CHECK_SECONDS
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                item: tuple[str, Event] | None
                timed_out = False
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    item, timed_out = None, True
                chunk = []
                while not timed_out:
                    if item is None:
                        closed = True
                        break
                    etype, event = item
                    chunk.append(encode(etype, event.obj) if as_table else event.line(etype, info))
                    if watcher.queue.empty():
                        break
                    item = watcher.queue.get_nowait()
                if bookmarks and loop.time() >= next_bookmark:
                    chunk.append(bookmark())
                    next_bookmark = loop.time() + self.bookmark_interval
                if chunk:
                    await response.write(b"".join(chunk))
                elif request.transport is None or request.transport.is_closing():
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
            if task is not None:
                self._streams.discard(task)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # --------------------------------------------------------------------------------- control

    async def _control(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        if parts[:1] != ["v1"]:
            raise errors.unknown_path(request.path)
        rest = parts[1:]
        if rest == ["stats"] and request.method == "GET":
            return _json(
                {
                    "resourceVersion": self.store.resource_version,
                    "objects": {
                        f"{info.plural}.{info.group}" if info.group else info.plural: sum(
                            1 for _ in self.store.iter_objects(info.key)
                        )
                        for info in self.store.registry.all()
                    },
                    "watchers": self.store.watcher_count(),
                }
            )
        if rest == ["requests"] and request.method == "GET":
            return _json(self.accounting.snapshot())
        if rest == ["requests"] and request.method == "DELETE":
            self.accounting.reset()
            return _json({"reset": True})
        if not rest or rest[0] != "readiness" or len(rest) > 2:
            raise errors.unknown_path(request.path)
        if self.controller is None:
            raise ApiError(
                404, "NotFound", "this emulator runs without the Deployment controller", details={}
            )
        controller = self.controller
        if request.method == "GET" and len(rest) == 1:
            return _json(
                {"default": str(controller.default_mode), "rules": [r.as_dict() for r in controller.rules()]}
            )
        if request.method == "POST" and len(rest) == 1:
            body = await self._read_body(request)
            if not isinstance(body, dict) or "mode" not in body:
                raise errors.bad_request('expected {"namespace": ..., "target": ..., "mode": ...}')
            target = body.get("target", body.get("name", body.get("selector", body.get("prefix"))))
            if "prefix" in body and "target" not in body:
                target = f"{body['prefix']}*"
            try:
                rule = controller.set_readiness(body.get("namespace"), target, str(body["mode"]))
            except ValueError as exc:
                raise errors.bad_request(str(exc)) from None
            return _json(rule.as_dict(), 201)
        if request.method == "DELETE":
            rule_id = int(rest[1]) if len(rest) == 2 and rest[1].isdigit() else None
            if len(rest) == 2 and rule_id is None:
                raise errors.bad_request("the rule id must be an integer")
            return _json({"removed": controller.clear_readiness(rule_id)})
        raise errors.method_not_allowed()


class EmulatorThread:
    """Runs a :class:`KubernetesEmulator` on its own event loop in a daemon thread (for sync code)::

    with EmulatorThread() as emu:
        emu.write_kubeconfig(tmp_path / "kubeconfig")
        emu.emulator.objects("configmaps")
    """

    def __init__(self, **kwargs: Any) -> None:
        self.emulator = KubernetesEmulator(**kwargs)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.emulator.url

    def start(self) -> str:
        if self._thread is not None:
            return self.url
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error
        return self.url

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.emulator.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.emulator.stop()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Conveniences delegated to the emulator (thread-safe there).
    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return self.emulator.objects(resource, namespace)

    def get_object(self, resource: str, name: str, namespace: str | None = "default") -> Obj | None:
        return self.emulator.get_object(resource, name, namespace)

    def apply(self, manifest: Obj) -> Obj:
        return self.emulator.apply(manifest)

    def delete(self, resource: str, name: str, namespace: str | None = "default") -> None:
        self.emulator.delete(resource, name, namespace)

    def set_readiness(self, namespace: str | None, target: str | None, mode: str) -> ReadinessRule:
        return self.emulator.set_readiness(namespace, target, mode)

    def clear_readiness(self, rule_id: int | None = None) -> int:
        return self.emulator.clear_readiness(rule_id)

    def write_kubeconfig(
        self, path: str | Path, *, namespace: str = "default", token: str | None = None
    ) -> Path:
        return self.emulator.write_kubeconfig(path, namespace=namespace, token=token)

    @property
    def admin_token(self) -> str:
        return self.emulator.admin_token

    def service_account_token(self, namespace: str, name: str, *, create: bool = True) -> str:
        return self.emulator.service_account_token(namespace, name, create=create)

    def requests(self) -> dict[str, Any]:
        return self.emulator.requests()

    def user_token(self, name: str, groups: Iterable[str] = ()) -> str:
        return self.emulator.user_token(name, groups)

    def reset_requests(self) -> None:
        self.emulator.reset_requests()


# ------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kube_emulator",
        description="Run the Kubernetes API emulator (plain HTTP on 127.0.0.1; bearer tokens and RBAC).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 = ephemeral (default)")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for the emulator to this path")
    parser.add_argument(
        "--no-deployment-controller",
        action="store_true",
        help="do not fake Deployment status (e.g. when real processes play the pods)",
    )
    parser.add_argument(
        "--no-job-controller",
        action="store_true",
        help="do not simulate Jobs (e.g. when a kubelet runs their pods as processes)",
    )
    parser.add_argument(
        "--default-readiness", default="ready", help="readiness mode of Deployments (default: ready)"
    )
    parser.add_argument(
        "--apply",
        action="append",
        default=[],
        type=Path,
        help="create objects from a YAML file or directory (repeatable)",
    )
    parser.add_argument(
        "--bookmark-interval", type=float, default=5.0, help="seconds between watch bookmarks"
    )
    parser.add_argument("--history-size", type=int, default=10_000, help="watch events kept for resumption")
    parser.add_argument(
        "--authorization-mode",
        choices=["RBAC", "AlwaysAllow"],
        default="RBAC",
        help="RBAC (default): bearer tokens and the stored RBAC objects; AlwaysAllow: no checks",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve HTTPS (default; kubectl sends tokens only over https); --no-tls for plain HTTP",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    emulator = KubernetesEmulator(
        host=args.host,
        port=args.port,
        deployment_controller=not args.no_deployment_controller,
        job_controller=not args.no_job_controller and not args.no_deployment_controller,
        default_readiness=args.default_readiness,
        history_size=args.history_size,
        bookmark_interval=args.bookmark_interval,
        authorization=args.authorization_mode,
        tls=args.tls,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with emulator:
        for manifest in load_manifests(args.apply):
            emulator.apply(manifest)
        if args.kubeconfig:  # the admin's: group system:masters
            emulator.write_kubeconfig(args.kubeconfig)
        print(emulator.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
