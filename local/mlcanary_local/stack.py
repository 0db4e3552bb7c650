"""The local stack: everything a rollout needs, on one machine, no cluster.

Components, each a process of its own bound to 127.0.0.1 on a free port, started in this order:

1. the Kubernetes API emulator (:mod:`kube_emulator`) with its fake Deployment controller
   off, the ModelDeployment CRD applied; a kubeconfig for it is written (kubectl works with it);
2. a real Prometheus scraping every local pod (:mod:`mlcanary_local.prometheus_proc`);
3. the local kubelet (:mod:`mlcanary_local.kubelet`), which runs each Deployment's pods as real
   serving processes and keeps Prometheus's targets file up to date;
4. the local gateway (:mod:`mlcanary_local.gateway`), which splits HTTP traffic by the router's
   objects (HTTPRoute weights, or the ratio of ready pods behind the entry Service), and the
   route-status stand-in (:mod:`mlcanary_local.route_status`) that reports HTTPRoutes Accepted as a
   gateway controller would;
5. the real operator (``mlcanary run``), configured through its environment only;
6. with ``StackConfig(mlflow=True)`` (``mlcanary local up --mlflow``), a real MLflow tracking server
   with its Model Registry (:mod:`mlcanary_local.mlflow_proc`; SQLite, artifacts served over HTTP)
   for ``spec.model.registry`` and ``mlcanary bundle register``; started beside Prometheus.

:class:`LocalStack` is the Python API (the demo and the end-to-end tests use it; each component can
be stopped, killed and started again). ``mlcanary local up|down|status`` is the command line: ``up``
starts a supervisor in the background and returns once everything is ready (``--foreground`` keeps
it in the terminal until Ctrl-C); ``down`` stops it and everything it started; ``status`` shows what
runs where. Nothing outlives the stack: children get their own session and die with their parent.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlcanary.kubeapi import SERVICE_ACCOUNTS, ApiClient, ApiError, load_connection
from mlcanary_local.mlflow_proc import MlflowProcess
from mlcanary_local.process import (
    LOCALHOST,
    alive,
    free_port,
    port_open,
    spawn,
    stop_pid,
    stop_popen,
)
from mlcanary_local.prometheus_proc import PrometheusProcess

STATE_FILE = "state.json"


def default_work_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"mlcanary-local-{os.getuid()}"


@dataclass
class StackConfig:
    """Timing knobs. The defaults are the interactive ones; the demo's --quick and the tests shorten
    them (together with the ModelDeployment's own stepDuration and interval): configuration only."""

    tick_seconds: float = 1.0  # operator reconcile interval (MLCANARY_TICK_SECONDS)
    scrape_interval: float = 1.0  # Prometheus scrape and evaluation interval
    probe_period: float = 0.5  # kubelet: longest readiness/liveness probe period
    drain_seconds: float = 1.0  # kubelet: unready -> SIGTERM on scale-down
    query_timeout_seconds: float = 3.0  # operator: one analysis query (MLCANARY_QUERY_TIMEOUT_SECONDS)
    retrain_eval_seconds: int = 5  # operator: spec.retraining's trigger loop (MLCANARY_RETRAIN_EVAL_SECONDS)
    operator: bool = True  # start the operator (off: run your own against the kubeconfig)
    operator_verbose: bool = False
    # RBAC objects (e.g. the Helm chart's rendered ServiceAccount, roles and bindings) to run the
    # operator under: the stack applies them and gives the operator a token of this ServiceAccount
    # ("namespace/name"). Unset: the operator runs as the emulator's admin.
    operator_rbac: tuple[dict[str, Any], ...] = ()
    operator_service_account: str | None = None
    mlflow: bool = False  # start a real MLflow tracking server (needs .venv/tools/mlflow: make setup)


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class StackError(RuntimeError):
    pass


def _python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCANARY_") and k != "KUBECONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class LocalStack:
    """Start with :meth:`start` (or ``with LocalStack(...) as stack``); :meth:`stop` stops everything."""

    def __init__(self, work_dir: Path | None = None, config: StackConfig | None = None) -> None:
        self.work_dir = (work_dir or default_work_dir()).resolve()
        self.config = config or StackConfig()
        self.kubeconfig = self.work_dir / "kubeconfig"  # the admin's
        self.operator_kubeconfig = (
            self.work_dir / "operator.kubeconfig" if self.config.operator_service_account else self.kubeconfig
        )
        self.logs = self.work_dir / "logs"
        self.api_port = free_port()
        self.gateway_port = free_port()
        self.operator_metrics_port = free_port()
        self.prometheus = PrometheusProcess(
            work_dir=self.work_dir / "prometheus",
            targets_file=self.work_dir / "prometheus" / "targets.json",
            scrape_interval=self.config.scrape_interval,
            operator_port=self.operator_metrics_port if self.config.operator else None,
        )
        self.mlflow = MlflowProcess(work_dir=self.work_dir / "mlflow") if self.config.mlflow else None
        self.components: dict[str, Component] = {}
        self._started = False
        self._define_components()

    # ------------------------------------------------------------------------------ addresses

    @property
    def api_url(self) -> str:
        return f"https://{LOCALHOST}:{self.api_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{LOCALHOST}:{self.gateway_port}"

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    @property
    def mlflow_url(self) -> str | None:
        return self.mlflow.url if self.mlflow is not None else None

    def model_url(self, namespace: str, name: str, path: str = "predict") -> str:
        return f"{self.gateway_url}/{namespace}/{name}/{path}"

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "workDir": str(self.work_dir),
            "kubeconfig": str(self.kubeconfig),
            "api": self.api_url,
            "gateway": self.gateway_url,
            "prometheus": self.prometheus_url,
            "mlflow": self.mlflow_url,
            "operatorMetrics": f"http://{LOCALHOST}:{self.operator_metrics_port}/metrics"
            if self.config.operator
            else None,
            "components": {
                **{name: c.pid for name, c in self.components.items()},
                "prometheus": self.prometheus.process.pid if self.prometheus.process else None,
                # only a stack started with MLflow lists it (one without is not missing a component)
                **(
                    {"mlflow": self.mlflow.process.pid if self.mlflow.process else None}
                    if self.mlflow
                    else {}
                ),
            },
            "config": asdict(self.config),
        }

    # ------------------------------------------------------------------------------ lifecycle

    def _define_components(self) -> None:
        py = sys.executable
        kubeconfig = str(self.kubeconfig)
        self.components["emulator"] = Component(
            "emulator",
            [
                py,
                "-m",
                "kube_emulator",
                "--host",
                LOCALHOST,
                "--port",
                str(self.api_port),
                "--kubeconfig",
                kubeconfig,
                "--no-deployment-controller",
                "--bookmark-interval",
                "5",
                "--tls",
            ],
            self.logs / "emulator.log",
            env=_python_env(),
            port=self.api_port,
        )
        self.components["kubelet"] = Component(
            "kubelet",
            [
                py,
                "-m",
                "mlcanary_local.kubelet",
                "--kubeconfig",
                kubeconfig,
                "--work-dir",
                str(self.work_dir / "kubelet"),
                "--targets",
                str(self.prometheus.targets_file),
                "--probe-period",
                str(self.config.probe_period),
                "--drain-seconds",
                str(self.config.drain_seconds),
            ],
            self.logs / "kubelet.log",
            env=_python_env(),
        )
        self.components["gateway"] = Component(
            "gateway",
            [
                py,
                "-m",
                "mlcanary_local.gateway",
                "--kubeconfig",
                kubeconfig,
                "--port",
                str(self.gateway_port),
            ],
            self.logs / "gateway.log",
            env=_python_env(),
            port=self.gateway_port,
        )
        self.components["route-status"] = Component(
            "route-status",
            [py, "-m", "mlcanary_local.route_status", "--kubeconfig", kubeconfig, "--interval", "0.2"],
            self.logs / "route-status.log",
            env=_python_env(),
        )
        if self.config.operator:
            self.components["operator"] = Component(
                "operator",
                [py, "-m", "mlcanary.cli", "run", *(["--verbose"] if self.config.operator_verbose else [])],
                self.logs / "operator.log",
                env=_python_env(self.operator_env()),
                port=self.operator_metrics_port,
            )

    def operator_env(self) -> dict[str, str]:
        """The operator's configuration: environment variables only (as the Helm chart sets them)."""
        return {
            "KUBECONFIG": str(self.operator_kubeconfig),
            "MLCANARY_TICK_SECONDS": str(self.config.tick_seconds),
            "MLCANARY_METRICS_SOURCE": "prometheus",
            "MLCANARY_PROMETHEUS_URL": self.prometheus_url,
            "MLCANARY_QUERY_TIMEOUT_SECONDS": str(self.config.query_timeout_seconds),
            "MLCANARY_RETRAIN_EVAL_SECONDS": str(self.config.retrain_eval_seconds),
            # The local kubelet's scrape targets carry the pod's namespace, as a PodMonitor's do: every
            # analysis query is scoped to its ModelDeployment's namespace, and custom queries are allowed.
            "MLCANARY_PROMETHEUS_NAMESPACE_LABEL": "namespace",
            "MLCANARY_METRICS_PORT": str(self.operator_metrics_port),
            "MLCANARY_METRICS_HOST": LOCALHOST,
            # No cluster DNS here: a load test Job reaches the canary's own Service through the
            # local gateway, which routes /<namespace>/<Service>/ to that Service's ready pods.
            "MLCANARY_LOAD_TEST_TARGET_URL": f"{self.gateway_url}/{{namespace}}/{{service}}",
        }

    def start(self) -> LocalStack:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._started = True
        atexit.register(self.stop)
        try:
            self.start_component("emulator")
            self._install_crds()
            if self.config.operator_service_account:
                self._install_operator_rbac()
            self.prometheus.start()
            if self.mlflow is not None:
                self.mlflow.start()
            # The operator scrape job needs the Prometheus port in the operator's env: known now.
            if "operator" in self.components:
                self.components["operator"].env = _python_env(self.operator_env())
            self.start_component("kubelet")
            self.start_component("gateway")
            self.start_component("route-status")
            if self.config.operator:
                self.start_component("operator")
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start_component(self, name: str, timeout: float = 60.0) -> None:
        component = self.components[name]
        if component.running:
            return
        component.process = spawn(component.argv, component.log, env=component.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if component.process.poll() is not None:
                raise StackError(f"{name} exited with {component.process.returncode}; see {component.log}")
            if self._component_ready(name):
                return
            time.sleep(0.05)
        raise StackError(f"{name} not ready after {timeout}s; see {component.log}")

    def _component_ready(self, name: str) -> bool:
        component = self.components[name]
        if name == "emulator":
            return port_open(self.api_port) and self.kubeconfig.exists()
        if name == "gateway":
            return _http_ok(f"{self.gateway_url}/-/healthz")
        if name == "operator":
            return port_open(self.operator_metrics_port)
        return component.running  # the kubelet and route-status have no port: running is all there is

    def stop_component(self, name: str, kill: bool = False) -> None:
        """Stop one component: SIGTERM and wait (``kill=True``: SIGKILL, no clean-up, like a crash)."""
        component = self.components[name]
        if component.process is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.process.pid, signal.SIGKILL)
            component.process.wait(10)
        else:
            stop_popen(component.process, grace=15)
        component.process = None

    # Shortcuts used by the tests.
    def stop_prometheus(self) -> None:
        self.prometheus.stop()

    def start_prometheus(self) -> None:
        self.prometheus.start()  # same port, same data directory

    def kill_operator(self) -> None:
        self.stop_component("operator", kill=True)

    def start_operator(self) -> None:
        self.start_component("operator")

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for name in ("operator", "route-status", "gateway", "kubelet"):
            if name in self.components:
                with contextlib.suppress(Exception):
                    self.stop_component(name)
        with contextlib.suppress(Exception):
            self.prometheus.stop()
        if self.mlflow is not None:
            with contextlib.suppress(Exception):
                self.mlflow.stop()
        with contextlib.suppress(Exception):
            self.stop_component("emulator")
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)

    def _install_crds(self) -> None:
        from mlcanary.crd import build_crd

        async def install() -> None:
            async with ApiClient(load_connection(str(self.kubeconfig))) as api:
                await api.wait_ready()
                await api.create_or_merge(build_crd())
                for crd in extra_crds():
                    await api.create_or_merge(crd)
                # The CRD is served once the emulator has registered it.
                for _ in range(100):
                    with contextlib.suppress(ApiError):
                        await api.request("GET", "/apis/mlcanary.io/v1alpha1")
                        return
                    await asyncio.sleep(0.05)

        asyncio.run(install())

    def _install_operator_rbac(self) -> None:
        """Apply the operator's RBAC and write its kubeconfig with a token of its ServiceAccount."""
        namespace, _, name = str(self.config.operator_service_account).partition("/")

        async def install() -> str:
            async with ApiClient(load_connection(str(self.kubeconfig))) as api:
                await api.ensure_namespace(namespace)
                for manifest in self.config.operator_rbac:
                    await api.create_or_merge(manifest)
                request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
                path = SERVICE_ACCOUNTS.path(namespace, name, "token")
                answer = await api.request("POST", path, body=request)
                return str(answer["status"]["token"])

        token = asyncio.run(install())
        config = yaml.safe_load(self.kubeconfig.read_text())
        for user in config["users"]:
            user["user"] = {"token": token}
        self.operator_kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))

    # ------------------------------------------------------------------------------ helpers

    def kubectl_hint(self) -> str:
        return f"export KUBECONFIG={self.kubeconfig}"

    def write_state(self, path: Path | None = None) -> None:
        target = path or self.work_dir / STATE_FILE
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.info(), "ready": True}, indent=2))
        tmp.replace(target)

    def component_pids(self) -> Iterator[int]:
        for component in self.components.values():
            if component.pid:
                yield component.pid
        if self.prometheus.process is not None:
            yield self.prometheus.process.pid
        if self.mlflow is not None and self.mlflow.process is not None:
            yield self.mlflow.process.pid


