"""``kubectl mlcanary``: the kubectl plugin (the console script ``kubectl-mlcanary``).

kubectl runs any executable named ``kubectl-<name>`` on PATH as ``kubectl <name>``, passing the rest of
the command line (flags after the plugin name) and the environment (``KUBECONFIG``). Everything
shown is read from the ModelDeployment's status; every action is an edit the operator already acts
on: the ``mlcanary.io/promote|abort|retry`` annotations (a new value is a new request) and
``spec.rollout.paused``.

Exit codes of ``status``, for CI: 0 the rollout finished and the spec's version serves (promoted, or a
first deploy ready), 1 it was rolled back, 2 the timeout passed first, 3 an error (a usage error, the
object not found, the API server unreachable). Other commands exit 0 on success and 3 on an error.

The rendering functions (:func:`tree`, :func:`history_table`, :func:`outcome`) are pure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mlcanary.durations import parse_duration
from mlcanary.engine import ANNOTATION_PREFIX, REQUESTS
from mlcanary.models import API_GROUP, API_VERSION, PLURAL

PROMOTED, ROLLED_BACK, TIMED_OUT, ERROR = 0, 1, 2, 3
Obj = Mapping[str, Any]


class PluginError(Exception):
    """Reported on stderr as ``kubectl mlcanary: <message>``; exit code 3."""


# ------------------------------------------------------------------------------------------ rendering


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        (indent + "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row))).rstrip()
        for row in [header, *rows]
    ]


def tree(obj: Obj) -> str:
    """ModelDeployment -> revisions -> route weights -> the per-metric table of the current step."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = status.get("phase") or "Unknown"
    steps = (spec.get("rollout") or {}).get("steps") or []
    step = status.get("currentStep")
    # Counted as the engine counts (the final 100% is a step); unset steps are the operator's defaults.
    total = f"/{len(steps) + (steps[-1] != 100)}" if steps else ""
    where = f"  step {step}{total}" if step is not None and status.get("canaryVersion") else ""
    shadowing = phase == "Shadowing" and status.get("canaryVersion")
    if shadowing:
        where = "  shadow phase (requests mirrored, 0% served)"
    lines = [
        f"ModelDeployment {meta.get('namespace')}/{meta.get('name')}  {phase}{where}  "
        f"(spec version {(spec.get('model') or {}).get('version', '?')})"
    ]
    if status.get("message"):
        lines.append(f"│ {status['message']}")
    canary = status.get("canary")
    weight = int(status.get("canaryWeight") or 0) if canary else 0
    served = status.get("servedWeight")
    revisions: list[tuple[str, Any, int, str]] = []
    if status.get("stable"):
        revisions.append(("stable", status["stable"], 100 - weight, ""))
    if canary:
        note = f" (serving {_num(served)}%)" if served is not None and served != weight else ""
        revisions.append(("canary", canary, weight, note))
    for retiring in status.get("retiring") or []:
        revisions.append(("retiring", {"revision": retiring.get("revision")}, 0, ""))
    # The current step's last round (status.steps), not lastMeasurements, which may be the previous step's.
    report = next((s for s in status.get("steps") or [] if s.get("step") == step), None) if canary else None
    if shadowing:
        report = next((s for s in status.get("steps") or [] if s.get("kind") == "shadow"), None)
    measurements = (report or {}).get("measurements") or []
    for index, (role, revision, route_weight, note) in enumerate(revisions):
        last = index == len(revisions) - 1 and not measurements
        version = ((revision.get("template") or {}).get("model") or {}).get("version") or ""
        lines.append(
            f"{'└──' if last else '├──'} {role:<8} {revision.get('revision', '?')}  {version}".rstrip()
            + f"  route weight {route_weight}%{note}"
        )
    if measurements:
        assert report is not None
        what = "shadow (mirrored, 0% served)" if shadowing else f"step {step} ({report.get('weight')}%)"
        lines.append(
            f"└── {what}: {report.get('rounds', 0)} analysis round(s), last verdict {report.get('verdict', '-')}"
        )
        rows = [
            [
                str(m.get("metric")),
                _num(m.get("value")),
                _num(m.get("stableValue")),
                str(m.get("threshold") or "-"),
                _num(m.get("sampleSize")),
                str(m.get("verdict")) + (" (dry run)" if m.get("dryRun") else ""),
            ]
            for m in measurements
        ]
        lines += _table(["METRIC", "CANARY", "STABLE", "BOUND", "SAMPLES", "VERDICT"], rows, "    ")
    return "\n".join(lines) + "\n"


