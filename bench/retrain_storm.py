"""A drift storm against spec.retraining: how many training runs it launches, per cooldown.

Replays the pure decision core (``mlcanary.retraining.core.decide``, what every tick runs) over a
storm: the inputDrift trigger true on every evaluation for ``--hours`` hours, evaluated every
``--period`` seconds, each evaluation seen by ``--ticks`` ticks (the shared loop wakes every object
after an evaluation, and other wake-ups add ticks). Each run lasts ``--job-minutes`` (the Job's
runtime). Prints, per cooldown, the runs launched, the RetrainSuppressed Events, and the ratio
runs / cooldown windows (1.0 is one run per window; the target).

    .venv/bin/python bench/retrain_storm.py
    .venv/bin/python bench/retrain_storm.py --hours 1 --cooldowns 5m,15m,1h,6h --job-minutes 3
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta

from mlcanary.durations import parse_duration
from mlcanary.engine import EmitEvent
from mlcanary.models import ModelDeploymentSpec, Phase, RetrainingStatus, RetrainResult
from mlcanary.retraining import core

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def storm(
    cooldown: str, hours: float, period: float, ticks: int, job_minutes: float, hold: str
) -> tuple[int, int, int]:
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "fraud", "version": "1.0.0", "uri": "file:///m"},
            "retraining": {
                "jobTemplate": {"image": "trainer:1"},
                "triggers": {"inputDrift": {"threshold": 0.25, "for": hold}},
                "cooldown": cooldown,
            },
        }
    )
    status: RetrainingStatus | None = None
    launched: list[datetime] = []
    suppressed = evaluations = 0
    now, end = T0, T0 + timedelta(hours=hours)
    while now < end:
        evaluations += 1
        for _ in range(ticks):
            last = launched[-1] if launched else None
            running = last is not None and now - last < timedelta(minutes=job_minutes)
            state = RetrainResult.RUNNING if running else RetrainResult.SUCCEEDED if last else None
            obs = core.RetrainObservations(
                name="fraud",
                phase=Phase.HEALTHY,
                stable_version="1.0.0",
                samples={core.INPUT_DRIFT: core.Sample(0.9, now)},
                run=core.RunObservation(state),
            )
            status, actions = core.decide(spec, status, obs, now)
            launched += [now for a in actions if isinstance(a, core.EnsureTrainingRun) and a.first]
            suppressed += sum(
                1 for a in actions if isinstance(a, EmitEvent) and a.reason == "RetrainSuppressed"
            )
        now += timedelta(seconds=period)
    return len(launched), suppressed, evaluations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--period", type=float, default=60.0, help="seconds between evaluations")
    parser.add_argument("--ticks", type=int, default=3, help="ticks per evaluation")
    parser.add_argument("--job-minutes", type=float, default=2.0)
    parser.add_argument("--hold", default="0s", help="the trigger's `for`")
    parser.add_argument("--cooldowns", default="1m,5m,10m,15m,30m,1h,6h")
    args = parser.parse_args()
    print(
        f"storm: inputDrift true on every evaluation for {args.hours:g} h, every {args.period:g} s, "
        f"{args.ticks} ticks per evaluation, runs last {args.job_minutes:g} min, for={args.hold}"
    )
    print(
        f"{'cooldown':>9} {'evaluations':>11} {'decisions':>9} {'runs':>5} {'windows':>7} {'runs/window':>11} {'suppressed':>10}"
    )
    for cooldown in args.cooldowns.split(","):
        runs, suppressed, evaluations = storm(
            cooldown, args.hours, args.period, args.ticks, args.job_minutes, args.hold
        )
        gap = max(parse_duration(cooldown), timedelta(minutes=args.job_minutes))
        windows = math.ceil(timedelta(hours=args.hours) / gap)
        print(
            f"{cooldown:>9} {evaluations:>11} {evaluations * args.ticks:>9} {runs:>5} {windows:>7} "
            f"{runs / windows:>11.2f} {suppressed:>10}"
        )


if __name__ == "__main__":
    main()
