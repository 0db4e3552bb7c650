"""``mlcanary demo``: a complete canary story on one machine, with real models, real processes and a
real Prometheus, printed live.

1. trains small scikit-learn pipelines on the breast_cancer data that ships with scikit-learn and
   bundles them: 1.0.0 (a strongly regularised logistic regression), 2.0.0 (the tuned one: better
   held-out accuracy), 3.0.0 (degenerate: always the same answer, with HTTP 200 — only ML-aware
   analysis sees it), 4.0.0 (a sound model whose server fails a share of requests), 5.0.0 (a sound
   model answering 300 ms late: its load test fails it before any user request reaches it) and 6.0.0
   (degenerate again: caught in the shadow phase);
2. starts the local stack (:mod:`mlcanary_local.stack`) and a load generator sending real rows
   through the gateway;
3. applies 1.0.0 and waits until it serves; applies 2.0.0 and follows it through 5 → 20 → 50 → 100
   to promotion; applies 3.0.0 and follows it to its automatic rollback by predictionDrift; applies
   4.0.0 and follows it to its rollback by errorRate; with the gatewayAPI router (the default), applies
   5.0.0 with ``spec.loadTest`` and follows it to its rollback by the load test, then 6.0.0 (degenerate
   again) with ``spec.shadow`` to its rollback from the shadow phase, each having answered zero user
   requests (counted in ``requests.csv``) — printing each phase, step, weight, the traffic actually
   served per version and every analysis round;
4. prints a summary table and writes ``timeline.png`` (traffic per version, error rate, latency and
   drift per version, promotions and rollbacks), ``summary.txt``, ``summary.json``, the request log
   ``requests.csv`` and the stack's logs into ``--out``.

``--quick`` compresses the story to about two minutes (for CI) by configuration only: shorter
``stepDuration`` and ``interval`` in the ModelDeployment, a faster operator tick. The exit status is
non-zero when any step of the story did not happen as told.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlcanary.kubeapi import MODEL_DEPLOYMENTS, ApiClient, Obj, load_connection
from mlcanary_local.demo.timeline import (
    Snapshot,
    Story,
    format_table,
    prometheus_panels,
    render_png,
    summarize,
)
from mlcanary_local.loadgen import FIELDS, Record, read_records
from mlcanary_local.process import spawn, stop_popen
from mlcanary_local.stack import LocalStack, StackConfig

NAMESPACE = "demo"
NAME = "breast-cancer"
MODEL = "breast-cancer"


@dataclass(frozen=True)
class Timing:
    """Everything that makes the story fast or slow: configuration, not code paths."""

    replicas: int
    rate: float  # requests per second offered by the load generator
    step_duration: str
    interval: str
    progress_deadline: str
    scale_down_delay: str
    tick_seconds: float
    act_timeout: float  # seconds an act may take before the story counts as deviated
    baseline_seconds: float  # load on 1.0.0 alone before the first canary
    load_test_duration: str = "6s"  # measured time of the load-tested act's spec.loadTest
    retrain_for: str = "10s"  # how long the stable's input drift must hold before training is requested


QUICK = Timing(
    replicas=4,
    rate=120,
    step_duration="8s",
    interval="8s",
    progress_deadline="60s",
    scale_down_delay="2s",
    tick_seconds=0.5,
    act_timeout=90,
    baseline_seconds=4,
    load_test_duration="6s",
)
FULL = Timing(
    replicas=4,
    rate=100,
    step_duration="30s",
    interval="15s",
    progress_deadline="2m",
    scale_down_delay="10s",
    tick_seconds=1.0,
    act_timeout=420,
    baseline_seconds=10,
    load_test_duration="20s",
    retrain_for="20s",
)


def timing_for(quick: bool, router: str) -> Timing:
    """With the replicas router a step's weight is a share of ready pods: with 4 stable pods it serves
    20% (1 canary pod) and 50% (4), never more than a step says. A mesh router splits exactly and
    runs ``replicas`` pods per revision: one each, so the canary's 5% is not spread over pods that
    each need MLCANARY_DRIFT_MIN_ROWS rows, and more load."""
    timing = QUICK if quick else FULL
    if router == "gatewayAPI":
        return replace(timing, replicas=1, rate=150 if quick else 120)
    return timing


# Thresholds, the same in both modes. predictionDrift is the PSI between the canary's and stable's
# score histograms (and class shares) over one window. Between two finite samples PSI is biased
# upwards (an empty bucket counts as a share of 1e-4): two sound versions measured on ~100 canary
# predictions give 0.3-1.5 (the same model against itself gives ~0.5), while a model that always
# answers the same gives ~3. So a short window needs a bound near 2; with thousands of predictions
# per window a bound of 0.2-0.5 works.
METRICS: list[dict[str, Any]] = [
    {"name": "error-rate", "builtin": "errorRate", "max": 0.02, "minRequests": 40},
    {"name": "latency-p99", "builtin": "latencyP99", "max": 0.25, "minRequests": 40},
    {"name": "input-drift", "builtin": "inputDrift", "max": 0.3},
    {"name": "prediction-drift", "builtin": "predictionDrift", "max": 2.0, "minRequests": 40},
]
# The servers publish input PSI once their window holds this many rows (PSI of fewer rows is noise).
SERVING_ENV = [{"name": "MLCANARY_DRIFT_MIN_ROWS", "value": "150"}]


# ------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class Bundle:
    version: str
    path: Path
    sha256: str
    description: str
    holdout_accuracy: float | None = None

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()


def build_bundles(out: Path) -> dict[str, Bundle]:
    """Train and bundle the story's models (a few seconds)."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlcanary_serving.bundle import build_bundle

    data = load_breast_cancer()
    X, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target)
    names = [str(n) for n in data.feature_names]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=2)

    def logreg(c: float) -> Any:
        return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=c, max_iter=5000))])

    plans: list[tuple[str, Any, str]] = [
        ("1.0.0", logreg(0.1), "logistic regression, C=0.1 (strongly regularised)"),
        ("2.0.0", logreg(1.0), "logistic regression, C=1.0 (tuned): the better model"),
        (
            "3.0.0",
            Pipeline([("scale", StandardScaler()), ("clf", DummyClassifier(strategy="most_frequent"))]),
            "degenerate: always answers 'benign' with HTTP 200 (no errors, fast)",
        ),
        ("4.0.0", logreg(1.0), "a sound model, but its server fails 20% of requests (HTTP 500)"),
        ("5.0.0", logreg(1.0), "a sound model, but its server answers 300 ms late (load test)"),
        (
            "6.0.0",
            Pipeline([("scale", StandardScaler()), ("clf", DummyClassifier(strategy="most_frequent"))]),
            "degenerate again: caught in the shadow phase (gatewayAPI router)",
        ),
    ]
    bundles: dict[str, Bundle] = {}
    out.mkdir(parents=True, exist_ok=True)
    for version, pipeline, description in plans:
        pipeline.fit(X_train, y_train)
        target = out / f"breast-cancer-{version}"
        if target.exists():
            shutil.rmtree(target)
        result = build_bundle(
            pipeline,
            X_train,
            y_train,
            target,
            name=MODEL,
            version=version,
            feature_names=names,
            onnx="auto",
            eval_data=(X_test, y_test),
            intended_use="mlcanary demo model (breast-cancer diagnosis). Not for clinical use.",
            sample_rows=64,  # real rows for spec.loadTest's request bodies
        )
        accuracy = float(pipeline.score(X_test, y_test))
        bundles[version] = Bundle(version, result.path, result.manifest_sha256, description, accuracy)
    return bundles


