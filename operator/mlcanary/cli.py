"""The ``mlcanary`` command line. Each subcommand is a thin wrapper over a Python API."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from mlcanary.settings import Settings


def _cmd_run(args: argparse.Namespace) -> int:
    """Start the operator: `kopf run` of our handlers with our settings."""
    if args.tick_seconds is not None:
        os.environ["MLCANARY_TICK_SECONDS"] = str(args.tick_seconds)
    if args.metrics_port is not None:
        os.environ["MLCANARY_METRICS_PORT"] = str(args.metrics_port)
    if args.metrics_source is not None:
        os.environ["MLCANARY_METRICS_SOURCE"] = args.metrics_source
    if args.prometheus_url is not None:
        os.environ["MLCANARY_PROMETHEUS_URL"] = args.prometheus_url
    namespaces = args.namespace or [
        n.strip() for n in os.environ.get("MLCANARY_NAMESPACES", "").split(",") if n.strip()
    ]
    # The operator's own settings must agree with Kopf's scope (informers, Kopf's scanning).
    os.environ["MLCANARY_NAMESPACES"] = ",".join(namespaces)
    log_format = os.environ.get("MLCANARY_LOG_FORMAT", "plain")
    if args.leader_election:
        os.environ["MLCANARY_LEADER_ELECTION"] = "true"
    from mlcanary.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as error:
        print(f"mlcanary run: {error}", file=sys.stderr)
        return 2
    if settings.leader_election.enabled:
        import asyncio

        return asyncio.run(_run_elected(settings, namespaces, args.liveness, args.verbose, log_format))
    argv = [
        sys.executable,
        "-m",
        "kopf",
        "run",
        "--standalone",
        "-m",
        "mlcanary.handlers",
        f"--log-format={'json' if log_format == 'json' else 'plain'}",
    ]
    argv += [f"--namespace={n}" for n in namespaces] if namespaces else ["--all-namespaces"]
    if args.liveness:
        argv.append(f"--liveness={args.liveness}")
    if args.verbose:
        argv.append("--verbose")
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with the operator
    return 0  # pragma: no cover


async def _run_elected(
    settings: Settings, namespaces: list[str], liveness: str | None, verbose: bool, log_format: str
) -> int:
    """Kopf runs only while this process holds the Lease; losing it ends the process (exit 1) at once,
    without Kopf's graceful shutdown, which could still write. The kubelet restarts the container,
    which then waits as a follower."""
    import asyncio
    import logging

    from mlcanary import handlers
    from mlcanary.kubeapi import ApiClient, load_connection
    from mlcanary.leader import LeaderElector, start_standby_health

    handlers.configure_logging(verbose=verbose, log_format=log_format)
    logger = logging.getLogger("mlcanary.leader")
    async with ApiClient(load_connection(), user_agent=settings.user_agent, timeout=10) as api:
        elector = LeaderElector(api, settings.leader_election)
        stop_standby = await start_standby_health(liveness) if liveness else None
        await elector.acquire()
        if stop_standby is not None:
            await stop_standby()
        operator = asyncio.create_task(
            handlers.run_operator(namespaces=namespaces, liveness_endpoint=liveness)
        )
        holding = asyncio.create_task(elector.hold())
        await asyncio.wait({operator, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done():
            logger.critical("lost the lease: exiting so that only the new leader acts")
            logging.shutdown()
            os._exit(1)
        holding.cancel()
        await elector.release()  # Kopf stopped (SIGTERM): hand over without waiting for expiry
        operator.result()  # re-raise a crash of Kopf itself
    return 0


def _cmd_crd(args: argparse.Namespace) -> int:
    from mlcanary import crd

    return crd.main(["--check"] if args.check else (["--write"] if args.write else []))


def _cmd_render(args: argparse.Namespace) -> int:
    from mlcanary.render import render_objects

    manifest = yaml.safe_load(Path(args.file).read_text() if args.file != "-" else sys.stdin.read())
    try:
        objects = render_objects(
            manifest, stable_version=args.stable_version, step=args.step, canary_weight=args.canary_weight
        )
    except ValueError as error:  # an invalid manifest (pydantic names the field) or an unservable weight
        print(f"mlcanary render: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mlcanary.analysis import report

    return report.main(args.rest)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from mlcanary.analysis import dryrun

    return dryrun.main(args.rest)


# Commands whose code lives outside the operator package, in another package of the distribution
# installed with an extra. They are found through entry points (group ``mlcanary.commands``, declared in
# pyproject.toml), so the operator never imports them and its image need not contain them.
ENTRY_POINT_GROUP = "mlcanary.commands"


@dataclass(frozen=True)
class ExtraCommand:
    extras: tuple[str, ...]  # the extras that install what the command needs
    argv_prefix: tuple[str, ...] = ()  # prepended to the arguments (the target may serve several verbs)

    @property
    def install_hint(self) -> str:
        return f"pip install 'mlcanary[{','.join(self.extras)}]'"


EXTRA_COMMANDS = {
    "local": ExtraCommand(("local",)),
    "demo": ExtraCommand(("local",)),
    "bundle": ExtraCommand(("serving", "bundle"), argv_prefix=("bundle",)),
}

_REQUIREMENT = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?[^;]*;\s*extra\s*==\s*[\"']([^\"']+)[\"']"
)


def _extra_requirements(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Distribution names an extra of ``mlcanary`` pulls in (following ``mlcanary[other]`` references)."""
    try:
        requires = metadata.requires("mlcanary") or []
    except metadata.PackageNotFoundError:
        return set()
    names: set[str] = set()
    for line in requires:
        match = _REQUIREMENT.match(line)
        if match is None or match[3] != extra:
            continue
        name, nested = match[1], match[2]
        if name.lower() == "mlcanary":
            for other in (nested or "").split(","):
                if other.strip() and other.strip() not in seen:
                    names |= _extra_requirements(other.strip(), seen | {extra})
        else:
            names.add(name)
    return names


