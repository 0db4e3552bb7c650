"""The demo's record of a rollout story: status snapshots, the summary table and the timeline PNG.

The PNG has four panels sharing the time axis:

1. traffic share per version, as served (from the load generator's records, by the
   ``X-Model-Version`` header), with the canary weight the operator asked for as a dashed line;
2. error rate per version (Prometheus: ``server_error`` share of ``mlcanary_requests_total``);
3. p99 latency per version (Prometheus: ``histogram_quantile`` over the serving histogram);
4. drift per version (Prometheus: ``mlcanary_prediction_drift_psi``, solid, and
   ``mlcanary_input_drift_psi_max``, dashed, each against the bundle's training reference);

and vertical lines at every promotion (green) and rollback (red), from the status history.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlcanary_local.loadgen import Record
from mlcanary_local.prometheus_proc import query_range


@dataclass(frozen=True)
class Snapshot:
    """The ModelDeployment's status at one moment (what the demo polls)."""

    t: float
    phase: str
    stable: str | None
    canary: str | None
    weight: int
    step: int | None
    message: str


@dataclass(frozen=True)
class Round:
    """One analysis round: metric -> (canary value, verdict)."""

    t: float
    version: str
    values: dict[str, tuple[float | None, str]]


@dataclass(frozen=True)
class Marker:
    t: float
    kind: str  # "Promoted" | "RolledBack" | "Superseded"
    version: str
    reason: str


@dataclass
class Story:
    """Everything recorded while a story runs."""

    model_name: str
    started: float
    snapshots: list[Snapshot] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)  # (time, text): drawn as dotted lines

    def record_round(self, status: dict[str, Any]) -> None:
        """Keep an analysis round as the operator judged it (canary version, values, verdicts)."""
        at = _ts((status.get("analysis") or {}).get("lastRoundAt")) or time.time()
        values = {
            str(m["metric"]): (m.get("value"), str(m.get("verdict")))
            for m in status.get("lastMeasurements") or []
        }
        version = status.get("canaryVersion") or (status.get("history") or [{}])[-1].get("version", "?")
        self.rounds.append(Round(at, str(version), values))

    def markers(self) -> list[Marker]:
        out = []
        for record in self.history:
            finished = _ts(record.get("finishedAt"))
            if finished is not None:
                out.append(
                    Marker(
                        finished,
                        str(record["outcome"]),
                        str(record["version"]),
                        str(record.get("reason", "")),
                    )
                )
        return out