# --------------------------------------------------------------------------------------- manifests


def default_steps(router: str) -> list[int]:
    """5 -> 20 -> 50 where weights are exact; the replicas router serves whole pods only, and with
    4 stable pods its smallest share is 20% (the operator refuses steps it cannot serve)."""
    return [20, 50, 100] if router == "replicas" else [5, 20, 50, 100]


def manifest(
    bundle: Bundle,
    timing: Timing,
    router: str = "replicas",
    env: list[dict[str, str]] | None = None,
    name: str = NAME,
    namespace: str = NAMESPACE,
    model_name: str = MODEL,
    metrics: list[dict[str, Any]] | None = None,
    steps: list[int] | None = None,
    on_inconclusive: str = "Hold",
    load_test: Obj | None = None,
    shadow: Obj | None = None,
) -> Obj:
    """The ModelDeployment for one version of the story (the README's example, with demo timings);
    ``shadow``: a spec.shadow (a mirroring router only)."""
    traffic: Obj = (
        {"gatewayAPI": {"parentRefs": [{"name": "mlcanary-local", "kind": "Gateway"}]}}
        if router == "gatewayAPI"
        else {"replicas": {}}
    )
    extra: Obj = {"shadow": shadow} if shadow is not None else {}
    return {
        "apiVersion": "mlcanary.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            **extra,
            "model": {
                "name": model_name,
                "version": bundle.version,
                "uri": bundle.uri,
                "sha256": bundle.sha256,
            },
            "serving": {"replicas": timing.replicas, "env": [*SERVING_ENV, *(env or [])]},
            "rollout": {
                "steps": steps or default_steps(router),
                "stepDuration": timing.step_duration,
                "progressDeadline": timing.progress_deadline,
                "scaleDownDelay": timing.scale_down_delay,
            },
            "analysis": {
                "interval": timing.interval,
                "failureLimit": 1,
                "inconclusiveLimit": 3,
                "consecutiveErrorLimit": 3,
                "onInconclusive": on_inconclusive,
                "metrics": metrics if metrics is not None else METRICS,
            },
            "traffic": traffic,
            **({"loadTest": load_test} if load_test is not None else {}),
        },
    }


