"""``python -m mlcanary_serving --bundle DIR|URI --host H --port P`` (the image's entrypoint).

Thread pools are sized before numpy/ONNX Runtime/scikit-learn are imported: from the CPUs this
process may use (affinity and cgroup quota), not the machine's core count.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mlcanary_serving",
        description="Serve one mlcanary model bundle over HTTP. Every flag has an environment fallback.",
    )
    p.add_argument(
        "--bundle", help="directory, archive, file://, http(s):// or s3:// URI [MLCANARY_BUNDLE_URI]"
    )
    p.add_argument("--expected-sha256", help="sha256 of the bundle's manifest.json [MLCANARY_BUNDLE_SHA256]")
    p.add_argument("--model-name", help="served model name [MLCANARY_MODEL_NAME]")
    p.add_argument("--model-version", help="required bundle version [MLCANARY_MODEL_VERSION]")
    p.add_argument("--host", help="listen address [MLCANARY_HOST, default 127.0.0.1]")
    p.add_argument("--port", type=int, help="listen port [PORT, default 8080]")
    p.add_argument("--threads", type=int, help="model threads [MLCANARY_THREADS, default: available CPUs]")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .cpus import available_cpus  # stdlib only: numpy/OpenBLAS read the *_NUM_THREADS at import

    try:  # validated by Settings below; here only to share the CPUs among the workers
        workers = max(1, int(os.environ.get("MLCANARY_WORKERS") or 1))
    except ValueError:
        workers = 1
    threads = args.threads or int(os.environ.get("MLCANARY_THREADS") or max(1, available_cpus() // workers))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))

    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env(
            bundle_uri=args.bundle,
            expected_sha256=args.expected_sha256,
            model_name=args.model_name,
            model_version=args.model_version,
            host=args.host,
            port=args.port,
            threads=threads,
        )
    except (SettingsError, ValueError) as exc:
        print(f"mlcanary_serving: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.faults.active:
        logging.getLogger("mlcanary_serving").warning("FAULT INJECTION ACTIVE: %s", settings.faults)

    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": settings.access_log,
        "log_level": settings.log_level,
        "server_header": False,
        "proxy_headers": False,  # nothing here reads the client address; spares a middleware per request
        "timeout_graceful_shutdown": 10,
    }
    from .workers import is_worker, peer_socket, reuse_port_socket, supervise

    if settings.workers > 1 and not is_worker():
        own_dir = _prepare_workers(args, threads)
        try:
            return supervise(settings.workers, [sys.executable, "-m", "mlcanary_serving"])
        finally:
            if own_dir is not None:  # the default directory is this server's alone: leave no trace
                shutil.rmtree(own_dir, ignore_errors=True)

    from .app import create_app

    app = create_app(settings)
    if is_worker():  # one of several: its own SO_REUSEPORT socket on the shared port
        sockets = [reuse_port_socket(settings.host, settings.port)]
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            sockets.append(peer_socket(directory))
        uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=sockets)
    else:
        uvicorn.run(app, **options)
    return 0


def _prepare_workers(args: argparse.Namespace, threads: int) -> str | None:
    """Several worker processes share the listening socket; each builds its app from the
    environment, so the flags go there. Their metric values live in PROMETHEUS_MULTIPROC_DIR
    (default $TMPDIR/mlcanary-metrics-<pid>, the image's writable /tmp volume), emptied first: a restarted
    container must not add its predecessor's counts to its own."""
    flags = {
        "MLCANARY_BUNDLE_URI": args.bundle,
        "MLCANARY_BUNDLE_SHA256": args.expected_sha256,
        "MLCANARY_MODEL_NAME": args.model_name,
        "MLCANARY_MODEL_VERSION": args.model_version,
        "MLCANARY_HOST": args.host,
        "PORT": None if args.port is None else str(args.port),
        "MLCANARY_THREADS": str(threads),
    }
    os.environ.update({k: v for k, v in flags.items() if v is not None})
    # per server (its pid: 1 in a container, so a restart reuses and empties it): servers sharing a
    # /tmp (the local stack runs pods as processes) must not share or wipe each other's values
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = given or os.path.join(tempfile.gettempdir(), f"mlcanary-metrics-{os.getpid()}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith((".db", ".bin", ".sock")):
            os.remove(os.path.join(directory, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    logging.getLogger("mlcanary_serving").info(
        "%s worker processes, %d model thread(s) each, metrics in %s",
        os.environ["MLCANARY_WORKERS"],
        threads,
        directory,
    )
    return None if given else directory


if __name__ == "__main__":
    sys.exit(main())
