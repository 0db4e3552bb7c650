"""Rollout figures, measured on the local stack with the demo's story (real processes, real traffic):

1. **Time to safety**: from the first bad response the load generator received from a bad canary to
   the last response that canary served (its traffic really at 0), split into detection (first bad
   response -> the analysis round that failed) and drain (failed round -> last response served).
2. **Blast radius**: the share of all requests answered while a bad canary was live (its first to its
   last response) that the bad canary answered, and their count.
3. **Failed requests during a successful promotion** (target: none): every non-2xx or unanswered
   request from applying the good version until its predecessor has been removed.

Bad canaries: 3.0.0 (degenerate predictions with HTTP 200: every answer is bad; caught by
predictionDrift) and 4.0.0 (20% HTTP 500; caught by errorRate). Each run is one full demo story.

    python local/bench/rollout_figures.py                    # 3 runs with the --quick timing (~6 min)
    python local/bench/rollout_figures.py --runs 1 --timing full
    python local/bench/rollout_figures.py --router gatewayAPI      # exact 5% first step

Results: a Markdown table on stdout and ``$OUT/figures.json`` + ``$OUT/figures.md``
(OUT defaults to /tmp/mlcanary-rollout-figures). A measurement script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlcanary_local.demo.story import build_bundles, run_story, timing_for
from mlcanary_local.demo.timeline import Story
from mlcanary_local.loadgen import Record, read_records
from mlcanary_local.stack import LocalStack, StackConfig

BAD = {"3.0.0": "degenerate predictions (HTTP 200)", "4.0.0": "error spike (20% HTTP 500)"}
GOOD = "2.0.0"


def _ts(text: Any) -> float:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def _answered_at(r: Record) -> float:
    return r.t + r.latency_ms / 1000


@dataclass
class BadFigures:
    version: str
    kind: str
    first_bad_response: float
    failed_round: float
    last_response: float
    served: int
    total: int
    rollout_total: int  # every request answered from the canary's creation to the end of its rollout

    @property
    def detection_s(self) -> float:
        return self.failed_round - self.first_bad_response

    @property
    def drain_s(self) -> float:
        return self.last_response - self.failed_round

    @property
    def to_safety_s(self) -> float:
        return self.last_response - self.first_bad_response

    @property
    def blast_radius(self) -> float:
        return self.served / self.total if self.total else 0.0

    @property
    def share_of_rollout(self) -> float:
        return self.served / self.rollout_total if self.rollout_total else 0.0


def bad_figures(version: str, story: Story, records: list[Record]) -> BadFigures:
    served = sorted((r for r in records if r.version == version), key=lambda r: r.t)
    if not served:
        raise RuntimeError(f"{version} served nothing")
    bad = served if version == "3.0.0" else [r for r in served if not r.ok]
    failed_rounds = [
        r.t for r in story.rounds if r.version == version and any(v == "Failed" for _, v in r.values.values())
    ]
    if not bad or not failed_rounds:
        raise RuntimeError(f"{version}: no bad response or no failed round recorded")
    first, last = _answered_at(served[0]), _answered_at(served[-1])
    live = [r for r in records if first <= _answered_at(r) <= last]
    history = next(h for h in story.history if h["version"] == version)
    start, end = _ts(history["startedAt"]), _ts(history["finishedAt"])
    rollout = [r for r in records if start <= _answered_at(r) <= max(end, last)]
    return BadFigures(
        version=version,
        kind=BAD[version],
        first_bad_response=_answered_at(bad[0]),
        failed_round=min(failed_rounds),
        last_response=last,
        served=len(served),
        total=len(live),
        rollout_total=len(rollout),
    )


def promotion_failures(story: Story, records: list[Record]) -> tuple[int, int]:
    """(failed, total) requests from the good version's rollout start until the old one is gone."""
    record = next(h for h in story.history if h["version"] == GOOD and h["outcome"] == "Promoted")
    start = _ts(record["startedAt"])
    previous = record.get("fromVersion")
    # The old revision is gone once it stops answering; take the window up to its last answer + 2 s.
    old_last = max(
        (_answered_at(r) for r in records if r.version == previous), default=_ts(record["finishedAt"])
    )
    end = max(_ts(record["finishedAt"]), old_last) + 2.0
    window = [r for r in records if start <= r.t <= end]
    return sum(1 for r in window if not r.ok), len(window)


