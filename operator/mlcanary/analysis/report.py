"""The canary report: why did a rollout promote or roll back?

:func:`build_report` and :func:`render_text` are pure: they read a ModelDeployment's status (a plain
dict, as the API server returns it) and lay out, per rollout, one row per step and metric with the
step's weight, the stable and canary values, the threshold, the sample size and the verdict. The
data is the engine's: ``status.steps`` for the rollout in flight and ``status.history[].steps`` for
finished ones (the engine caps the history); each step keeps its last analysis round.

:func:`main` is ``mlcanary report NAME``: it reads the object through the kubeconfig (or a file with
``-f``) and prints the report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MESSAGE_WIDTH = 60


@dataclass(frozen=True)
class ReportRow:
    step: int
    weight: int | None
    rounds: int | None
    step_verdict: str | None
    metric: str | None
    stable_value: float | None = None
    canary_value: float | None = None
    threshold: str | None = None
    sample_size: int | None = None
    verdict: str | None = None
    dry_run: bool = False
    message: str | None = None
    time: str | None = None
    kind: str | None = None  # "shadow": the shadow phase (step 0, user weight 0, requests mirrored)


@dataclass(frozen=True)
class RolloutReport:
    version: str
    from_version: str | None
    outcome: str  # Promoted, RolledBack, Superseded, or InProgress
    reason: str | None
    started_at: str | None
    finished_at: str | None
    rows: list[ReportRow] = field(default_factory=list)
    load_test: dict[str, Any] | None = None  # status.loadTest / history[].loadTest, as written


def _status_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a whole ModelDeployment or just its status."""
    if "status" in obj and isinstance(obj["status"], Mapping):
        return obj["status"]
    return obj


def _rows(steps: Sequence[Mapping[str, Any]]) -> list[ReportRow]:
    rows: list[ReportRow] = []
    for step in sorted(steps, key=lambda s: int(s.get("step", 0))):
        number, weight = int(step.get("step", 0)), step.get("weight")
        rounds, step_verdict = step.get("rounds"), step.get("verdict")
        kind = step.get("kind")
        measurements = step.get("measurements") or []
        if not measurements:
            rows.append(ReportRow(number, weight, rounds, step_verdict, metric=None, kind=kind))
        for m in measurements:
            rows.append(
                ReportRow(
                    number,
                    weight,
                    rounds,
                    step_verdict,
                    metric=m.get("metric"),
                    stable_value=m.get("stableValue"),
                    canary_value=m.get("value"),
                    threshold=m.get("threshold"),
                    sample_size=m.get("sampleSize"),
                    verdict=m.get("verdict"),
                    dry_run=bool(m.get("dryRun")),
                    message=m.get("message"),
                    time=m.get("time"),
                    kind=kind,
                )
            )
    return rows


def _version(revision: Any) -> str | None:
    if isinstance(revision, Mapping):
        model = (revision.get("template") or {}).get("model") or {}
        version = model.get("version")
        return str(version) if version is not None else None
    return None


def build_report(obj: Mapping[str, Any], *, all_rollouts: bool = False) -> list[RolloutReport]:
    """The rollout in flight (if any) and the finished rollouts, newest first.

    Without ``all_rollouts`` only the newest finished rollout is included."""
    status = _status_of(obj)
    reports: list[RolloutReport] = []
    canary_version = status.get("canaryVersion") or _version(status.get("canary"))
    if status.get("canary") is not None:  # a rollout is in flight (steps linger after it ends)
        ending = status.get("ending") or {}
        reports.append(
            RolloutReport(
                version=str(canary_version or "?"),
                from_version=status.get("stableVersion") or _version(status.get("stable")),
                outcome=f"InProgress ({status.get('phase', '?')})",
                reason=ending.get("reason") or status.get("message"),
                started_at=status.get("canaryStartedAt"),
                finished_at=None,
                rows=_rows(status.get("steps") or []),
                load_test=dict(status["loadTest"]) if status.get("loadTest") else None,
            )
        )
    history = list(status.get("history") or [])
    history.sort(key=lambda r: str(r.get("finishedAt", "")), reverse=True)
    for record in history if all_rollouts else history[:1]:
        reports.append(
            RolloutReport(
                version=str(record.get("version", "?")),
                from_version=record.get("fromVersion"),
                outcome=str(record.get("outcome", "?")),
                reason=record.get("reason"),
                started_at=record.get("startedAt"),
                finished_at=record.get("finishedAt"),
                rows=_rows(record.get("steps") or []),
                load_test=dict(record["loadTest"]) if record.get("loadTest") else None,
            )
        )
    return reports


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def render_text(
    obj: Mapping[str, Any], *, all_rollouts: bool = False, wide: bool = False, title: str | None = None
) -> str:
    """The report as a plain-text table per rollout."""
    status = _status_of(obj)
    reports = build_report(obj, all_rollouts=all_rollouts)
    lines: list[str] = []
    head = title or "ModelDeployment"
    summary = [f"phase {status.get('phase', '?')}"]
    if status.get("stableVersion"):
        summary.append(f"stable {status['stableVersion']}")
    if status.get("canaryVersion"):
        summary.append(f"canary {status['canaryVersion']} at {status.get('canaryWeight', 0)}%")
    lines.append(f"{head}: " + ", ".join(summary))
    if not reports:
        lines.append("")
        lines.append("No rollout recorded yet.")
        return "\n".join(lines) + "\n"
    for report in reports:
        lines.append("")
        when = report.finished_at or report.started_at or ""
        frm = f" (from {report.from_version})" if report.from_version else ""
        lines.append(f"Rollout {report.version}{frm}: {report.outcome}" + (f" at {when}" if when else ""))
        if report.reason:
            lines.append(f"  why: {report.reason}")
        if report.load_test:
            lines.append("  " + describe_load_test(report.load_test))
        if not report.rows:
            lines.append("  (no analysis steps recorded)")
            continue
        stable_head = f"STABLE {report.from_version}" if report.from_version else "STABLE"
        header = [
            "STEP",
            "WEIGHT",
            "ROUNDS",
            "METRIC",
            stable_head,
            f"CANARY {report.version}",
            "THRESHOLD",
            "SAMPLE",
            "VERDICT",
            "MESSAGE",
        ]
        table: list[list[str]] = []
        previous_step: int | None = None
        for row in report.rows:
            first = row.step != previous_step
            previous_step = row.step
            message = row.message or ""
            if not wide and len(message) > MESSAGE_WIDTH:
                message = message[: MESSAGE_WIDTH - 3] + "..."
            verdict = row.verdict or (row.step_verdict or "-" if row.metric is None else "-")
            if row.dry_run:
                verdict += " (dry run)"
            table.append(
                [
                    (row.kind or str(row.step)) if first else "",
                    (
                        ("0% (mirrored)" if row.kind == "shadow" else f"{row.weight}%")
                        if row.weight is not None
                        else "-"
                    )
                    if first
                    else "",
                    (str(row.rounds) if row.rounds is not None else "-") if first else "",
                    row.metric or "(no analysis)",
                    _num(row.stable_value),
                    _num(row.canary_value),
                    row.threshold or "-",
                    str(row.sample_size) if row.sample_size is not None else "-",
                    verdict,
                    message,
                ]
            )
        lines.extend(_table(header, table))
    return "\n".join(lines) + "\n"


