"""Serving benchmark: mlcanary's server vs the naive seed server vs an empty FastAPI endpoint.

Same model (HistGradientBoosting pipeline on breast_cancer), same machine, same run. Each server
gets one core (``taskset -c $SERVER_CPUS``), wrk runs on another (``$LOADGEN_CPUS``), closed loop
over keep-alive connections at concurrency 1, 8 and 32, rounds interleaved (order rotated), medians
reported. The naive and empty apps are the exact code of ../shared/bench/serving/candidates/
(embedded here, so this script runs without shared/); their uvicorn settings are the seed's
(defaults, access log on). mlcanary runs with every metric on (drift, histograms, feedback cache).

    python bench/serving_bench.py                       # ~9 min: 3 rounds x 10 s per level
    python bench/serving_bench.py --rounds 1 --duration 3 --warmup 1    # smoke, ~1.5 min
    # before/after a change, in one run: an older server as an extra candidate
    git archive <rev> serving-image | tar -x -C /tmp/before
    python bench/serving_bench.py --baseline /tmp/before/serving-image   # + mlcanary-hgb-baseline
    # the app alone, in process (no sockets, no wrk): server CPU per request, robust to a busy machine
    python bench/serving_bench.py --inproc [--baseline /tmp/before/serving-image]      # ~1 min

Needs wrk and taskset (``apt-get install -y wrk``). Results: a Markdown table on stdout and
``$OUT/results.json`` + ``$OUT/results.md`` (OUT defaults to /tmp/mlcanary-bench).
This is a measurement script, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

NAIVE_SKLEARN = """
import os
import joblib
from fastapi import FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ.get("MODEL_PATH", "artifacts/hgb.joblib"))
app = FastAPI()


class PredictRequest(BaseModel):
    features: list[float]


@app.post("/predict")
def predict(req: PredictRequest):
    return {"prediction": int(model.predict([req.features])[0])}
"""

NAIVE_ONNX = """
import os
import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

so = ort.SessionOptions()
if os.environ.get("ORT_INTRA_OP_THREADS"):
    so.intra_op_num_threads = int(os.environ["ORT_INTRA_OP_THREADS"])
sess = ort.InferenceSession(os.environ.get("MODEL_PATH", "artifacts/hgb.onnx"),
                            sess_options=so, providers=["CPUExecutionProvider"])
input_name = sess.get_inputs()[0].name
app = FastAPI()


class PredictRequest(BaseModel):
    features: list[float]


@app.post("/predict")
def predict(req: PredictRequest):
    label = sess.run(None, {input_name: np.asarray([req.features], dtype=np.float32)})[0][0]
    return {"prediction": int(label)}
"""

NOOP = """
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class PredictRequest(BaseModel):
    features: list[float]


@app.post("/predict")
def predict(req: PredictRequest):
    return {"prediction": 1}
"""

RAW_ASGI = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"prediction": 1}'})
"""

WRK_LUA = r"""
local path = os.getenv("BENCH_BODY")
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"err":%d,"status_err":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def prepare(out: Path) -> tuple[Path, int]:
    """Train the HGB pipeline once; write joblib, the naive float32 ONNX, our bundles, the body."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlcanary_serving.bundle import build_bundle
    from mlcanary_serving.bundle.onnx_export import export_onnx

    art = out / "artifacts"
    if art.exists():
        shutil.rmtree(art)
    art.mkdir(parents=True)
    data = load_breast_cancer()
    X, y = data.data, data.target
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    pipe = Pipeline(
        [("scaler", StandardScaler()), ("clf", HistGradientBoostingClassifier(max_iter=100, random_state=0))]
    )
    pipe.fit(X_tr, y_tr)
    joblib.dump(pipe, art / "hgb.joblib")
    (art / "hgb.onnx").write_bytes(export_onnx(pipe, X.shape[1], "float32"))  # what a naive port does
    names = [str(n) for n in data.feature_names]
    build_bundle(
        pipe, X_tr, y_tr, art / "bundle-onnx", name="hgb", version="1.0.0", feature_names=names, onnx=True
    )
    build_bundle(
        pipe, X_tr, y_tr, art / "bundle-joblib", name="hgb", version="1.0.0", feature_names=names, onnx=False
    )
    row = X_te[0].tolist()
    (art / "features.json").write_text(json.dumps({"features": row}))
    v2 = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    (art / "v2.json").write_text(json.dumps(v2))
    sources = (("naive_sklearn", NAIVE_SKLEARN), ("naive_onnx", NAIVE_ONNX), ("noop_fastapi", NOOP),
               ("raw_asgi", RAW_ASGI))  # fmt: skip
    for name, src in sources:
        (art / f"{name}.py").write_text(src)
    (art / "wrk_post.lua").write_text(WRK_LUA)
    expected = int(pipe.predict(np.asarray([row]))[0])
    return art, expected