def load_test_for(timing: Timing) -> Obj:
    """spec.loadTest of the load-tested act: a short run, a p95 bound the 300 ms model breaks."""
    return {
        "rps": 20,
        "concurrency": 8,
        "warmup": "2s",
        "duration": timing.load_test_duration,
        "slo": {"maxLatencyP95": "150ms", "maxErrorRate": 0.01},
    }


# ------------------------------------------------------------------------------------- following


class RecordTail:
    """New lines of the load generator's CSV since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""

    def poll(self) -> list[Record]:
        if not self.path.exists():
            return []
        with self.path.open() as handle:
            handle.seek(self.offset)
            chunk = handle.read()
            self.offset = handle.tell()
        text = self.partial + chunk
        lines = text.split("\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            cells = line.split(",")
            if len(cells) != len(FIELDS) or cells[0] == "t":
                continue
            try:
                out.append(Record(float(cells[0]), float(cells[1]), int(cells[2]), cells[3], cells[4]))
            except ValueError:
                continue
        return out


def _fmt_value(metric: str, value: Any) -> str:
    if value is None:
        return "n/a"
    v = float(value)
    if "latency" in metric:
        return f"{v * 1000:.1f}ms"
    return f"{v:.3f}"


def describe_round(status: Obj) -> str:
    marks = {"Successful": "ok", "Failed": "FAILED", "Inconclusive": "inconclusive", "Error": "error"}
    parts = []
    for m in status.get("lastMeasurements") or []:
        parts.append(
            f"{m['metric']} {_fmt_value(m['metric'], m.get('value'))} {marks.get(m['verdict'], m['verdict'])}"
        )
    verdict = (status.get("analysis") or {}).get("lastVerdict", "?")
    return "analysis: " + ", ".join(parts) + f"  => {verdict}"


@dataclass
class Follower:
    """Polls the ModelDeployment, prints what changes, records snapshots for the timeline."""

    api: ApiClient
    story: Story
    tail: RecordTail | None
    namespace: str = NAMESPACE
    name: str = NAME
    steps: int = 4
    quiet: bool = False
    recent: deque[Record] = field(default_factory=lambda: deque(maxlen=4000))
    records: list[Record] = field(default_factory=list)
    last_key: tuple[Any, ...] | None = None
    last_round: str | None = None
    status: Obj = field(default_factory=dict)
    steps_seen: dict[str, list[int]] = field(default_factory=dict)  # canary version -> steps, in order

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"  [{time.time() - self.story.started:6.1f}s] {text}", flush=True)

    def served(self, seconds: float = 2.0) -> str:
        """Each version's share of the requests answered in the last ``seconds`` (as written so far)."""
        now = time.time()
        window = [r for r in self.recent if now - seconds - 0.5 <= r.t <= now - 0.5 and r.version]
        if not window:
            return ""
        counts = Counter(r.version for r in window)
        total = sum(counts.values())
        return "served: " + " | ".join(f"{v} {100 * c / total:.0f}%" for v, c in sorted(counts.items()))

    async def poll(self) -> Obj:
        if self.tail is not None:
            new = self.tail.poll()
            self.records.extend(new)
            self.recent.extend(new)
        obj = await self.api.get(MODEL_DEPLOYMENTS, self.namespace, self.name)
        status: Obj = (obj or {}).get("status") or {}
        self.status = status
        phase = status.get("phase") or "-"
        snapshot = Snapshot(
            t=time.time(),
            phase=phase,
            stable=status.get("stableVersion"),
            canary=status.get("canaryVersion"),
            weight=int(status.get("canaryWeight") or 0),
            step=status.get("currentStep"),
            message=str(status.get("message") or ""),
        )
        self.story.snapshots.append(snapshot)
        if phase == "Progressing" and snapshot.canary and snapshot.step:
            seen = self.steps_seen.setdefault(snapshot.canary, [])
            if not seen or seen[-1] != snapshot.step:
                seen.append(int(snapshot.step))
        self.story.history = list(status.get("history") or [])
        round_at = (status.get("analysis") or {}).get("lastRoundAt")
        if round_at and round_at != self.last_round and status.get("lastMeasurements"):
            self.last_round = round_at
            self.story.record_round(status)
            served = self.served(4.0)
            self.say(
                "  "
                + describe_round(status)
                + (f"\n{' ' * 14}({served} over the last 4 s)" if served else "")
            )
        key = (phase, snapshot.stable, snapshot.canary, snapshot.weight, snapshot.step)
        if key != self.last_key and obj is not None and status.get("phase"):
            self.last_key = key
            self.say(self.describe(snapshot))
        return status

    def describe(self, s: Snapshot) -> str:
        if s.phase == "Progressing" and s.canary:
            return f"{s.phase:<12} {s.canary} step {s.step}/{self.steps}: canary weight {s.weight}%"
        if s.phase in ("Promoting", "RollingBack"):
            return f"{s.phase:<12} {s.message}"
        if s.phase == "RolledBack":
            return f"{s.phase:<12} {s.message}"
        if s.phase == "Healthy":
            return f"{s.phase:<12} stable {s.stable}" + (f": {s.message}" if s.message else "")
        return f"{s.phase:<12} {s.message}"

    async def until(self, done: Any, within: float, period: float = 0.25) -> Obj:
        deadline = time.monotonic() + within
        while True:
            status = await self.poll()
            if done(status):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"still {status.get('phase')}: {status.get('message')}")
            await asyncio.sleep(period)