def history_table(objects: Sequence[Obj], with_namespace: bool) -> str:
    rows = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        for record in (obj.get("status") or {}).get("history") or []:
            row = [
                str(record.get("fromVersion") or "-"),
                str(record.get("version")),
                str(record.get("outcome")),
                str(record.get("startedAt") or "-"),
                str(record.get("finishedAt") or "-"),
                str(record.get("reason") or ""),
            ]
            name = (
                [meta.get("namespace", ""), meta.get("name", "")]
                if with_namespace
                else [meta.get("name", "")]
            )
            rows.append([*name, *row])
    header = ["NAME", "FROM", "VERSION", "OUTCOME", "STARTED", "FINISHED", "REASON"]
    if with_namespace:
        header = ["NAMESPACE", *header]
    if not rows:
        return "No rollouts recorded.\n"
    return "\n".join(_table(header, rows, "")) + "\n"


def outcome(obj: Obj) -> int | None:
    """PROMOTED, ROLLED_BACK, or None while the rollout of the spec's version is still running."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 1):
        return None  # the operator has not seen the current spec yet
    annotations, handled = meta.get("annotations") or {}, status.get("handledRequests") or {}
    for request in REQUESTS:
        value = annotations.get(ANNOTATION_PREFIX + request)
        if value is not None and handled.get(request) != value:
            return None  # a promote/abort/retry not acted on yet (`retry` right before `status`)
    version = ((obj.get("spec") or {}).get("model") or {}).get("version")
    if (
        status.get("phase") == "Healthy"
        and status.get("stableVersion") == version
        and not status.get("canary")
    ):
        return PROMOTED
    if status.get("phase") == "RolledBack" and version in (status.get("rejectedVersions") or []):
        return ROLLED_BACK
    return None


def progress(obj: Obj) -> str:
    status = obj.get("status") or {}
    parts = [str(status.get("phase") or "Pending")]
    if status.get("canaryVersion"):
        parts.append(f"canary {status['canaryVersion']} at {status.get('canaryWeight', 0)}%")
    if status.get("message"):
        parts.append(str(status["message"]))
    return ": ".join(parts[:1]) + (" — " + "; ".join(parts[1:]) if parts[1:] else "")


# ----------------------------------------------------------------------------------------- the cluster


class Cluster:
    """ModelDeployments through the official client, configured as kubectl is (kubeconfig, context)."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        import kubernetes.client
        import kubernetes.config

        self.default_namespace = "default"
        try:
            api_client = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
            self.default_namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        except kubernetes.config.ConfigException:
            if kubeconfig or context:
                raise
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            api_client = kubernetes.client.ApiClient()
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            if ns_file.exists():
                self.default_namespace = ns_file.read_text().strip()
        self.api: Any = kubernetes.client.CustomObjectsApi(api_client)

    def get(self, namespace: str, name: str) -> Obj:
        obj: Obj = self.api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        return obj

    def list(self, namespace: str | None) -> list[Obj]:
        if namespace is None:
            result: Any = self.api.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL)
        else:
            result = self.api.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)
        items: list[Obj] = result.get("items") or []
        return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> Obj:
        # A dict body is sent as a JSON merge patch.
        obj: Obj = self.api.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, body
        )
        return obj


# ------------------------------------------------------------------------------------------- commands


def _namespace(args: argparse.Namespace, cluster: Cluster) -> str:
    return str(args.namespace or cluster.default_namespace)


def _cmd_get(args: argparse.Namespace, cluster: Cluster, out: Callable[[str], None]) -> int:
    def read() -> list[Obj]:
        if args.name:
            return [cluster.get(_namespace(args, cluster), args.name)]
        return cluster.list(None if args.all_namespaces else _namespace(args, cluster))

    shown: list[str] = []
    while True:
        objects = read()
        text = "\n".join(tree(obj) for obj in objects) if objects else "No ModelDeployments found.\n"
        if not shown or text != shown[-1]:
            out(text if not shown else "\n" + text)
            shown.append(text)
        if not args.watch:
            return 0
        time.sleep(args.interval)


def _cmd_status(args: argparse.Namespace, cluster: Cluster, out: Callable[[str], None]) -> int:
    timeout = _seconds(args.timeout)
    deadline = time.monotonic() + timeout
    namespace = _namespace(args, cluster)
    said = ""
    while True:
        obj = cluster.get(namespace, args.name)
        line = progress(obj)
        if line != said:
            out(line + "\n")
            said = line
        result = outcome(obj)
        if result is not None:
            status = obj.get("status") or {}
            version = ((obj.get("spec") or {}).get("model") or {}).get("version")
            if result == PROMOTED:
                out(f"{namespace}/{args.name}: {version} serves (Healthy)\n")
            else:
                record = (status.get("history") or [{}])[-1]
                out(f"{namespace}/{args.name}: {version} rolled back: {record.get('reason', '')}\n")
            return result
        if time.monotonic() >= deadline:
            out(f"{namespace}/{args.name}: timed out after {args.timeout}\n")
            return TIMED_OUT
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