def candidates(art: Path, baseline: Path | None = None) -> list[dict[str, Any]]:
    uv = [PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    serve = [PY, "-m", "mlcanary_serving", "--host", "127.0.0.1", "--port", "{port}", "--bundle"]
    extra = []
    if baseline is not None:  # the same server from another source tree (e.g. before a change)
        extra.append({"name": "mlcanary-hgb-baseline", "cmd": [*serve, str(art / "bundle-onnx")], "env": {},
                      "code": str(baseline), "note": f"mlcanary_serving from {baseline}, ONNX bundle"})  # fmt: skip
    return [*extra,
        {"name": "fastapi-noop", "cmd": [*uv, "noop_fastapi:app"], "env": {}, "note": "empty FastAPI endpoint (ceiling)"},
        {"name": "seed-naive-hgb", "cmd": [*uv, "naive_sklearn:app"], "env": {"MODEL_PATH": str(art / "hgb.joblib")},
         "note": "model.predict([req.features]) in FastAPI"},
        {"name": "naive-onnx-hgb", "cmd": [*uv, "naive_onnx:app"], "env": {"MODEL_PATH": str(art / "hgb.onnx")},
         "note": "naive app, ONNX Runtime, default session"},
        {"name": "bare-asgi", "cmd": [*uv, "--no-access-log", "raw_asgi:app"], "env": {},
         "note": "bare ASGI app under uvicorn, constant answer (the Python HTTP floor)"},
        {"name": "mlcanary-hgb", "cmd": [*serve, str(art / "bundle-onnx")], "env": {},
         "note": "mlcanary_serving, ONNX bundle (float64, exact), all metrics, POST /predict"},
        {"name": "mlcanary-v2-hgb", "cmd": [*serve, str(art / "bundle-onnx")], "env": {},
         "path": "/v2/models/hgb/infer", "body": "v2.json", "expect": r'"name":"label"[^}]*"data":\[{expected}\]',
         "note": "mlcanary_serving, ONNX bundle, all metrics, POST /v2/models/hgb/infer (OIP v2 JSON)"},
        {"name": "mlcanary-hgb-2w", "cmd": [*serve, str(art / "bundle-onnx")], "env": {"MLCANARY_WORKERS": "2"},
         "cpus": "all",
         "note": "mlcanary_serving, ONNX bundle, all metrics, POST /predict, 2 worker processes on both cores "
                 "(shared with wrk: this machine has 2)"},
        {"name": "mlcanary-joblib-hgb", "cmd": [*serve, str(art / "bundle-joblib")], "env": {},
         "note": "mlcanary_serving, joblib bundle (sklearn + micro-batching), all metrics"},
    ]  # fmt: skip


INPROC = r"""
import asyncio, json, sys, time
from mlcanary_serving.app import create_app
from mlcanary_serving.settings import Settings

bundle, path, body, n, rounds = sys.argv[1], sys.argv[2], sys.argv[3].encode(), int(sys.argv[4]), int(sys.argv[5])
app = create_app(Settings(bundle_uri=bundle), load_in_background=False)
SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
         "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "state": {},
         "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
         "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}


async def request():
    sent, first = [], True
    async def receive():
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
    async def send(message):
        sent.append(message)
    await app(dict(SCOPE), receive, send)
    return sent[0]["status"]


async def main():
    startup = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    done = asyncio.Queue()
    asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, done.put))
    assert (await done.get())["type"] == "lifespan.startup.complete"
    for _ in range(300):
        assert await request() == 200
    per = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            await request()
        per.append((time.process_time() - t0) / n * 1e6)
    print(json.dumps(sorted(per)[len(per) // 2]))


asyncio.run(main())
"""


# The same app in process, timed by the wall clock from a common start: run as 1 process on one core
# and as 2 processes on two cores (workers' multiprocess metrics on in both), it says whether the
# server's own work scales with cores when no load generator competes for them.
INPROC_RATE = INPROC.replace(
    """    per = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            await request()
        per.append((time.process_time() - t0) / n * 1e6)
    print(json.dumps(sorted(per)[len(per) // 2]))""",
    """    start_at, seconds = float(sys.argv[6]), float(sys.argv[7])
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0, count = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        await asyncio.gather(*(request() for _ in range(32)))  # 32 in flight, as wrk -c 32
        count += 32
    print(json.dumps(count / (time.monotonic() - t0)))""",
)


def inproc_scale(args: argparse.Namespace, art: Path) -> int:
    """Requests per second of the app in process: 1 worker on one core vs 2 workers on two cores."""
    import tempfile

    row = json.loads((art / "features.json").read_text())["features"]
    body = json.dumps({"features": row})
    seconds = args.duration
    results: dict[int, list[float]] = {1: [], 2: []}
    cpus = ["1", "0"]
    for r in range(args.rounds):
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as metrics_dir:
                start_at = time.time() + 8  # every process has loaded the bundle and warmed up by then
                procs = []
                for i in range(workers):
                    env = dict(
                        os.environ,
                        PYTHONPATH=os.pathsep.join(
                            [str(args.serving_code), os.environ.get("PYTHONPATH", "")]
                        ),
                        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
                        MLCANARY_WORKER_INDEX=str(i),
                        MLCANARY_WORKERS=str(workers),
                    )
                    procs.append(subprocess.Popen(
                        ["taskset", "-c", cpus[i], PY, "-c", INPROC_RATE, str(art / "bundle-onnx"), "/predict",
                         body, "0", "0", str(start_at), str(seconds)],
                        env=env, stdout=subprocess.PIPE, text=True,
                    ))  # fmt: skip
                rates = [float(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
                results[workers].append(sum(rates))
                print(
                    f"round {r + 1}/{args.rounds}: {workers} worker(s): {sum(rates):,.0f} req/s",
                    file=sys.stderr,
                )
    one, two = med(results[1]), med(results[2])
    md = (
        f"In-process `POST /predict`, ONNX HGB bundle, multiprocess metrics on, {seconds:g} s per run, median "
        f"of {args.rounds} rounds:\n\n| workers (cores) | req/s |\n|---|---|\n"
        f"| 1 (CPU 1) | {one:,.0f} |\n| 2 (CPUs 0, 1) | {two:,.0f} ({two / one:.2f}x) |\n"
    )
    (args.out / "inproc-scale.md").write_text(md)
    print(md)
    return 0


def inproc(args: argparse.Namespace, art: Path) -> int:
    """CPU per request of the app alone (ASGI calls in one process, pinned to the server CPU), for
    this tree and the baseline, interleaved: what the framework, validation, model and metrics cost
    without uvicorn, sockets or a load generator competing."""
    row = json.loads((art / "features.json").read_text())["features"]
    bodies = {
        "/predict": json.dumps({"features": row}),
        "/v2/models/hgb/infer": json.dumps(
            {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
        ),
    }
    trees = {"mlcanary": str(args.serving_code)}
    if args.baseline is not None:
        trees["baseline"] = str(args.baseline)
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, code in trees.items():
            for path, body in bodies.items():
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([code, os.environ.get("PYTHONPATH", "")]))
                out = subprocess.run(
                    ["taskset", "-c", args.server_cpus, PY, "-c", INPROC, str(art / "bundle-onnx"), path, body,
                     "2000", "3"],
                    env=env, capture_output=True, text=True, timeout=600, check=True,
                )  # fmt: skip
                results.setdefault((name, path), []).append(float(out.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1}/{args.rounds}: {name} {path}", file=sys.stderr, flush=True)
    lines = [
        f"In-process ASGI, ONNX HGB bundle, one row, CPU {args.server_cpus}: server CPU us per request "
        f"(median of {args.rounds} rounds x 3 x 2,000 requests)",
        "",
        "| code | " + " | ".join(f"`POST {p}`" for p in bodies) + " |",
        "|---|" + "---|" * len(bodies),
    ]
    for name, code in trees.items():
        cells = []
        for path in bodies:
            us = med(results[(name, path)])
            base = med(results[("baseline", path)]) if "baseline" in trees else None
            cells.append(
                f"{us:,.0f}" + (f" ({us / base:.2f}x baseline)" if base and name != "baseline" else "")
            )
        lines.append(f"| {name} ({code}) | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    (args.out / "inproc.md").write_text(md)
    print(md)
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time of the process tree under ``pid`` (worker processes included), plus what its
    reaped children used."""
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stats[int(d.name)] = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [q for q, f in stats.items() if int(f[1]) == p and q not in tree]
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats)
    if pid in stats:
        ticks += int(stats[pid][13]) + int(stats[pid][14])
    return ticks / os.sysconf("SC_CLK_TCK")


def post(url: str, body: bytes, timeout: float = 2.0) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except Exception as exc:
        return 0, str(exc)


def busy_seconds() -> float:
    """CPU time used by everything on the machine (all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wrk(url: str, body: Path, lua: Path, conc: int, duration: float, cpus: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_BODY=str(body))
    cmd = [
        "taskset",
        "-c",
        cpus,
        "wrk",
        "-t1",
        f"-c{conc}",
        f"-d{int(duration)}s",
        "--timeout=10s",
        "-s",
        str(lua),
        url,
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^BENCH_JSON (\{.*\})$", p.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk failed: {p.stdout[-300:]} {p.stderr[-300:]}")
    d = json.loads(m.group(1))
    secs = d["duration_us"] / 1e6
    return {
        "rps": d["requests"] / secs,
        "p50_ms": d["p50_us"] / 1000,
        "p99_ms": d["p99_us"] / 1000,
        "errors": d["err"] + d["status_err"],
        "requests": d["requests"],
    }


def session(c: dict[str, Any], art: Path, expected: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    cmd = [a.replace("{port}", str(port)) for a in c["cmd"]]
    env = dict(os.environ, **c["env"])
    code = c.get("code") or str(args.serving_code)
    env["PYTHONPATH"] = os.pathsep.join([str(art), code, env.get("PYTHONPATH", "")])
    log = (args.out / "logs" / f"{c['name']}-{port}.log").open("w")
    cpus = c.get("cpus", args.server_cpus)
    if cpus == "all":
        cpus = ",".join(sorted({args.server_cpus, args.loadgen_cpus}))
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, *cmd], cwd=art, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}{c.get('path', '/predict')}"
    body_file = art / c.get("body", "features.json")
    body = body_file.read_bytes()
    expect = c.get("expect", r'"prediction":\s*{expected}\b').replace("{expected}", str(expected))
    t0 = time.perf_counter()
    try:
        while True:
            status, text = post(url, body, 0.5)
            if status == 200:
                if c["name"] != "bare-asgi" and not re.search(expect, text):
                    raise RuntimeError(f"{c['name']}: wrong answer {text[:200]}")
                break
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError(f"{c['name']} did not start; see {log.name}")
            time.sleep(0.02)
        cold = time.perf_counter() - t0
        lua = art / "wrk_post.lua"
        wrk(url, body_file, lua, 8, args.warmup, args.loadgen_cpus)
        levels = {}
        for conc in args.concurrency:
            c0, b0, w0, t0 = cpu_seconds(proc.pid), busy_seconds(), children_cpu(), time.perf_counter()
            r = wrk(url, body_file, lua, conc, args.duration, args.loadgen_cpus)
            server = cpu_seconds(proc.pid) - c0
            wall = time.perf_counter() - t0
            r["cpu_us_per_req"] = server / max(r["requests"], 1) * 1e6
            # CPU used by other processes on this shared VM during the run, in % of one core
            r["foreign_cpu_pct"] = max(0.0, busy_seconds() - b0 - server - (children_cpu() - w0)) / wall * 100
            levels[str(conc)] = r
        counted = None
        if c["name"].startswith("mlcanary"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            m = re.search(r'mlcanary_requests_total\{[^}]*outcome="success"[^}]*\} (\S+)', text)
            counted = float(m.group(1)) if m else None
        return {"name": c["name"], "cold_start_s": cold, "levels": levels, "metrics_success_count": counted}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/mlcanary-bench")))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    p.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 10)))
    p.add_argument("--warmup", type=float, default=float(os.environ.get("WARMUP", 3)))
    p.add_argument("--concurrency", default=os.environ.get("CONCURRENCY", "1,8,32"))
    p.add_argument("--server-cpus", default=os.environ.get("SERVER_CPUS", "1"))
    p.add_argument("--loadgen-cpus", default=os.environ.get("LOADGEN_CPUS", "0"))
    p.add_argument("--only", default=os.environ.get("ONLY", ""), help="comma-separated candidate names")
    p.add_argument(
        "--baseline",
        type=Path,
        default=os.environ.get("BASELINE") or None,
        help="a directory holding another mlcanary_serving (e.g. git archive of an older commit)",
    )
    p.add_argument("--serving-code", type=Path, default=REPO / "serving-image",
                   help="the directory holding the mlcanary_serving measured as mlcanary-* [serving-image/]")  # fmt: skip
    p.add_argument("--inproc", action="store_true", help="measure the app in process (no wrk): see inproc()")
    p.add_argument("--inproc-scale", action="store_true",
                   help="in process, 1 worker on one core vs 2 on two: see inproc_scale()")  # fmt: skip
    args = p.parse_args()
    args.concurrency = [int(x) for x in str(args.concurrency).split(",")]
    if args.inproc or args.inproc_scale:
        args.out.mkdir(parents=True, exist_ok=True)
        art = prepare(args.out)[0]
        return inproc_scale(args, art) if args.inproc_scale else inproc(args, art)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y wrk util-linux", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    art, expected = prepare(args.out)
    cands = candidates(art, args.baseline)
    if args.only:
        keep = set(args.only.split(","))
        cands = [c for c in cands if c["name"] in keep]
    sessions: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    args.loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    for r in range(args.rounds):
        order = cands[r % len(cands) :] + cands[: r % len(cands)]
        for c in order:
            print(f"round {r + 1}/{args.rounds}: {c['name']}", file=sys.stderr, flush=True)
            sessions.append(session(c, art, expected, args))
            (args.out / "results.json").write_text(json.dumps(sessions, indent=1))
    md = report(cands, sessions, args, started)
    (args.out / "results.md").write_text(md)
    print(md)
    return 0


def med(vals: list[float]) -> float:
    return statistics.median(vals) if vals else float("nan")


def report(
    cands: list[dict[str, Any]], sessions: list[dict[str, Any]], args: argparse.Namespace, started: str
) -> str:
    names = [c["name"] for c in cands]
    agg: dict[str, dict[str, dict[str, float]]] = {}
    for n in names:
        runs = [s for s in sessions if s["name"] == n]
        agg[n] = {}
        for conc in args.concurrency:
            lv = [s["levels"][str(conc)] for s in runs]
            agg[n][str(conc)] = {
                k: med([x[k] for x in lv])
                for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "errors", "foreign_cpu_pct")
            }
            agg[n][str(conc)]["rps_min"] = min(x["rps"] for x in lv)
            agg[n][str(conc)]["rps_max"] = max(x["rps"] for x in lv)
    lines = [
        f"Run {started}: {args.rounds} rounds x {args.duration:g} s per level, warm-up {args.warmup:g} s, "
        f"server on CPU {args.server_cpus}, wrk on CPU {args.loadgen_cpus}; medians over rounds. "
        f"Load average at start: {args.loadavg}. 'foreign CPU %' = CPU used by other processes on this "
        "machine during the run (% of one core): high values mean the absolute numbers are depressed.",
        "",
    ]
    seed, noop = "seed-naive-hgb", "fastapi-noop"
    for conc in args.concurrency:
        k = str(conc)
        lines += [
            f"**concurrency {conc}**",
            "",
            "| server | req/s [min-max] | x seed req/s | x empty FastAPI req/s | p50 ms | p99 ms | x seed p99 | "
            "server CPU us/req | req/s per core (1e6/CPU us) | errors | foreign CPU % |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n in names:
            a = agg[n][k]
            s = agg.get(seed, {}).get(k)
            z = agg.get(noop, {}).get(k)
            cells = [
                f"`{n}`",
                f"{a['rps']:,.0f} [{a['rps_min']:,.0f}-{a['rps_max']:,.0f}]",
                f"{a['rps'] / s['rps']:.2f}x" if s else "-",
                f"{a['rps'] / z['rps']:.2f}x" if z else "-",
                f"{a['p50_ms']:.2f}",
                f"{a['p99_ms']:.2f}",
                f"{a['p99_ms'] / s['p99_ms']:.2f}x" if s else "-",
                f"{a['cpu_us_per_req']:,.0f}",
                f"{1e6 / a['cpu_us_per_req']:,.0f}" if a["cpu_us_per_req"] > 0 else "-",
                f"{a['errors']:.0f}",
                f"{a['foreign_cpu_pct']:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    bare = "bare-asgi"
    ours_all = [n for n in names if n.startswith("mlcanary") and "joblib" not in n and "baseline" not in n]
    if ours_all:
        lines += ["Targets (issue 15) for the ONNX bundle: <= 100 us of server CPU per request, >= 10,000 req/s "
                  "on one core at c=8 and c=32, p99 <= 5 ms at c=32:", ""]  # fmt: skip
        for n in ours_all:
            for conc in args.concurrency:
                a = agg[n][str(conc)]
                checks = [
                    f"{a['cpu_us_per_req']:,.0f} us/req ({'MET' if a['cpu_us_per_req'] <= 100 else 'MISSED'})"
                ]
                if conc in (8, 32):
                    checks.append(f"{a['rps']:,.0f} req/s ({'MET' if a['rps'] >= 10_000 else 'MISSED'})")
                if conc == 32:
                    checks.append(f"p99 {a['p99_ms']:.2f} ms ({'MET' if a['p99_ms'] <= 5 else 'MISSED'})")
                lines.append(f"- `{n}` c={conc}: " + ", ".join(checks))
        lines += [
            "",
            "Ratios, same run (server CPU per request is the noise-robust one; req/s in brackets):",
            "",
        ]
        for n in ours_all:
            for conc in args.concurrency:
                k = str(conc)
                o = agg[n][k]
                parts = []
                for ref, label in ((bare, "bare ASGI"), (noop, "empty FastAPI"), (seed, "naive seed")):
                    if ref in agg:
                        r = agg[ref][k]
                        parts.append(
                            f"{o['cpu_us_per_req'] / r['cpu_us_per_req']:.2f}x the CPU/request of {label} "
                            f"({o['rps'] / r['rps']:.2f}x its req/s)"
                        )
                lines.append(f"- `{n}` c={conc}: " + "; ".join(parts))
    base = "mlcanary-hgb-baseline"
    ours = "mlcanary-hgb"
    two = "mlcanary-hgb-2w"
    if ours in agg and two in agg:
        lines += [
            "",
            f"`{two}` (2 workers, both cores, wrk sharing one of them) against `{ours}` (1 core):",
            "",
        ]
        for conc in args.concurrency:
            k = str(conc)
            o, t = agg[ours][k], agg[two][k]
            lines.append(
                f"- c={conc}: req/s {t['rps']:,.0f} vs {o['rps']:,.0f} ({t['rps'] / o['rps']:.2f}x), server CPU per "
                f"request {t['cpu_us_per_req']:,.0f} vs {o['cpu_us_per_req']:,.0f} us, p99 {t['p99_ms']:.2f} vs "
                f"{o['p99_ms']:.2f} ms"
            )
    if ours in agg and base in agg:
        lines += ["", f"`{ours}` against `{base}` ({args.baseline}), same run:", ""]
        for conc in args.concurrency:
            k = str(conc)
            o, b = agg[ours][k], agg[base][k]
            lines.append(
                f"- c={conc}: req/s {o['rps'] / b['rps']:.2f}x, server CPU per request "
                f"{o['cpu_us_per_req']:,.0f} vs {b['cpu_us_per_req']:,.0f} us ({o['cpu_us_per_req'] / b['cpu_us_per_req']:.2f}x), "
                f"p99 {o['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms"
            )
    counted = [s["metrics_success_count"] for s in sessions if s.get("metrics_success_count") is not None]
    if counted:
        lines += [
            "",
            f"mlcanary servers counted {min(counted):,.0f}+ successful requests each in /metrics (metrics on).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