def record_for(status: Obj, version: str) -> Obj | None:
    for record in reversed(status.get("history") or []):
        if record.get("version") == version:
            return dict(record)
    return None


# ------------------------------------------------------------------------------------------- story


@dataclass(frozen=True)
class Act:
    version: str
    title: str
    expect: str  # "Healthy" (first deploy) | "Promoted" | "RolledBack"
    reason_contains: str = ""
    env: tuple[tuple[str, str], ...] = ()
    load_test: bool = False  # spec.loadTest set: the version must be stopped having served 0 requests
    shadow: bool = False  # spec.shadow set: needs a mirroring router; must answer no user request


def shadow_spec(timing: Timing) -> Obj:
    """The shadow phase of the demo: every prediction mirrored for two analysis intervals."""
    seconds = 2 * int(timing.interval.rstrip("s"))
    return {
        "duration": f"{seconds}s",
        "mirrorPercent": 100,
        "minSamples": 40,
        "agreement": {"min": 0.9},
    }


ACTS = [
    Act("1.0.0", "deploy 1.0.0, the first version", "Healthy"),
    Act("2.0.0", "2.0.0, a better model: expect promotion through every step", "Promoted"),
    Act(
        "3.0.0",
        "3.0.0, degenerate predictions with HTTP 200: expect rollback by prediction-drift",
        "RolledBack",
        reason_contains="prediction-drift",
    ),
    Act(
        "4.0.0",
        "4.0.0, a plain error spike: expect rollback by error-rate",
        "RolledBack",
        reason_contains="error-rate",
        env=(("MLCANARY_FAULT_ERROR_RATE", "0.2"), ("MLCANARY_FAULT_SEED", "4")),
    ),
    # The zero-exposure gates (spec.loadTest, spec.shadow) need a router that keeps users off a ready
    # canary: with the replicas router they are skipped, and the summary says so.
    Act(
        "5.0.0",
        "5.0.0, sound but 300 ms slow, with spec.loadTest: expect its load test to fail it, 0 user requests",
        "RolledBack",
        reason_contains="load test failed: p95 latency",
        env=(("MLCANARY_FAULT_LATENCY_MS", "300"),),
        load_test=True,
    ),
    Act(
        "6.0.0",
        "6.0.0, degenerate again but fast, with both gates: it passes its load test, then expect rollback "
        "from the shadow phase, 0 user requests",
        "RolledBack",
        reason_contains="shadow phase failed",
        load_test=True,
        shadow=True,
    ),
]