HTTPROUTE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
    "spec": {
        "group": "gateway.networking.k8s.io",
        "scope": "Namespaced",
        "names": {
            "kind": "HTTPRoute",
            "listKind": "HTTPRouteList",
            "plural": "httproutes",
            "singular": "httproute",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}
"""The Gateway API's HTTPRoute, registered so the gatewayAPI router works locally. Schemaless on
purpose: the router's output is checked against the upstream CRD by its own tests; here the local
gateway and the route-status stand-in only read it."""


def extra_crds() -> list[dict[str, Any]]:
    """CRDs the routers need besides ours."""
    return [HTTPROUTE_CRD]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own 127.0.0.1
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------------------------- command line


def _read_state(work_dir: Path) -> dict[str, Any] | None:
    path = work_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    except ValueError:
        return None


def _print_info(state: dict[str, Any]) -> None:
    print(f"local stack up (supervisor pid {state['pid']}, work dir {state['workDir']})")
    print(f"  Kubernetes API  {state['api']}")
    print(f"  kubeconfig      {state['kubeconfig']}")
    print(f"  gateway         {state['gateway']}/<namespace>/<name>/predict")
    print(f"  Prometheus      {state['prometheus']}")
    if state.get("mlflow"):
        print(f"  MLflow          {state['mlflow']}  (MLFLOW_TRACKING_URI)")
    if state.get("operatorMetrics"):
        print(f"  operator        {state['operatorMetrics']}")
    print(f"\n  export KUBECONFIG={state['kubeconfig']}; kubectl get mdep -A")


def _serve(args: argparse.Namespace) -> int:
    """Run the stack until SIGTERM/SIGINT (the supervisor behind ``local up``)."""
    config = StackConfig(tick_seconds=args.tick_seconds, operator=not args.no_operator, mlflow=args.mlflow)
    stack = LocalStack(Path(args.work_dir), config)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state_path = stack.work_dir / STATE_FILE
    try:
        stack.start()
        stack.write_state()
        if args.foreground:
            _print_info(stack.info())
            print("\nCtrl-C stops everything.", flush=True)
        while not stopping:
            time.sleep(0.2)
            for name, component in stack.components.items():
                if component.process is not None and not component.running:
                    print(f"{name} exited ({component.process.returncode}); restarting", flush=True)
                    with contextlib.suppress(StackError):
                        stack.start_component(name)
    finally:
        stack.stop()
        with contextlib.suppress(FileNotFoundError):
            state_path.unlink()
    return 0


def _up(args: argparse.Namespace) -> int:
    work_dir = Path(args.work_dir)
    state = _read_state(work_dir)
    if state and alive(int(state["pid"])):
        _print_info(state)
        print("(already running)")
        return 0
    if args.foreground:
        return _serve(args)
    work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (work_dir / STATE_FILE).unlink()
    argv = [sys.executable, "-m", "mlcanary_local.stack", "_serve", "--work-dir", str(work_dir)]
    argv += ["--tick-seconds", str(args.tick_seconds)]
    if args.no_operator:
        argv.append("--no-operator")
    if args.mlflow:
        argv.append("--mlflow")
    log = work_dir / "supervisor.log"
    with log.open("ab") as handle:
        supervisor = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    limit = 240 if args.mlflow else 120  # MLflow alone takes 10-60 s to answer on a busy 2-core machine
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = _read_state(work_dir)
        if state and state.get("ready"):
            _print_info(state)
            print(f"\n  mlcanary local down   # stops everything (logs in {work_dir / 'logs'})")
            return 0
        if supervisor.poll() is not None:
            print(f"the stack failed to start; see {log} and {work_dir / 'logs'}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    stop_pid(supervisor.pid)
    print(f"the stack did not start within {limit} s; see {log}", file=sys.stderr)
    return 1


def _down(args: argparse.Namespace) -> int:
    work_dir = Path(args.work_dir)
    state = _read_state(work_dir)
    if state is None:
        print("no local stack is running")
        return 0
    pid = int(state["pid"])
    if alive(pid):
        stop_pid(pid, grace=40)
    for child in (state.get("components") or {}).values():  # should be gone with the supervisor
        if child and alive(int(child)):
            stop_pid(int(child), grace=5)
    with contextlib.suppress(FileNotFoundError):
        (work_dir / STATE_FILE).unlink()
    print("local stack stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _read_state(Path(args.work_dir))
    if state is None or not alive(int(state["pid"])):
        print("no local stack is running (mlcanary local up)")
        return 1
    _print_info(state)
    print("\ncomponents:")
    for name, pid in (state.get("components") or {}).items():
        print(f"  {name:<11} pid {pid}: {'running' if pid and alive(int(pid)) else 'NOT RUNNING'}")
    try:
        with urllib.request.urlopen(f"{state['gateway']}/-/routes", timeout=2) as response:  # noqa: S310
            routes = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        routes = []
    if routes:
        print("\nroutes (gateway):")
        for route in routes:
            parts = ", ".join(
                f"{b['service']} w={b['weight']} pods={len(b['readyPods'])}" for b in route["backends"]
            )
            print(f"  /{route['namespace']}/{route['name']}/  via {route['via']}: {parts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcanary local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default=str(default_work_dir()), help="state, logs, kubeconfig")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="{up,down,status}")
    up = sub.add_parser("up", help="start the stack (in the background unless --foreground)")
    up.add_argument("--foreground", action="store_true", help="stay in the terminal; Ctrl-C stops")
    up.add_argument("--tick-seconds", type=float, default=1.0, help="operator reconcile interval")
    up.add_argument("--no-operator", action="store_true", help="do not start the operator")
    up.add_argument("--mlflow", action="store_true", help="also start an MLflow tracking server")
    sub.add_parser("down", help="stop the stack and everything it started")
    sub.add_parser("status", help="what runs where")
    serve = sub.add_parser("_serve", help=argparse.SUPPRESS)
    serve.add_argument("--foreground", action="store_true")
    serve.add_argument("--tick-seconds", type=float, default=1.0)
    serve.add_argument("--no-operator", action="store_true")
    serve.add_argument("--mlflow", action="store_true")
    for command in sub.choices.values():  # `--work-dir` may also follow the verb
        command.add_argument("--work-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"up": _up, "down": _down, "status": _status, "_serve": _serve}
    return handlers[args.verb](args)


if __name__ == "__main__":
    raise SystemExit(main())
