"""The HTML report: one self-contained file, charts drawn as inline SVG (no script, no network).

Pure: `render` takes what the runner gathered from the store and returns the page. The sections
are shaped here (tables as rows, charts laid out by `monitor.charts`) and written out by the
Jinja templates in ``monitor/templates``, which escape every value they are given.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2

from models.performance import HEADLINE
from monitor import charts
from monitor.charts import Chart, Point
from monitor.diagnostics import Match, WindowDiagnostics
from monitor.tallies import BINNED_AUC

#: The metric shown per column kind in the drift-over-time table and trends.
TREND_METRIC = {"numeric": "wasserstein", "categorical": "jensen_shannon"}
TABLE_METRICS = ("psi", "jensen_shannon", "wasserstein", "ks", "cohens_w", "null_rate_change", "unseen_share",
                 "p_value", "p_adjusted", "cusum_up", "cusum_down")
#: Columns given a trend chart of their own (the ones that drifted most first).
MAX_TRENDS = 24


@dataclass(frozen=True)
class Histogram:
    """Baseline and batch shares per bin of one column (nulls as the last bin)."""

    column: str
    labels: list[str]
    baseline: list[float]
    batch: list[float]
    status: str
    headline: str


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows."""

    model: str
    task: str
    generated_at: datetime
    latest: Mapping[str, Any] | None
    latest_rows: Sequence[Mapping[str, Any]]
    histograms: Sequence[Histogram]
    history: Sequence[Mapping[str, Any]]
    performance: Sequence[Mapping[str, Any]]
    alerts: Sequence[Mapping[str, Any]] = field(default_factory=list)
    #: What the latest check's baseline could not support (see `monitor.stats.baseline_notes`).
    notes: Sequence[str] = field(default_factory=list)
    #: A classifier's confusion matrix and reliability curve per window, newest first.
    windows: Sequence[WindowDiagnostics] = field(default_factory=list)
    #: A regressor's newest matched labels, for the residual charts.
    matches: Sequence[Match] = field(default_factory=list)
    #: The checks of live traffic (the rows the lookup API scored live), per day, newest first.
    live: Sequence[Mapping[str, Any]] = field(default_factory=list)


def render(data: ReportData) -> str:
    """The whole page."""
    return page("report.html", **sections(data))


def sections(data: ReportData) -> dict[str, Any]:
    """What the report's sections (``_drift.html``, ``_performance.html``, ``_alerts.html``) show:
    the report, and the console's pages."""
    return {"data": data, "table_metrics": TABLE_METRICS, "binned_auc": BINNED_AUC,
            "histograms": [histogram_chart(h) for h in data.histograms], "history": _history(data.history),
            "performance": _performance(data.performance, data.task), "windows": _windows(data.windows),
            "residuals": _residuals(data.matches)}


def page(template: str, **context: Any) -> str:
    """Render one of the package's templates."""
    return environment().get_template(template).render(**context)