def one_run(index: int, timing_name: str, router: str, out: Path) -> dict[str, Any]:
    timing = timing_for(timing_name == "quick", router)
    run_dir = out / f"run-{index}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    bundles = build_bundles(run_dir / "bundles")
    config = StackConfig(tick_seconds=timing.tick_seconds)
    with LocalStack(run_dir / "stack", config) as stack:
        outcomes, story, csv_path = asyncio.run(run_story(stack, bundles, timing, router, run_dir))
    shutil.rmtree(run_dir / "stack" / "prometheus" / "data", ignore_errors=True)
    if not all(o.ok for o in outcomes) or len(outcomes) != 4:
        raise RuntimeError(f"run {index}: the story deviated: {[o.detail for o in outcomes]}")
    records = read_records(csv_path)
    failed, total = promotion_failures(story, records)
    return {
        "bad": [asdict(bad_figures(v, story, records)) for v in BAD],
        "promotion": {"failed": failed, "total": total},
        "requests": len(records),
    }


def report(runs: list[dict[str, Any]], timing_name: str, router: str, elapsed: float) -> str:
    timing = timing_for(timing_name == "quick", router)
    lines = [
        f"Rollout figures: {len(runs)} run(s) of the demo story, timing `{timing_name}` "
        f"({router} router, {timing.replicas} replicas, {timing.rate:g} req/s, interval {timing.interval}, "
        f"stepDuration {timing.step_duration}, operator tick {timing.tick_seconds:g}s, scrape 1s); "
        f"{elapsed / 60:.1f} min.",
        "",
        "| bad canary | first bad response -> weight 0 (served) | detection | drain | blast radius "
        "(while live) | (whole rollout) | bad requests |",
        "|---|---|---|---|---|---|---|",
    ]

    def spread(values: list[float], fmt: str) -> str:
        med = statistics.median(values)
        if len(values) == 1:
            return fmt.format(med)
        return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"

    for version, kind in BAD.items():
        figures = [BadFigures(**b) for run in runs for b in run["bad"] if b["version"] == version]
        lines.append(
            f"| {version}: {kind} | {spread([f.to_safety_s for f in figures], '{:.1f} s')} | "
            f"{spread([f.detection_s for f in figures], '{:.1f} s')} | "
            f"{spread([f.drain_s for f in figures], '{:.1f} s')} | "
            f"{spread([100 * f.blast_radius for f in figures], '{:.1f}%')} | "
            f"{spread([100 * f.share_of_rollout for f in figures], '{:.1f}%')} | "
            f"{spread([float(f.served) for f in figures], '{:.0f}')} |"
        )
    failed = [run["promotion"]["failed"] for run in runs]
    total = [run["promotion"]["total"] for run in runs]
    lines += [
        "",
        f"Failed requests during the successful promotion of {GOOD}: "
        + ", ".join(f"{f} of {t}" for f, t in zip(failed, total, strict=True))
        + " (per run; target 0).",
        "",
        "Median (min-max). Detection: first bad response -> the failed analysis round; drain: failed "
        "round -> the bad canary's last response. Blast radius: the bad canary's share of all requests "
        "answered between its first and last response (while live), and from its creation to the end "
        "of its rollout (whole rollout).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timing", choices=["quick", "full"], default="quick")
    parser.add_argument("--router", choices=["replicas", "gatewayAPI"], default="replicas")
    parser.add_argument("--out", default="/tmp/mlcanary-rollout-figures")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    runs = []
    for i in range(1, args.runs + 1):
        print(f"\n#### run {i}/{args.runs}", flush=True)
        runs.append(one_run(i, args.timing, args.router, out))
    text = report(runs, args.timing, args.router, time.monotonic() - began)
    (out / "figures.json").write_text(
        json.dumps({"timing": args.timing, "router": args.router, "runs": runs}, indent=2)
    )
    (out / "figures.md").write_text(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
