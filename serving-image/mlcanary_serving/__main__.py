"""``python -m mlcanary_serving --bundle DIR|URI --host H --port P`` (the image's entrypoint).

Thread pools are sized before numpy/ONNX Runtime/scikit-learn are imported: from the CPUs this
process may use (affinity and cgroup quota), not the machine's core count.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


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

    threads = args.threads or int(os.environ.get("MLCANARY_THREADS") or available_cpus())
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

    from .app import create_app

    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_level=settings.log_level,
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address; spares a middleware per request
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
