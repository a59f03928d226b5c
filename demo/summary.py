"""What the replay held, read back from the store: the alerts raised, the features that drifted,
the error week by week.

The monitor's last pass alone says little about a year: an alert is raised once per run or window,
so the last pass raises only what the last week brought. The summary counts every alert, drift
check and performance window the store keeps for the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from store import monitoring
from store import performance as perf

#: The checks and alerts of a demo fit well under this; the store keeps no more for one model.
EVERYTHING = 1_000_000
#: How many of the features that drifted most are named.
TOP_FEATURES = 3


@dataclass(frozen=True)
class Window:
    """The realized error of one time window of the replayed data."""

    start: datetime
    value: float


@dataclass(frozen=True)
class Summary:
    """The alerts, drift and error a model's monitor recorded."""

    #: Alerts by kind, most first.
    alerts: Mapping[str, int]
    #: By kind, what its first alert concerns: the run's partition (the replayed week), else its scope.
    first_alert: Mapping[str, str]
    #: Drift checks of served runs, and the features that drifted in most of them (name, checks), most first.
    checks: int
    drifted: tuple[tuple[str, int], ...]
    #: The error metric, its value on the held-out data, and its realized value per window, oldest first.
    metric: str
    training: float | None
    windows: tuple[Window, ...]

    @property
    def total(self) -> int:
        return sum(self.alerts.values())

    @property
    def worst(self) -> Window | None:
        return max(self.windows, key=lambda w: w.value, default=None)


def read_summary(conn: psycopg.Connection, model: str, *, metric: str) -> Summary:
    """The summary of everything the store holds for ``model``'s monitor."""
    return summarize(monitoring.recent_alerts(conn, model, limit=EVERYTHING),
                     monitoring.drift_history(conn, model, limit=EVERYTHING),
                     perf.performance_history(conn, model), metric=metric)


def summarize(alerts: Iterable[Mapping[str, Any]], drift: Iterable[Mapping[str, Any]],
              performance: Iterable[Mapping[str, Any]], *, metric: str) -> Summary:
    """The summary of alert rows, ``drift_over_time`` rows and ``performance_over_time`` rows (pure)."""
    drift = list(drift)
    partitions = {row["run_id"]: row["partition_key"] for row in drift if row["partition_key"]}
    alerts = sorted(alerts, key=lambda a: a["alert_id"])
    first_alert: dict[str, str] = {}
    for alert in alerts:
        first_alert.setdefault(alert["kind"], partitions.get(alert["run_id"], alert["scope_key"]))
    served = [row for row in drift if row["scope"] == "run" and row["run_role"] == "current"]
    features = [row for row in served if row["role"] == "feature"]
    drifted = Counter(row["column_name"] for row in features if row["drifted"])
    realized = sorted((row for row in performance
                       if row["scope"] == "window" and row["metric"] == metric and not row["estimated"]
                       and row["run_role"] == "current" and row["value"] is not None),
                      key=lambda row: row["window_start"])
    return Summary(
        alerts=dict(Counter(alert["kind"] for alert in alerts).most_common()),
        first_alert=first_alert,
        checks=len({row["check_id"] for row in served}),
        drifted=tuple(drifted.most_common(TOP_FEATURES)),
        metric=metric,
        training=next((row["training_value"] for row in realized if row["training_value"] is not None), None),
        windows=tuple(Window(row["window_start"], row["value"]) for row in realized),
    )


def describe(summary: Summary, *, unit: str = "") -> list[str]:
    """The summary as aligned lines for the console."""
    lines = []
    if summary.alerts:
        kinds = ", ".join(f"{count} {kind.replace('_', ' ')} (first in {summary.first_alert[kind]})"
                          for kind, count in summary.alerts.items())
        lines.append(f"alerts     {summary.total} raised: {kinds}")
    else:
        lines.append("alerts     none raised")
    if summary.drifted:
        (name, count), *others = summary.drifted
        lines.append(f"drifted    {name} in {count} of {summary.checks} weekly checks"
                     + "".join(f", {other} in {n}" for other, n in others))
    if summary.windows:
        first, worst, last = summary.windows[0], summary.worst, summary.windows[-1]
        assert worst is not None
        held_out = f" ({summary.training:.1f} on the held-out hours)" if summary.training is not None else ""
        lines.append(f"error      {summary.metric.upper()} {first.value:.1f}{unit} in the week of "
                     f"{first.start:%Y-%m-%d}{held_out}, {worst.value:.1f} at worst (week of {worst.start:%Y-%m-%d}), "
                     f"{last.value:.1f} in the last (week of {last.start:%Y-%m-%d})")
    return lines