def missing_distributions(extras: tuple[str, ...]) -> list[str]:
    """The distributions the extras need that are not installed (empty when all are)."""
    missing = set()
    for name in set().union(*(_extra_requirements(extra) for extra in extras)):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
    return sorted(missing)


def _run_extra_command(name: str, rest: list[str]) -> int:
    command = EXTRA_COMMANDS[name]
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    missing = missing_distributions(command.extras)
    target = None
    if found and not missing:
        try:
            target = found[0].load()
        except ImportError as exc:  # the package itself is absent (e.g. the operator image)
            missing = [exc.name or str(exc)]
    if target is None:
        why = f"missing: {', '.join(missing)}" if missing else f"no {ENTRY_POINT_GROUP} entry point"
        print(
            f"mlcanary {name} needs the {'+'.join(command.extras)} extra ({why}): {command.install_hint}",
            file=sys.stderr,
        )
        return 2
    result: int = target([*command.argv_prefix, *rest])
    return result


def _cmd_bundle(args: argparse.Namespace) -> int:
    return _run_extra_command("bundle", args.rest)


def _cmd_local(args: argparse.Namespace) -> int:
    return _run_extra_command("local", args.rest)


def _cmd_demo(args: argparse.Namespace) -> int:
    return _run_extra_command("demo", args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlcanary", description="Canary rollouts for ML models on Kubernetes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf run with mlcanary's handlers)")
    run.add_argument("-n", "--namespace", action="append", help="watch only these namespaces (repeatable)")
    run.add_argument("--tick-seconds", type=float, help="reconcile interval (MLCANARY_TICK_SECONDS)")
    run.add_argument("--metrics-port", type=int, help="operator /metrics port, 0 disables")
    run.add_argument("--metrics-source", help="prometheus (default) or file:/path.json")
    run.add_argument("--prometheus-url", help="default Prometheus for analysis")
    run.add_argument("--liveness", help="Kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument(
        "--leader-election",
        action="store_true",
        help="run Kopf only while holding a Lease, for several replicas (MLCANARY_LEADER_ELECTION)",
    )
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_cmd_run)

    crd = sub.add_parser("crd", help="print the CRD generated from the models; --check / --write")
    group = crd.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="fail when crds/ differs from the models")
    group.add_argument("--write", action="store_true", help="rewrite crds/")
    crd.set_defaults(func=_cmd_crd)

    render = sub.add_parser("render", help="print the objects the operator would create")
    render.add_argument("-f", "--file", required=True, help="ModelDeployment manifest ('-' for stdin)")
    render.add_argument("--stable-version", help="render a rollout from this stable version")
    where = render.add_mutually_exclusive_group()
    where.add_argument("--step", type=int, help="rollout step (1-based)")
    where.add_argument("--canary-weight", type=int, help="canary weight in percent")
    render.set_defaults(func=_cmd_render)

    for name, func, text in (
        ("report", _cmd_report, "print the canary report of a ModelDeployment"),
        ("analyze", _cmd_analyze, "run one analysis round of a manifest against a Prometheus"),
        ("bundle", _cmd_bundle, "build or verify a model bundle"),
        ("local", _cmd_local, "the local stack, no cluster: local up|down|status"),
        ("demo", _cmd_demo, "a complete canary story on this machine (--quick, --out DIR, --router)"),
    ):
        command = sub.add_parser(name, help=text, add_help=False)
        command.add_argument("rest", nargs=argparse.REMAINDER)
        command.set_defaults(func=func)
    return parser


# Subcommands that take their whole argument list as is (argparse's REMAINDER drops a leading --option).
PASSTHROUGH = {
    "report": _cmd_report,
    "analyze": _cmd_analyze,
    "bundle": _cmd_bundle,
    "local": _cmd_local,
    "demo": _cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list and args_list[0] in PASSTHROUGH:
        return PASSTHROUGH[args_list[0]](argparse.Namespace(rest=args_list[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