def acts_for(router: str) -> list[Act]:
    """Every act the story tells, in order (the closed loop last)."""
    return [*ACTS, CLOSED_LOOP_ACT]


# ------------------------------------------------------------------------------ the closed loop

TRAIN_SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "retraining" / "train.py"
RETRAINED = "2.1.0"  # what examples/retraining/train.py makes of the stable 2.0.0 (minor + 1)
DRIFT_SHIFT = 1.3  # every feature of live traffic multiplied: the stable's input drift
# The retrained version is judged without predictionDrift: a model retrained for inputs that moved
# is expected to answer differently from the stale stable on them (that is why it was trained).
CLOSED_LOOP_METRICS = [m for m in METRICS if m["builtin"] != "predictionDrift"]
CLOSED_LOOP_TITLE = (
    f"closed loop: live inputs drift (x{DRIFT_SHIFT:g}) -> retraining requested -> the example training Job "
    f"registers {RETRAINED} in MLflow and moves the alias -> the operator canaries it -> promotion"
)


def mlflow_installed() -> bool:
    from mlcanary_local.mlflow_proc import MlflowMissingError, find_mlflow

    try:
        find_mlflow()
    except MlflowMissingError:
        return False
    return True


def closed_loop_problem(stack: LocalStack) -> str | None:
    """Why the closed-loop act cannot run here, if it cannot."""
    if stack.mlflow_url is None:
        return "no MLflow server in the stack (make setup installs it in .venv/tools/mlflow)"
    if not TRAIN_SCRIPT.exists():
        return f"{TRAIN_SCRIPT} not found (run the demo from a clone of the repository)"
    return None


def closed_loop_spec(mlflow_url: str, row_log: Path, timing: Timing) -> Obj:
    """spec.model.registry (Apply: the operator follows the alias itself, no GitOps here) and
    spec.retraining (an input-drift trigger running the example training Job on the stack)."""
    return {
        "registry": {
            "trackingUri": mlflow_url,
            "registeredModel": MODEL,
            "alias": "champion",
            "pollInterval": "10s",
            "updatePolicy": "Apply",
            "promotionAlias": "production",
        },
        "retraining": {
            "action": "Job",
            "jobTemplate": {
                "image": "local",  # the local kubelet runs the command as a process
                "command": ["python", str(TRAIN_SCRIPT)],
                "args": ["--data", str(row_log), "--alias", "champion", "--registered-model", MODEL],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": mlflow_url}],
                "activeDeadline": "10m",
            },
            "triggers": {"inputDrift": {"threshold": 0.25, "for": timing.retrain_for}},
            "window": "1h",
            "cooldown": "1h",
        },
    }


@dataclass
class Outcome:
    act: Act
    ok: bool
    detail: str
    steps_seen: list[int] = field(default_factory=list)
    skipped: bool = False


def start_loadgen(
    stack: LocalStack,
    timing: Timing,
    requests_csv: Path,
    shift: float = 1.0,
    row_log: Path | None = None,
) -> Any:
    """The load generator through the gateway; a restart (new shift) continues the request log."""
    argv = [sys.executable, "-m", "mlcanary_local.loadgen", "--url", stack.model_url(NAMESPACE, NAME),
            "--rate", str(timing.rate), "--out", str(requests_csv), "--append", "--shift", str(shift)]  # fmt: skip
    if row_log is not None:
        argv += ["--log-rows", str(row_log)]
    return spawn(argv, stack.logs / "loadgen.log")


