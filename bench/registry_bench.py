"""Registry polling cost: MLflow requests per poll interval with N ModelDeployments on one alias.

Runs the operator's own shared poller (:class:`mlcanary.registry.poller.RegistryPoller`) against a
real MLflow tracking server (started here from .venv/tools/mlflow, or ``--mlflow URL``): for each N,
N subscribers follow the same registered model and alias (as N ModelDeployments would), the alias
resolves for ``--intervals`` poll intervals, and the requests the server received from the poller
are counted. A poller per object would cost N requests per interval; the shared one costs one.

Then the alias is moved and the time until every subscriber has been woken with the new version is
measured (the operator's tick follows the wake-up at once): it is bounded by the poll interval.

    .venv/bin/python bench/registry_bench.py                       # N = 1, 10, 100, 1000; 1 s interval
    .venv/bin/python bench/registry_bench.py --mlflow http://127.0.0.1:5000 --intervals 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from mlcanary.registry.client import Credentials
from mlcanary.registry.poller import RegistryPoller
from mlcanary_local.mlflow_proc import MlflowProcess
from mlcanary_serving.mlflow_registry import MlflowServer, register_bundle
from mlcanary_serving.testing import make_demo_bundle


async def measure(url: str, model: str, followers: int, interval: float, intervals: int) -> tuple[int, float]:
    poller = RegistryPoller()
    key = (url, model, "champion", Credentials().fingerprint())
    woken: dict[str, float] = {}
    all_woken = asyncio.Event()
    moved_at = 0.0

    def wake(uid: str) -> None:
        if moved_at:
            woken.setdefault(uid, time.monotonic() - moved_at)
            if len(woken) == followers:
                all_woken.set()

    try:
        for n in range(followers):
            uid = f"mdep-{n}"
            poller.subscribe(
                uid,
                key,
                Credentials(),
                interval=interval,
                timeout=10,
                wake=lambda u=uid: wake(u),
                config="bench",
            )
        await asyncio.sleep(interval * intervals + interval / 2)  # polls at 0, 1, ..., intervals
        requests = poller.requests()
        server = MlflowServer(url)
        current = server.call("GET", "registered-models/alias", params={"name": model, "alias": "champion"})
        other = "1" if current["model_version"]["version"] == "2" else "2"
        await asyncio.to_thread(
            server.call,
            "POST",
            "registered-models/alias",
            {"name": model, "alias": "champion", "version": other},
        )
        moved_at = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_woken.wait(), timeout=interval * 3)
        slowest = max(woken.values()) if len(woken) == followers else float("inf")
        return requests, slowest
    finally:
        await poller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlflow", help="URL of a running MLflow server (default: start one)")
    parser.add_argument("--followers", default="1,10,100,1000", help="values of N")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    parser.add_argument("--intervals", type=int, default=5, help="poll intervals measured per N")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    process = None
    url = args.mlflow
    if url is None:
        process = MlflowProcess(work / "mlflow")
        started = time.monotonic()
        process.start()
        url = process.url
        print(f"MLflow tracking server ready in {time.monotonic() - started:.1f} s at {url}")
    try:
        server = MlflowServer(url)
        model = f"bench-{int(time.time())}"
        for version in ("1.0.0", "1.1.0"):
            bundle = make_demo_bundle(work / version, version=version, onnx=False)
            register_bundle(server, bundle.path, model, alias="champion")
        print(
            f"\n{'N':>6} {'requests':>9} {'per interval':>13} {'per-object poller':>18} {'alias moved -> all woken':>25}"
        )
        for followers in (int(n) for n in args.followers.split(",")):
            requests, slowest = asyncio.run(measure(url, model, followers, args.interval, args.intervals))
            polls = args.intervals + 1
            print(
                f"{followers:>6} {requests:>9} {requests / polls:>13.2f} {followers:>18} {slowest:>23.2f} s"
                f"   (ratio per-object/shared {followers * polls / max(requests, 1):.0f}x)"
            )
        print(
            f"\npoll interval {args.interval} s; the wake-up delay is bounded by it (the tick follows at once)"
        )
    finally:
        if process is not None:
            process.stop()


if __name__ == "__main__":
    main()