def _ts(text: Any) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def version_key(version: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for part in version.replace("-", ".").split("."):
        parts.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return tuple(parts)


def served_shares(
    records: Sequence[Record], start: float, end: float, bin_seconds: float = 1.0
) -> tuple[list[float], dict[str, list[float]]]:
    """Per time bin, each version's share (percent) of the answered requests."""
    n = max(1, math.ceil((end - start) / bin_seconds))
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    totals = [0] * n
    for r in records:
        if not r.version or not (start <= r.t < end):
            continue
        i = min(n - 1, int((r.t - start) / bin_seconds))
        counts[r.version][i] += 1
        totals[i] += 1
    times = [start + (i + 0.5) * bin_seconds for i in range(n)]
    shares = {
        v: [100.0 * c / totals[i] if totals[i] else math.nan for i, c in enumerate(cs)]
        for v, cs in counts.items()
    }
    return times, shares


@dataclass(frozen=True)
class VersionSummary:
    version: str
    outcome: str
    reason: str
    duration: float | None
    requests: int
    errors: int
    p99_ms: float | None


def summarize(story: Story, records: Sequence[Record]) -> list[VersionSummary]:
    """One row per version: how its rollout ended, how long it took, what it served."""
    by_version: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.version:
            by_version[r.version].append(r)
    outcomes: dict[str, tuple[str, str, float | None]] = {}
    replaced_by = {
        str(r.get("fromVersion")): str(r["version"]) for r in story.history if r.get("outcome") == "Promoted"
    }
    for record in story.history:
        started, finished = _ts(record.get("startedAt")), _ts(record.get("finishedAt"))
        duration = finished - started if started is not None and finished is not None else None
        outcomes[str(record["version"])] = (str(record["outcome"]), str(record.get("reason", "")), duration)
    final = story.snapshots[-1] if story.snapshots else None
    versions = set(by_version) | set(outcomes)
    if final is not None and final.stable:
        versions.add(final.stable)
    rows = []
    for version in sorted(versions, key=version_key):
        served = by_version.get(version, [])
        latencies = sorted(r.latency_ms for r in served)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
        if version in outcomes:
            outcome, reason, duration = outcomes[version]
        elif final is not None and final.stable == version:
            outcome, reason, duration = "Stable", "serving", None
        elif version in replaced_by:
            outcome, reason, duration = "Replaced", f"by {replaced_by[version]}", None
        else:
            outcome, reason, duration = "-", "", None
        rows.append(
            VersionSummary(
                version=version,
                outcome=outcome,
                reason=reason,
                duration=duration,
                requests=len(served),
                errors=sum(1 for r in served if not r.ok),
                p99_ms=p99,
            )
        )
    return rows


def format_table(rows: Sequence[VersionSummary], unanswered: int = 0) -> str:
    header = ("version", "outcome", "rollout", "requests", "errors", "p99 (client)", "reason")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.version,
                r.outcome,
                f"{r.duration:.0f}s" if r.duration is not None else "-",
                str(r.requests),
                str(r.errors),
                f"{r.p99_ms:.1f} ms" if r.p99_ms is not None else "-",
                r.reason if len(r.reason) <= 90 else r.reason[:87] + "...",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for j, line in enumerate(lines):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("  ".join([*cells, line[-1]]).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths) + "  ------")
    if unanswered:
        out.append(f"(+ {unanswered} requests without an answer)")
    return "\n".join(out)


def _series_by_version(
    prometheus_url: str, promql: str, start: float, end: float, step: float
) -> dict[str, tuple[list[float], list[float]]]:
    try:
        result = query_range(prometheus_url, promql, start, end, step)
    except Exception:  # the figure is best effort: a panel without data says so
        return {}
    out: dict[str, tuple[list[float], list[float]]] = {}
    for series in result:
        version = series["metric"].get("model_version", "?")
        times = [float(t) for t, _ in series["values"]]
        values = [float(v) for _, v in series["values"]]
        out[version] = (times, values)
    return out


def prometheus_panels(
    prometheus_url: str, model_name: str, start: float, end: float, window: str = "5s", step: float = 1.0
) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    sel = f'model_name="{model_name}"'
    return {
        "errors": _series_by_version(
            prometheus_url,
            f'sum by (model_version) (rate(mlcanary_requests_total{{{sel},outcome="server_error"}}[{window}]))'
            f" / sum by (model_version) (rate(mlcanary_requests_total{{{sel}}}[{window}]))",
            start,
            end,
            step,
        ),
        "latency": _series_by_version(
            prometheus_url,
            "histogram_quantile(0.99, sum by (le, model_version) "
            f"(rate(mlcanary_request_duration_seconds_bucket{{{sel}}}[{window}])))",
            start,
            end,
            step,
        ),
        "prediction_drift": _series_by_version(
            prometheus_url,
            f"max by (model_version) (mlcanary_prediction_drift_psi{{{sel}}})",
            start,
            end,
            step,
        ),
        "input_drift": _series_by_version(
            prometheus_url,
            f"max by (model_version) (mlcanary_input_drift_psi_max{{{sel}}})",
            start,
            end,
            step,
        ),
    }