async def run_story(
    stack: LocalStack,
    bundles: dict[str, Bundle],
    timing: Timing,
    router: str,
    out: Path,
    closed_loop: bool = True,
) -> tuple[list[Outcome], Story, Path]:
    story = Story(model_name=MODEL, started=time.time())
    requests_csv = out / "requests.csv"
    outcomes: list[Outcome] = []
    loadgen = None
    async with ApiClient(load_connection(str(stack.kubeconfig))) as api:
        await api.ensure_namespace(NAMESPACE)
        steps = default_steps(router)
        follower = Follower(api, story, RecordTail(requests_csv), steps=len(steps))
        try:
            for act in ACTS:
                print(f"\n== {act.title}", flush=True)
                if (act.shadow or act.load_test) and router == "replicas":
                    detail = (
                        "skipped: behind the replicas router a ready canary takes user traffic at once "
                        "(mlcanary demo --router gatewayAPI)"
                    )
                    print(f"  -> {detail}", flush=True)
                    outcomes.append(Outcome(act, True, detail, skipped=True))
                    continue
                env = [{"name": k, "value": v} for k, v in act.env]
                load_test = load_test_for(timing) if act.load_test else None
                shadow = shadow_spec(timing) if act.shadow else None
                body = manifest(
                    bundles[act.version], timing, router, env=env, load_test=load_test, shadow=shadow
                )
                await api.create_or_merge(body)
                outcome = await play(follower, act, timing, judged_steps=len(steps) - 1)
                outcomes.append(outcome)
                print(
                    f"  -> {'as expected' if outcome.ok else 'NOT AS EXPECTED'}: {outcome.detail}", flush=True
                )
                if not outcome.ok:
                    break
                if loadgen is None:
                    url = stack.model_url(NAMESPACE, NAME)
                    print(f"\n== load: {timing.rate:g} requests/s of breast_cancer rows to {url}", flush=True)
                    loadgen = start_loadgen(stack, timing, requests_csv)
                    await asyncio.sleep(timing.baseline_seconds)
            if len(outcomes) == len(ACTS) and all(o.ok for o in outcomes):
                print(f"\n== {CLOSED_LOOP_TITLE}", flush=True)
                problem = "left out (--no-closed-loop)" if not closed_loop else closed_loop_problem(stack)
                if problem is not None:
                    detail = f"skipped: {problem}"
                    print(f"  -> {detail}", flush=True)
                    outcomes.append(Outcome(CLOSED_LOOP_ACT, True, detail, skipped=True))
                else:
                    row_log = out / "recent-rows.csv"
                    steady = loadgen

                    def drifted() -> Any:
                        if steady is not None:
                            stop_popen(steady, grace=15)
                        return start_loadgen(stack, timing, requests_csv, shift=DRIFT_SHIFT, row_log=row_log)

                    outcome, restarted = await play_closed_loop(
                        api, stack, follower, bundles, timing, router, row_log, drifted
                    )
                    loadgen = restarted or loadgen
                    outcomes.append(outcome)
                    print(
                        f"  -> {'as expected' if outcome.ok else 'NOT AS EXPECTED'}: {outcome.detail}",
                        flush=True,
                    )
            await asyncio.sleep(2)  # the last requests and scrapes
            await follower.poll()
        finally:
            if loadgen is not None:
                stop_popen(loadgen, grace=15)
            with contextlib.suppress(Exception):
                await follower.poll()
            (out / "status.json").write_text(json.dumps(follower.status, indent=2))
    return outcomes, story, requests_csv


CLOSED_LOOP_ACT = Act(RETRAINED, CLOSED_LOOP_TITLE, "Promoted")