def describe_load_test(test: Mapping[str, Any]) -> str:
    """One line for the load test gate (before step 1, at weight 0)."""
    measured = []
    if test.get("achievedRps") is not None:
        measured.append(f"{_num(test['achievedRps'])} of {_num(test.get('requestedRps'))} rps")
    for key, name in (("latencyP95Seconds", "p95"), ("latencyP99Seconds", "p99")):
        if test.get(key) is not None:
            measured.append(f"{name} {float(test[key]) * 1000:.1f}ms")
    if test.get("errorRate") is not None:
        measured.append(f"error rate {_num(test['errorRate'])}")
    detail = f" ({', '.join(measured)})" if measured else ""
    why = f": {test['message']}" if test.get("message") else ""
    return f"load test (weight 0, Job {test.get('jobName', '?')}): {test.get('phase', '?')}{detail}{why}"


def render_json(obj: Mapping[str, Any], *, all_rollouts: bool = False) -> str:
    return json.dumps([asdict(r) for r in build_report(obj, all_rollouts=all_rollouts)], indent=2) + "\n"


# ------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlcanary report",
        description="Per-step canary report of a ModelDeployment: weight, sample size, each metric's "
        "stable and canary values, threshold and verdict.",
    )
    parser.add_argument("name", nargs="?", help="ModelDeployment name (not needed with -f)")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    parser.add_argument(
        "-f", "--file", help="read the ModelDeployment (or its status) from a YAML/JSON file, '-' = stdin"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("-A", "--all", action="store_true", help="every rollout kept in status.history")
    parser.add_argument("-o", "--output", choices=("text", "wide", "json"), default="text")
    return parser


def _read_file(path: str) -> Any:
    import yaml

    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return yaml.safe_load(text)


def _read_cluster(name: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> Any:
    import kubernetes.client
    import kubernetes.config

    from mlcanary.models import API_GROUP, API_VERSION, PLURAL

    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        if namespace is None:
            _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            chosen = active
            if context is not None:
                contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
                chosen = next((c for c in contexts if c.get("name") == context), active)
            namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    except kubernetes.config.ConfigException:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        if namespace is None:
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
    api = kubernetes.client.CustomObjectsApi()
    return api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)


def main(argv: Sequence[str] | None = None) -> int:
    """``mlcanary report NAME [-n NS] [-f FILE] [-A] [-o text|wide|json]``; returns the exit code."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    try:
        if args.file:
            obj = _read_file(args.file)
        elif args.name:
            obj = _read_cluster(args.name, args.namespace, args.kubeconfig, args.context)
        else:
            print("mlcanary report: give a ModelDeployment NAME or -f FILE", file=sys.stderr)
            return 2
    except Exception as error:
        reason = getattr(error, "reason", None)
        status = getattr(error, "status", None)
        detail = f"HTTP {status} {reason}" if status else f"{type(error).__name__}: {error}"
        print(f"mlcanary report: cannot read the ModelDeployment: {detail}", file=sys.stderr)
        return 1
    if not isinstance(obj, Mapping):
        print("mlcanary report: the input is not a ModelDeployment object", file=sys.stderr)
        return 1
    metadata = obj.get("metadata") or {}
    title = None
    if metadata.get("name"):
        title = f"ModelDeployment {metadata.get('namespace', '')}/{metadata['name']}".replace(" /", " ")
    if args.output == "json":
        sys.stdout.write(render_json(obj, all_rollouts=args.all))
    else:
        sys.stdout.write(render_text(obj, all_rollouts=args.all, wide=args.output == "wide", title=title))
    return 0