def render_png(
    path: Path,
    story: Story,
    records: Sequence[Record],
    panels: dict[str, dict[str, tuple[list[float], list[float]]]],
    end: float,
    title: str,
    judged_metric: str = "prediction-drift",
    judged_max: float | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = story.started
    versions = sorted({r.version for r in records if r.version} | _panel_versions(panels), key=version_key)
    palette = plt.get_cmap("tab10")
    color = {v: palette(i % 10) for i, v in enumerate(versions)}

    def rel(ts: Sequence[float]) -> list[float]:
        return [t - start for t in ts]

    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True, constrained_layout=True)
    ax = axes[0]
    times, shares = served_shares(records, start, end)
    for version in versions:
        if version in shares:
            ax.plot(rel(times), shares[version], color=color[version], label=f"{version} served", lw=1.6)
    if story.snapshots:
        ts = [s.t for s in story.snapshots] + [end]
        ws = [s.weight if s.canary else 0 for s in story.snapshots]
        ws.append(ws[-1])
        ax.step(rel(ts), ws, where="post", color="black", ls="--", lw=1, label="canary weight (status)")
        # The shadow phase: requests mirrored to the canary, none of its answers served.
        labelled = False
        for snap, following in zip(story.snapshots, ts[1:], strict=False):
            if snap.phase == "Shadowing":
                label = None if labelled else "shadow phase (mirrored, 0% served)"
                ax.axvspan(
                    snap.t - start, following - start, color="tab:purple", alpha=0.15, lw=0, label=label
                )
                labelled = True
    ax.set_ylabel("traffic share %")
    ax.set_ylim(-3, 103)
    ax.legend(loc="center left", fontsize=8, ncol=1, bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title)

    def plot_panel(ax: Any, key: str, scale: float, ylabel: str, style: str = "-", suffix: str = "") -> None:
        for version, (ts, values) in sorted(panels.get(key, {}).items(), key=lambda kv: version_key(kv[0])):
            clean = [v * scale if math.isfinite(v) else math.nan for v in values]
            ax.plot(
                rel(ts), clean, style, color=color.get(version, "grey"), label=f"{version}{suffix}", lw=1.4
            )
        ax.set_ylabel(ylabel)
        if not panels.get(key):
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="grey")

    plot_panel(axes[1], "errors", 100.0, "error rate %")
    plot_panel(axes[2], "latency", 1000.0, "p99 latency ms")
    plot_panel(axes[3], "prediction_drift", 1.0, "drift (PSI)", "-", " prediction")
    plot_panel(axes[3], "input_drift", 1.0, "drift (PSI)", "--", " input (max)")
    judged: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for r in story.rounds:
        value = r.values.get(judged_metric, (None, ""))[0]
        if value is not None and math.isfinite(float(value)):
            judged[r.version][0].append(r.t - start)
            judged[r.version][1].append(float(value))
    for version, (xs, ys) in sorted(judged.items(), key=lambda kv: version_key(kv[0])):
        axes[3].scatter(
            xs, ys, marker="D", s=28, color=color.get(version, "grey"), zorder=3,
            label=f"{version} {judged_metric} vs stable (judged)",
        )  # fmt: skip
    if judged_max is not None:
        axes[3].axhline(judged_max, color="tab:red", ls=":", lw=1, label=f"{judged_metric} max")
    for ax in axes[1:]:
        ax.legend(loc="center left", fontsize=8, bbox_to_anchor=(1.0, 0.5))
    for marker in story.markers():
        x = marker.t - start
        good = marker.kind == "Promoted"
        for ax in axes:
            ax.axvline(x, color="tab:green" if good else "tab:red", lw=1.2, alpha=0.8)
        axes[0].annotate(
            f"{marker.version} {marker.kind}",
            (x, 101),
            xytext=(3, 0),
            textcoords="offset points",
            fontsize=8,
            color="tab:green" if good else "tab:red",
            va="top",
        )
    for t, text in story.notes:  # e.g. the closed loop: drift injected, RetrainRequested, registered
        for ax in axes:
            ax.axvline(t - start, color="tab:blue", ls=":", lw=1.0, alpha=0.8)
        axes[0].annotate(
            text, (t - start, 50), xytext=(3, 0), textcoords="offset points", fontsize=7,
            color="tab:blue", rotation=90, va="center",
        )  # fmt: skip
    axes[-1].set_xlabel("seconds since the story started")
    axes[-1].set_xlim(0, end - start)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel_versions(panels: dict[str, dict[str, tuple[list[float], list[float]]]]) -> set[str]:
    return {v for panel in panels.values() for v in panel}