async def play_closed_loop(
    api: ApiClient,
    stack: LocalStack,
    follower: Follower,
    bundles: dict[str, Bundle],
    timing: Timing,
    router: str,
    row_log: Path,
    drifted: Any,
) -> tuple[Outcome, Any]:
    """Registry -> canary -> monitoring -> retrain -> registry, on the stack: the serving stable 2.0.0
    is registered as the alias `champion`, the ModelDeployment follows that alias and requests
    training on input drift; the load generator then shifts every feature. Returns the outcome and
    the (restarted) load generator."""
    from mlcanary_serving.mlflow_registry import MlflowServer, register_bundle

    act = CLOSED_LOOP_ACT
    mlflow_url = stack.mlflow_url
    assert mlflow_url is not None
    stable = bundles["2.0.0"]
    registered = await asyncio.to_thread(
        register_bundle, MlflowServer(mlflow_url), stable.path, MODEL, alias="champion"
    )
    follower.say(f"MLflow: {MODEL} version {registered.version} (2.0.0) registered, alias champion -> it")
    body = manifest(stable, timing, router, metrics=CLOSED_LOOP_METRICS)
    spec_extra = closed_loop_spec(mlflow_url, row_log, timing)
    body["spec"]["model"]["registry"] = spec_extra["registry"]
    body["spec"]["retraining"] = spec_extra["retraining"]
    body["spec"]["shadow"] = None  # a merge patch: null removes the previous act's gates
    body["spec"]["loadTest"] = None
    await api.create_or_merge(body)

    def resolved(version: str) -> Any:
        return lambda status: (status.get("registry") or {}).get("resolvedModelVersion") == version

    loadgen = None
    try:
        await follower.until(resolved("2.0.0"), 120)
        follower.say("registry: alias champion resolves to 2.0.0, the version serving: nothing to do")
        loadgen = drifted()
        follower.story.notes.append((time.time(), f"inputs x{DRIFT_SHIFT:g}"))
        follower.say(f"drift injected: every feature of live traffic x{DRIFT_SHIFT:g}")
        status = await follower.until(lambda st: bool((st.get("retraining") or {}).get("lastRun")), 180)
        retraining = status.get("retraining") or {}
        follower.story.notes.append((time.time(), "RetrainRequested"))
        follower.say(f"RetrainRequested: {retraining.get('lastReason')} -> Job {retraining.get('lastRun')}")
        await follower.until(resolved(RETRAINED), 300)
        follower.story.notes.append((time.time(), f"{RETRAINED} registered"))
        follower.say(f"registry: {RETRAINED} registered by the training Job, alias champion moved to it")

        def finished(st: Obj) -> bool:
            return record_for(st, RETRAINED) is not None and st.get("phase") in ("Healthy", "RolledBack")

        status = await follower.until(finished, timing.act_timeout)
    except TimeoutError as error:
        return Outcome(act, False, f"timed out ({error})"), loadgen
    record = record_for(status, RETRAINED) or {}
    outcome, reason = record.get("outcome"), str(record.get("reason", ""))
    result = (status.get("retraining") or {}).get("lastResult")
    if outcome != "Promoted":
        return Outcome(act, False, f"{RETRAINED} ended {outcome}: {reason}"), loadgen
    return (
        Outcome(act, True, f"{RETRAINED} retrained on drifted data (Job {result}) and promoted: {reason}"),
        loadgen,
    )


async def play(follower: Follower, act: Act, timing: Timing, judged_steps: int) -> Outcome:
    version = act.version

    def finished(status: Obj) -> bool:
        if act.expect == "Healthy":
            return status.get("phase") == "Healthy" and status.get("stableVersion") == version
        return record_for(status, version) is not None and status.get("phase") in ("Healthy", "RolledBack")

    try:
        status = await follower.until(finished, timing.act_timeout)
    except TimeoutError as error:
        return Outcome(act, False, f"timed out after {timing.act_timeout:.0f}s ({error})")
    steps_seen = follower.steps_seen.get(version, [])
    if act.expect == "Healthy":
        return Outcome(act, True, f"{version} serves all traffic", steps_seen)
    record = record_for(status, version) or {}
    outcome, reason = record.get("outcome"), str(record.get("reason", ""))
    if outcome != act.expect:
        return Outcome(act, False, f"{version} ended {outcome}: {reason}", steps_seen)
    if act.reason_contains and act.reason_contains not in reason:
        return Outcome(act, False, f"{version} {outcome}, but for another reason: {reason}", steps_seen)
    if act.load_test or act.shadow:
        await asyncio.sleep(1.5)  # the request log is written a little behind the answers
        await follower.poll()
        served = sum(1 for r in follower.records if r.version == version)
        if served or steps_seen:
            return Outcome(act, False, f"{version} answered {served} user requests (steps {steps_seen})")
        return Outcome(act, True, f"{version} rolled back having answered 0 user requests: {reason}")
    if act.expect == "Promoted":
        reported = [int(s["step"]) for s in record.get("steps") or [] if s.get("verdict") == "Successful"]
        expected = list(range(1, judged_steps + 1))
        if reported != expected:
            return Outcome(act, False, f"promoted, but steps judged successful were {reported}", steps_seen)
        if steps_seen != expected:
            return Outcome(act, False, f"promoted, but the steps seen live were {steps_seen}", steps_seen)
        return Outcome(act, True, f"{version} promoted after steps {reported} passed: {reason}", steps_seen)
    return Outcome(act, True, f"{version} rolled back: {reason}", steps_seen)


