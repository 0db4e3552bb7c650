"""``mlcanary analyze``: one analysis round of a manifest's metrics against a live Prometheus.

Prints, for every metric, each query exactly as it is sent to Prometheus (rendered, checked against
the operator's limits and, with a namespace label, scoped to the namespace) with its raw answer,
then the value, stable value, threshold, sample size and verdict, exactly as the operator would judge
them, so users can check their queries before a rollout depends on them. Nothing is written anywhere.
The operator settings that shape queries (``MLCANARY_PROMETHEUS_NAMESPACE_LABEL``,
``MLCANARY_CUSTOM_QUERIES``, ``MLCANARY_QUERY_*``) are read from the environment, as the operator
reads them; the options override them.

Exit code: 0 the round is Successful, 3 Failed, 4 Inconclusive, 5 Error; 1 the manifest or the
options are invalid; 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from mlcanary.analysis import queries as q
from mlcanary.analysis.prometheus import MetricResult, PrometheusAuth, PrometheusProvider, measure_all
from mlcanary.analysis.provider import AnalysisContext
from mlcanary.durations import parse_duration
from mlcanary.engine import round_verdict
from mlcanary.models import KIND, ModelDeploymentSpec, Verdict
from mlcanary.settings import CUSTOM_QUERY_MODES, Settings

EXIT_CODES = {Verdict.SUCCESSFUL: 0, Verdict.FAILED: 3, Verdict.INCONCLUSIVE: 4, Verdict.ERROR: 5}
EXIT_INVALID = 1


class InvalidInput(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlcanary analyze",
        description="Run one analysis round of a ModelDeployment manifest's metrics against a live "
        "Prometheus and print each rendered query, its answer, the value, threshold and verdict. "
        "Exit code: 0 Successful, 3 Failed, 4 Inconclusive, 5 Error, 1 invalid input.",
    )
    parser.add_argument(
        "-f", "--file", required=True, help="ModelDeployment manifest (YAML/JSON), '-' = stdin"
    )
    parser.add_argument("--name", help="which ModelDeployment, when the file holds several")
    parser.add_argument(
        "--prometheus",
        help="Prometheus base URL (default: spec.analysis.prometheus.address, then $MLCANARY_PROMETHEUS_URL)",
    )
    parser.add_argument("--canary-version", help="version under test (default: spec.model.version)")
    parser.add_argument(
        "--stable-version",
        help="stable version to compare with (default: status.stableVersion in the file); needed "
        "when a metric compares with stable",
    )
    parser.add_argument("-n", "--namespace", help="namespace for {{namespace}} (default: metadata.namespace)")
    parser.add_argument("--interval", help="query window (default: spec.analysis.interval)")
    parser.add_argument(
        "--at", help="evaluation time, RFC 3339 or Unix seconds (default: Prometheus's current time)"
    )
    parser.add_argument("--timeout", type=float, help="query timeout in seconds (default: the spec's, or 10)")
    parser.add_argument("--bearer-token-file", help="file holding a bearer token for Prometheus")
    parser.add_argument("--username", help="basic-auth user name (password from --password-file)")
    parser.add_argument("--password-file", help="file holding the basic-auth password")
    parser.add_argument(
        "--insecure-skip-verify",
        action="store_true",
        default=None,
        help="do not verify Prometheus's TLS certificate",
    )
    parser.add_argument(
        "--namespace-label",
        help="scope every query to the namespace by this label, as the operator does "
        "(default: $MLCANARY_PROMETHEUS_NAMESPACE_LABEL); '' turns scoping off",
    )
    parser.add_argument(
        "--custom-queries",
        choices=CUSTOM_QUERY_MODES,
        help="the operator's policy for custom queries (default: $MLCANARY_CUSTOM_QUERIES, else scoped)",
    )
    parser.add_argument("--metric", action="append", help="only this metric (repeatable)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise InvalidInput(f"--at {text!r} is neither RFC 3339 nor Unix seconds") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _documents(path: str) -> list[Any]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise InvalidInput(f"cannot read {path}: {error}") from error


def _pick(documents: Sequence[Any], name: str | None) -> Mapping[str, Any]:
    candidates = [d for d in documents if isinstance(d, Mapping) and d.get("kind") == KIND]
    if name is not None:
        candidates = [d for d in candidates if (d.get("metadata") or {}).get("name") == name]
    if not candidates:
        raise InvalidInput(f"no {KIND}" + (f" named {name!r}" if name else "") + " in the file")
    if len(candidates) > 1:
        names = ", ".join(str((d.get("metadata") or {}).get("name")) for d in candidates)
        raise InvalidInput(f"the file holds several {KIND}s ({names}): choose one with --name")
    return candidates[0]


def _read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from error


def _setup(args: argparse.Namespace) -> tuple[PrometheusProvider, ModelDeploymentSpec, AnalysisContext]:
    try:
        settings = Settings.from_env()
    except ValueError as error:
        raise InvalidInput(f"operator settings in the environment: {error}") from error
    doc = _pick(_documents(args.file), args.name)
    try:
        spec = ModelDeploymentSpec.model_validate(doc.get("spec") or {})
    except ValidationError as error:
        raise InvalidInput(f"invalid spec:\n{error}") from error
    metadata = doc.get("metadata") or {}
    status = doc.get("status") or {}
    if args.metric:
        unknown = set(args.metric) - {m.name for m in spec.analysis.metrics}
        if unknown:
            raise InvalidInput(f"no metric named {', '.join(sorted(unknown))} in the manifest")
        spec.analysis.metrics = [m for m in spec.analysis.metrics if m.name in args.metric]
    if not spec.analysis.metrics:
        raise InvalidInput("the manifest has no analysis metrics")
    canary = args.canary_version or spec.model.version
    stable = args.stable_version or status.get("stableVersion")
    needs_stable = [m.name for m in spec.analysis.metrics if q.compares_with_stable(m)]
    if stable is None:
        if needs_stable:
            raise InvalidInput(f"{', '.join(needs_stable)} compare(s) with stable: give --stable-version")
        stable = canary
    interval = args.interval or spec.analysis.interval
    try:
        parse_duration(interval)
    except ValueError as error:
        raise InvalidInput(str(error)) from error
    source = spec.analysis.prometheus
    address = (
        args.prometheus or (source.address if source else None) or os.environ.get("MLCANARY_PROMETHEUS_URL")
    )
    if not address:
        raise InvalidInput("no Prometheus: give --prometheus URL")
    timeout = args.timeout
    if timeout is None:
        timeout = parse_duration(source.timeout).total_seconds() if source else 10.0
    auth = None
    if args.bearer_token_file or args.username:
        if args.username and not args.password_file:
            raise InvalidInput("--username needs --password-file")
        auth = PrometheusAuth(
            bearer_token=_read_secret_file(args.bearer_token_file) if args.bearer_token_file else None,
            username=args.username,
            password=_read_secret_file(args.password_file) if args.password_file else None,
        )
    insecure = args.insecure_skip_verify
    if insecure is None:
        insecure = bool(source and source.insecure_skip_verify)
    provider = PrometheusProvider(
        address,
        auth=auth,
        timeout_seconds=timeout,
        verify_tls=not insecure,
        namespace_label=settings.prometheus_namespace_label
        if args.namespace_label is None
        else (args.namespace_label or None),
        custom_queries=args.custom_queries or settings.custom_queries,
        limits=q.limits_of(settings),
        at=_parse_time(args.at) if args.at else None,
    )
    context = AnalysisContext(
        name=str(metadata.get("name", "")),
        namespace=str(args.namespace or metadata.get("namespace") or "default"),
        model_name=spec.model.name,
        version=canary,
        stable_version=stable,
        interval=interval,
        canary_weight=0,
    )
    return provider, spec, context


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _print_text(
    out: TextIO,
    provider: PrometheusProvider,
    spec: ModelDeploymentSpec,
    context: AnalysisContext,
    results: Sequence[MetricResult],
) -> None:
    at = provider.at.isoformat() if provider.at else "Prometheus's current time"
    scope = (
        f'every selector gets {provider.namespace_label}="{context.namespace}"'
        if provider.namespace_label
        else f"none: the queries read every namespace's series (custom queries: {provider.custom_queries})"
    )
    out.write(
        f"Prometheus {provider.address}, window {context.interval}, at {at}\n"
        f"model {context.model_name}: canary {context.version}, stable {context.stable_version}\n"
        f"scope: {scope}\n"
    )
    for metric, result in zip(spec.analysis.metrics, results, strict=True):
        m = result.measurement
        kind = f"builtin {metric.builtin.value}" if metric.builtin else "custom query"
        out.write(f"\n== {metric.name} ({kind}{', dry run' if metric.dry_run else ''})\n")
        for r in result.results:
            out.write(f"  {r.spec.role} {r.spec.key} ({r.seconds * 1000:.0f} ms):\n")
            out.write(f"    {r.spec.promql}\n")
            out.write(f"    -> {r.describe()}\n")
        out.write(
            f"  value {_num(m.value)}   stable {_num(m.stable_value)}   threshold {m.threshold or '-'}"
            f"   sample {m.sample_size if m.sample_size is not None else '-'}\n"
        )
        out.write(f"  verdict {m.verdict.value}: {m.message or ''}\n")
    verdict = round_verdict([r.measurement for r in results])
    out.write(f"\nRound verdict: {verdict.value} (dry-run metrics are shown but not counted)\n")


def _as_json(context: AnalysisContext, results: Sequence[MetricResult]) -> str:
    data = {
        "context": {
            "model": context.model_name,
            "namespace": context.namespace,
            "version": context.version,
            "stableVersion": context.stable_version,
            "interval": context.interval,
        },
        "verdict": round_verdict([r.measurement for r in results]).value,
        "metrics": [
            {
                "measurement": r.measurement.to_wire(),
                "queries": [
                    {
                        "role": x.spec.role,
                        "key": x.spec.key,
                        "promql": x.spec.promql,
                        "error": x.error,
                        "resultType": x.result_type,
                        "series": [{"labels": dict(s.labels), "value": repr(s.value)} for s in x.series],
                    }
                    for x in r.results
                ],
            }
            for r in results
        ],
    }
    return json.dumps(data, indent=2) + "\n"


async def run_analyze_async(argv: Sequence[str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(list(argv))
    try:
        provider, spec, context = _setup(args)
    except InvalidInput as error:
        print(f"mlcanary analyze: {error}", file=sys.stderr)
        return EXIT_INVALID
    now = provider.at or datetime.now(UTC)
    results = await measure_all(provider, spec.analysis.metrics, context, now)
    if args.output == "json":
        out.write(_as_json(context, results))
    else:
        _print_text(out, provider, spec, context, results)
    return EXIT_CODES[round_verdict([r.measurement for r in results])]


def run_analyze(argv: Sequence[str], out: TextIO | None = None) -> int:
    """``mlcanary analyze -f FILE --prometheus URL [...]``; returns the exit code."""
    return asyncio.run(run_analyze_async(argv, out))


def main(argv: Sequence[str] | None = None) -> int:
    return run_analyze(sys.argv[1:] if argv is None else argv)