def _cmd_request(args: argparse.Namespace, cluster: Cluster, out: Callable[[str], None]) -> int:
    namespace = _namespace(args, cluster)
    # A new value is a new request: the operator acts on each value once (status.handledRequests).
    value = str(time.time_ns())
    cluster.patch(
        namespace, args.name, {"metadata": {"annotations": {ANNOTATION_PREFIX + args.command: value}}}
    )
    out(
        f"modeldeployment.mlcanary.io/{args.name} {args.command} requested ({ANNOTATION_PREFIX}{args.command}={value})\n"
    )
    return 0


def _cmd_pause(args: argparse.Namespace, cluster: Cluster, out: Callable[[str], None]) -> int:
    paused = args.command == "pause"
    cluster.patch(_namespace(args, cluster), args.name, {"spec": {"rollout": {"paused": paused}}})
    out(f"modeldeployment.mlcanary.io/{args.name} {'paused' if paused else 'resumed'}\n")
    return 0


def _cmd_history(args: argparse.Namespace, cluster: Cluster, out: Callable[[str], None]) -> int:
    if args.name:
        objects = [cluster.get(_namespace(args, cluster), args.name)]
    else:
        objects = cluster.list(None if args.all_namespaces else _namespace(args, cluster))
    if args.output == "json":
        records = [
            {"namespace": o["metadata"].get("namespace"), "name": o["metadata"]["name"], **record}
            for o in objects
            for record in (o.get("status") or {}).get("history") or []
        ]
        out(json.dumps(records, indent=2) + "\n")
    else:
        out(history_table(objects, with_namespace=args.all_namespaces))
    return 0


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text).total_seconds()
    except ValueError as error:
        raise PluginError(f"--timeout: {error}") from None


# ----------------------------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 3: 2 means "timed out"
        self.print_usage(sys.stderr)
        self.exit(ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context")
    listing = _Parser(add_help=False)
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")

    parser = _Parser(
        prog="kubectl mlcanary",
        description="Watch and steer mlcanary rollouts (ModelDeployments).",
        epilog="status exits 0 promoted, 1 rolled back, 2 timed out, 3 error.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    get = sub.add_parser(
        "get", parents=[common, listing], help="tree: revisions, route weights, the current step's metrics"
    )
    get.add_argument("name", nargs="?")
    get.add_argument("-w", "--watch", action="store_true", help="print again on every change (Ctrl-C ends)")
    get.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    get.set_defaults(func=_cmd_get)

    status = sub.add_parser(
        "status",
        parents=[common],
        help="wait for the rollout to finish; exit 0 promoted, 1 rolled back, 2 timed out",
    )
    status.add_argument("name")
    status.add_argument("--timeout", default="10m", help="how long to wait (30s, 5m, 1h; default 10m)")
    status.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    status.set_defaults(func=_cmd_status)

    for request, text in (
        ("promote", "skip the remaining steps: promote the canary now"),
        ("abort", "roll back now (traffic to stable, the version is rejected)"),
        ("retry", "forget the rejection of a rolled-back version so it rolls out again"),
        ("retrain", "request a training run now (spec.retraining; one at a time, not held by the cooldown)"),
    ):
        command = sub.add_parser(request, parents=[common], help=text)
        command.add_argument("name")
        command.set_defaults(func=_cmd_request)
    for verb, text in (("pause", "hold the rollout at its step"), ("resume", "resume a paused rollout")):
        command = sub.add_parser(verb, parents=[common], help=f"{text} (spec.rollout.paused)")
        command.add_argument("name")
        command.set_defaults(func=_cmd_pause)

    history = sub.add_parser("history", parents=[common, listing], help="finished rollouts (status.history)")
    history.add_argument("name", nargs="?")
    history.add_argument("-o", "--output", choices=("table", "json"), default="table")
    history.set_defaults(func=_cmd_history)

    sub.add_parser("report", add_help=False, help="the per-step canary report (mlcanary report; --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "report":
        from mlcanary.analysis import report

        return report.main(args_list[1:])
    args = build_parser().parse_args(args_list)

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        cluster = Cluster(args.kubeconfig, args.context)
        result: int = args.func(args, cluster, out)
        return result
    except KeyboardInterrupt:
        return 0 if args.command == "get" else TIMED_OUT
    except PluginError as error:
        print(f"kubectl mlcanary: {error}", file=sys.stderr)
        return ERROR
    except Exception as error:  # the API's answer, or the kubeconfig's problem, in one line
        status, reason = getattr(error, "status", None), getattr(error, "reason", None)
        detail = f"HTTP {status} {reason}" if status else f"{type(error).__name__}: {error}"
        name = getattr(args, "name", None)
        print(f"kubectl mlcanary {args.command}{' ' + name if name else ''}: {detail}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    raise SystemExit(main())