# --------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcanary demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the whole story in about two minutes (CI)")
    parser.add_argument("--out", default="out/demo", help="directory for the PNG, summary and logs")
    parser.add_argument(
        "--router",
        choices=["replicas", "gatewayAPI"],
        default="gatewayAPI",
        help="traffic router (the zero-exposure gates, spec.loadTest and spec.shadow, need gatewayAPI)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the stack running at the end (Ctrl-C stops)"
    )
    parser.add_argument(
        "--no-closed-loop",
        action="store_true",
        help="leave out the last act (MLflow registry, drift, retraining, the retrained version's canary)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    timing = timing_for(args.quick, args.router)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    began = time.monotonic()
    print(
        f"mlcanary demo{' --quick' if args.quick else ''}: a canary story on one machine (router: {args.router})"
    )
    print("  training and bundling the models (scikit-learn breast_cancer) ...", flush=True)
    bundles = build_bundles(out / "bundles")
    for bundle in bundles.values():
        accuracy = f"held-out accuracy {bundle.holdout_accuracy:.3f}" if bundle.holdout_accuracy else ""
        print(f"    {bundle.version}  {bundle.description:<72} {accuracy}")
    work_dir = out / "stack"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    closed_loop = not args.no_closed_loop and mlflow_installed()
    config = StackConfig(tick_seconds=timing.tick_seconds, mlflow=closed_loop)
    print("  starting the local stack (API emulator, kubelet, gateway, Prometheus, operator) ...", flush=True)
    try:
        with LocalStack(work_dir, config) as stack:
            print(f"    kubectl:    export KUBECONFIG={stack.kubeconfig}; kubectl get mdep -n {NAMESPACE} -w")
            print(f"    gateway:    {stack.model_url(NAMESPACE, NAME)}")
            print(f"    Prometheus: {stack.prometheus_url}")
            outcomes, story, requests_csv = asyncio.run(
                run_story(stack, bundles, timing, args.router, out, closed_loop=not args.no_closed_loop)
            )
            end = time.time()
            ok = len(outcomes) == len(acts_for(args.router)) and all(o.ok for o in outcomes)
            records = read_records(requests_csv)
            png = out / "timeline.png"
            report = write_report(stack, story, records, outcomes, end, out, png, args)
            print("\n" + report)
            if args.keep:
                print("\nthe stack keeps running; Ctrl-C stops it", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work_dir / "prometheus" / "data", ignore_errors=True)
    print(f"\nstory {'complete' if ok else 'DEVIATED'} in {time.monotonic() - began:.0f}s; wrote {png}")
    return 0 if ok else 1


def write_report(
    stack: LocalStack,
    story: Story,
    records: list[Record],
    outcomes: list[Outcome],
    end: float,
    out: Path,
    png: Path,
    args: argparse.Namespace,
) -> str:
    rows = summarize(story, records)
    unanswered = sum(1 for r in records if not r.version)
    table = format_table(rows, unanswered)
    panels = prometheus_panels(stack.prometheus_url, MODEL, story.started, end)
    drift_max = next(float(m["max"]) for m in METRICS if m["builtin"] == "predictionDrift")
    render_png(
        png,
        story,
        records,
        panels,
        end,
        f"mlcanary demo{' --quick' if args.quick else ''}: {MODEL} ({args.router} router)",
        judged_max=drift_max,
    )
    lines = ["summary", table, "", "story:"]
    for outcome in outcomes:
        mark = "skip" if outcome.skipped else ("ok  " if outcome.ok else "FAIL")
        lines.append(f"  {mark} {outcome.act.title}: {outcome.detail}")
    for act in acts_for(args.router)[len(outcomes) :]:
        lines.append(f"  skip {act.title}")
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "ok": all(o.ok for o in outcomes) and len(outcomes) == len(acts_for(args.router)),
                "acts": [
                    {"version": o.act.version, "ok": o.ok, "detail": o.detail}
                    for o in outcomes
                    if not o.skipped
                ],
                "skipped": [{"version": o.act.version, "detail": o.detail} for o in outcomes if o.skipped],
                "versions": [r.__dict__ for r in rows],
                "requests": len(records),
                "unanswered": unanswered,
            },
            indent=2,
        )
    )
    return text


if __name__ == "__main__":
    raise SystemExit(main())