@functools.cache
def environment() -> jinja2.Environment:
    """The templates of ``monitor/templates``, every value escaped, an unknown name an error."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("monitor", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, pct=_pct, verdict=_cls)
    return env


def bin_labels(base: Mapping[str, Any]) -> list[str]:
    """Readable names of a column's bins, null last."""
    if base["kind"] == "categorical":
        return [*base["categories"], "(other)", "(null)"]
    edges = base["edges"] or []
    if not edges:
        return ["(any)", "(null)"]
    inner = [f"[{fmt(a)}, {fmt(b)})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return [f"< {fmt(edges[0])}", *inner, f"> {fmt(edges[-1])}", "(null)"]


def shares(counts: Sequence[int], nulls: int) -> list[float]:
    """Each bin's share of all rows, nulls last."""
    total = sum(counts) + nulls
    return [c / total if total else 0.0 for c in [*counts, nulls]]


# --- sections --------------------------------------------------------------------------------


def histogram_chart(h: Histogram) -> Chart:
    """One column's bins, baseline beside batch."""
    return charts.bars(f"{h.column} ({h.status}): {h.headline}" if h.headline else h.column, h.labels,
                       {"baseline": h.baseline, "batch": h.batch}, x_label="bin", y_label="share of rows",
                       kind="histogram")


def _history(history: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The drift table (column x run), the drift share per run, and a trend chart per column."""
    runs = [r for r in history if r["scope"] == "run" and r["run_role"] == "current"]
    if not runs:
        return None
    checks: dict[int, Mapping[str, Any]] = {}
    cells: dict[tuple[str, int], Mapping[str, Any]] = {}
    columns: list[str] = []
    for r in runs:
        checks.setdefault(r["check_id"], r)
        cells[(r["column_name"], r["check_id"])] = r
        if r["column_name"] not in columns:
            columns.append(r["column_name"])
    order = list(checks)
    keys = [str(checks[i]["partition_key"]) for i in order]
    table = [(column, [(_cls(c["status"]), c.get(TREND_METRIC.get(c["kind"], "psi"))) if c else ("na", None)
                       for c in (cells.get((column, i)) for i in order)]) for column in columns]
    drift_share = []
    for i in order:
        features = [cells[(c, i)] for c in columns if (c, i) in cells and cells[(c, i)]["role"] == "feature"]
        drift_share.append(sum(1 for f in features if f["drifted"]) / len(features) if features else None)
    share = charts.lines("Share of drifted features per run", keys, {"drift share": drift_share},
                         x_label="run (partition)", y_label="share of features", y_range=(0.0, 1.0),
                         kind="drift-share")
    return {"checks": [(keys[n], checks[i]["run_id"]) for n, i in enumerate(order)], "table": table,
            "share": share, "trends": _trends(columns, order, keys, cells)}


def _trends(columns: Sequence[str], order: Sequence[int], keys: Sequence[str],
            cells: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[Chart]:
    """Per column, its distance and PSI per run, points coloured by the run's verdict."""
    def peak(column: str) -> float:
        values = [cells[(column, i)].get(TREND_METRIC.get(cells[(column, i)]["kind"], "psi")) for i in order
                  if (column, i) in cells]
        return max((v for v in values if v is not None and math.isfinite(v)), default=0.0)

    out = []
    for column in sorted(columns, key=lambda c: -peak(c))[:MAX_TRENDS]:
        seen = [(key, cells[(column, i)]) for key, i in zip(keys, order, strict=True) if (column, i) in cells]
        metric = TREND_METRIC.get(seen[0][1]["kind"], "psi")
        out.append(charts.lines(
            f"{column}: drift per run", [k for k, _ in seen],
            {metric: [c.get(metric) for _, c in seen], "psi": [c.get("psi") for _, c in seen]},
            status=[c["status"] for _, c in seen], x_label="run (partition)", y_label="drift metric",
            kind="trend", width=440, height=250))
    return out


def _performance(rows: Sequence[Mapping[str, Any]], task: str) -> dict[str, Any]:
    """The headline metric per window (interval, value at registration, coverage), the table of
    every metric per window, and the estimates made before labels."""
    windows = [r for r in rows if r["scope"] == "window" and not r["estimated"] and not r.get("backfill")]
    backfill = not windows  # only labels older than the runs that scored them (a backfill, a replay)
    if backfill:
        windows = [r for r in rows if r["scope"] == "window" and not r["estimated"] and r.get("backfill")]
    served = [r for r in windows if r["run_role"] == "current"]
    headline = HEADLINE.get(task, "mae")
    out: dict[str, Any] = {"chart": None, "metrics": [], "rows": [], "estimates": [r for r in rows if r["estimated"]],
                           "any": bool(windows) or any(r["estimated"] for r in rows),
                           "backfill": backfill and bool(windows)}
    if not windows:
        return out
    starts = sorted({r["window_start"] for r in served})
    by = {(r["window_start"], r["metric"]): r for r in served}
    picked = [by.get((s, headline), {}) for s in starts]
    reference = next((r["training_value"] for r in served if r["metric"] == headline
                      and r["training_value"] is not None), None)
    if starts:
        out["chart"] = charts.lines(
            f"{headline} per window" + (" (backfill labels)" if backfill else ""), [f"{s:%Y-%m-%d}" for s in starts],
            {headline: [p.get("value") for p in picked]},
            band=([p.get("low") for p in picked], [p.get("high") for p in picked]), band_label="95% interval",
            reference=reference, reference_label="at registration", shares=[p.get("coverage") for p in picked],
            shares_label="label coverage", status=[p.get("status") for p in picked], x_label="window (start)",
            y_label=headline, kind="performance", from_zero=False)
    metrics = sorted({r["metric"] for r in windows}, key=lambda m: (m != headline, m))
    out["metrics"] = metrics
    for start, version, role in sorted({(r["window_start"], r["model_version"], r["run_role"]) for r in windows}):
        cells = {r["metric"]: r for r in windows
                 if (r["window_start"], r["model_version"], r["run_role"]) == (start, version, role)}
        first = next(iter(cells.values()))
        out["rows"].append({"start": start, "version": version, "role": role, "labels": first["labels"],
                            "coverage": first["coverage"],
                            "cells": [(_cls(cells[m]["status"]), cells[m]["value"]) if m in cells else ("na", None)
                                      for m in metrics]})
    out["estimates"] = out["estimates"][-40:]
    return out


def _windows(windows: Sequence[WindowDiagnostics]) -> list[dict[str, Any]]:
    """Per window, its confusion matrix and reliability curve."""
    out = []
    for d in windows:
        w = d.window
        short = f"{w.start:%Y-%m-%d}, v{w.version}" + (" (backfill)" if w.backfill else "")
        when = f"{w.start:%Y-%m-%d} to {w.end:%Y-%m-%d}, v{w.version}" + (" (backfill labels)" if w.backfill else "")
        out.append({"title": when, "labels": d.labels,
                    "confusion": charts.heatmap(f"Confusion, {short}", d.actual, d.classes,
                                                d.confusion, x_label="predicted", y_label="actual",
                                                kind="confusion"),
                    "reliability": charts.xy(
                        f"Reliability, {short}", {f"class {c}": points for c, points in d.reliability.items()},
                        x_label="mean predicted probability", y_label="observed frequency", kind="reliability",
                        x_range=(0.0, 1.0), y_range=(0.0, 1.0), diagonal=True, connect=True)})
    return out


def _residuals(matches: Sequence[Match]) -> dict[str, Any] | None:
    """A regressor's predictions against its labels, and its residuals against its predictions."""
    if not matches:
        return None
    groups = {"in force": [m for m in matches if not m.backfill], "backfill": [m for m in matches if m.backfill]}
    groups = {name: group for name, group in groups.items() if group}
    fitted = charts.xy("Predicted against actual", {n: [Point(m.actual, m.prediction) for m in g]
                                                    for n, g in groups.items()},
                       x_label="actual", y_label="predicted", kind="predicted-actual", diagonal=True)
    residual = charts.xy("Residuals against predicted", {n: [Point(m.prediction, m.actual - m.prediction)
                                                             for m in g] for n, g in groups.items()},
                         x_label="predicted", y_label="residual (actual - predicted)", kind="residuals", zero=True)
    times = [m.event_time for m in matches]
    return {"charts": [fitted, residual], "count": len(matches), "first": min(times), "last": max(times)}


# --- values ----------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A number in four significant digits; '-' for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _cls(status: str | None) -> str:
    return {"n/a": "na"}.get(status or "n/a", status or "na")
