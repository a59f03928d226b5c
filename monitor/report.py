"""The HTML report: one self-contained file, plots drawn as inline SVG (no script, no network).

Pure: `render` takes what the runner gathered from the store and returns the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.performance import HEADLINE

COLORS = {"baseline": "#8da0cb", "batch": "#fc8d62", "ok": "#e7f5e7", "warning": "#fff3c4", "alert": "#f8c9c4",
          "n/a": "#eeeeee", "line": "#1b6ca8", "reference": "#999999", "coverage": "#d9e6f2"}
#: The metric shown per column kind in the drift-over-time table.
TREND_METRIC = {"numeric": "wasserstein", "categorical": "jensen_shannon"}
TABLE_METRICS = ("psi", "jensen_shannon", "wasserstein", "ks", "cohens_w", "null_rate_change", "unseen_share",
                 "p_value", "p_adjusted", "cusum_up", "cusum_down")

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 6px;
text-align:right}th{background:#f5f5f5}td.l,th.l{text-align:left}.ok{background:#e7f5e7}
.warning{background:#fff3c4}.alert{background:#f8c9c4}.na{background:#eee;color:#888}
.hist{display:inline-block;margin:0 1em 1em 0;vertical-align:top}.note{color:#666;font-size:.85em}
"""


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


def render(data: ReportData) -> str:
    """The whole page."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>predstore monitor: {_e(data.model)}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Monitoring report: {_e(data.model)}</h1>",
             f"<p class='note'>{_e(data.task)} model; generated {data.generated_at:%Y-%m-%d %H:%M %Z}. Drift compares "
             "each run's histograms with the baseline frozen at registration; performance compares labels with the "
             "prediction in force at their event time.</p>"]
    parts += _latest(data)
    parts += _history(data.history)
    parts += _performance(data.performance, data.task)
    parts += _alerts(data.alerts)
    parts.append("</body></html>")
    return "\n".join(parts)


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


def _latest(data: ReportData) -> list[str]:
    if data.latest is None:
        return ["<h2>Drift</h2><p>No drift check yet: score a partition with a model registered with "
                "--train-data, then run <code>predstore monitor</code>.</p>"]
    c = data.latest
    where = f"run {c['run_id']} ({_e(c.get('partition_key'))})" if c["run_id"] else "window"
    share = f"{c['drifted']} of {c['features']} features drifted" + (" - dataset drift" if c["dataset_drift"] else "")
    out = [f"<h2>Latest drift: {where}, model version {c['model_version']}</h2>",
           f"<p>{c['rows']:,} rows; {share}.</p>", "<table><tr><th class='l'>column</th><th class='l'>role</th>"
           "<th class='l'>verdict</th>" + "".join(f"<th>{m}</th>" for m in TABLE_METRICS) + "</tr>"]
    for row in data.latest_rows:
        out.append(f"<tr><td class='l'>{_e(row['column_name'])}</td><td class='l'>{_e(row['role'])}</td>"
                   f"<td class='l {_cls(row['status'])}'>{_e(row['status'])}</td>"
                   + "".join(f"<td>{fmt(row.get(m))}</td>" for m in TABLE_METRICS) + "</tr>")
    out.append("</table>")
    out += [f"<p class='note'>{_e(note)}</p>" for note in data.notes]
    if data.histograms:
        out.append("<h2>Baseline against batch</h2><div>")
        out += [f"<div class='hist'>{bars(h)}</div>" for h in data.histograms]
        out.append("</div>")
    return out


def _history(history: Sequence[Mapping[str, Any]]) -> list[str]:
    runs = [r for r in history if r["scope"] == "run" and r["run_role"] == "current"]
    if not runs:
        return []
    checks: dict[int, Mapping[str, Any]] = {}
    cells: dict[tuple[str, int], Mapping[str, Any]] = {}
    columns: list[str] = []
    for r in runs:
        checks.setdefault(r["check_id"], r)
        cells[(r["column_name"], r["check_id"])] = r
        if r["column_name"] not in columns:
            columns.append(r["column_name"])
    order = list(checks)
    out = ["<h2>Drift over time</h2><p class='note'>Wasserstein distance / baseline std for numbers, Jensen-Shannon "
           "distance for categories; colour is each column's verdict.</p>",
           "<table><tr><th class='l'>column</th>"
           + "".join(f"<th title='run {checks[i]['run_id']}'>{_e(checks[i]['partition_key'])}</th>" for i in order)
           + "</tr>"]
    for column in columns:
        row = [f"<td class='l'>{_e(column)}</td>"]
        for i in order:
            cell = cells.get((column, i))
            if cell is None:
                row.append("<td class='na'></td>")
                continue
            value = cell.get(TREND_METRIC.get(cell["kind"], "psi"))
            row.append(f"<td class='{_cls(cell['status'])}'>{fmt(value)}</td>")
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</table>")
    shares_by_check = []
    for i in order:
        features = [cells[(c, i)] for c in columns if (c, i) in cells and cells[(c, i)]["role"] == "feature"]
        drifted = sum(1 for f in features if f["drifted"])
        shares_by_check.append(drifted / len(features) if features else None)
    out.append(lines([str(checks[i]["partition_key"]) for i in order], {"drift share": shares_by_check},
                     title="Share of drifted features per run", y_max=1.0))
    return out


def _performance(rows: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    windows = [r for r in rows if r["scope"] == "window" and not r["estimated"] and not r.get("backfill")]
    served = [r for r in windows if r["run_role"] == "current"]
    estimates = [r for r in rows if r["estimated"]]
    if not windows and not estimates:
        return ["<h2>Performance</h2><p>No labels matched yet: ingest them with <code>predstore labels ingest</code>."
                "</p>"]
    out = ["<h2>Performance over time</h2>"]
    headline = HEADLINE.get(task, "mae")
    if windows:
        starts = sorted({r["window_start"] for r in served})
        by = {(r["window_start"], r["metric"]): r for r in served}
        values = [by.get((s, headline), {}).get("value") for s in starts]
        coverage = [by.get((s, headline), {}).get("coverage") for s in starts]
        reference = next((r["training_value"] for r in served if r["metric"] == headline and r["training_value"]
                          is not None), None)
        out.append(lines([f"{s:%Y-%m-%d}" for s in starts], {headline: values}, title=f"{headline} per window "
                         "(dashed: at registration; bars: label coverage)", reference=reference, bars=coverage))
        metrics = sorted({r["metric"] for r in windows}, key=lambda m: (m != headline, m))
        out.append("<table><tr><th class='l'>window</th><th class='l'>version</th><th class='l'>runs</th>"
                   "<th>labels</th><th>coverage</th>"
                   + "".join(f"<th>{m}</th>" for m in metrics) + "</tr>")
        for (start, version, role) in sorted({(r["window_start"], r["model_version"], r["run_role"]) for r in windows}):
            cells = {r["metric"]: r for r in windows
                     if (r["window_start"], r["model_version"], r["run_role"]) == (start, version, role)}
            first = next(iter(cells.values()))
            out.append(f"<tr><td class='l'>{start:%Y-%m-%d}</td><td class='l'>v{version}</td><td class='l'>{role}</td>"
                       f"<td>{first['labels']}</td>"
                       f"<td>{_pct(first['coverage'])}</td>"
                       + "".join(f"<td class='{_cls(cells[m]['status']) if m in cells else 'na'}'>"
                                 f"{fmt(cells[m]['value']) if m in cells else ''}</td>" for m in metrics) + "</tr>")
        out.append("</table><p class='note'>Coverage: the share of the window's labels matched to a prediction. "
                   "Training values are measured on the data given at registration.</p>")
    if estimates:
        out.append("<h3>Expected performance before labels (estimate, CBPE)</h3><table><tr><th class='l'>run</th>"
                   "<th class='l'>metric</th><th>estimate</th><th>at registration</th></tr>")
        for r in estimates[-40:]:
            out.append(f"<tr><td class='l'>{r['run_id']}</td><td class='l'>{_e(r['metric'])}</td>"
                       f"<td class='{_cls(r['status'])}'>{fmt(r['value'])}</td>"
                       f"<td>{fmt(r['training_value'])}</td></tr>")
        out.append("</table>")
    return out


def _alerts(alerts: Sequence[Mapping[str, Any]]) -> list[str]:
    if not alerts:
        return ["<h2>Alerts</h2><p>None raised.</p>"]
    out = ["<h2>Alerts</h2><table><tr><th class='l'>raised</th><th class='l'>kind</th><th class='l'>message</th>"
           "<th class='l'>webhook</th></tr>"]
    for a in alerts:
        sent = "sent" if a.get("delivered_at") else (a.get("delivery_error") or "-")
        out.append(f"<tr><td class='l'>{a['raised_at']:%Y-%m-%d %H:%M}</td><td class='l'>{_e(a['kind'])}</td>"
                   f"<td class='l'>{_e(a['message'])}</td><td class='l'>{_e(sent)}</td></tr>")
    out.append("</table>")
    return out


# --- plots -----------------------------------------------------------------------------------


def bars(h: Histogram, *, width: int = 460, height: int = 210) -> str:
    """Grouped bars of baseline and batch shares per bin, as SVG."""
    n = len(h.labels)
    top = max([*h.baseline, *h.batch, 1e-9])
    left, plot_top, bottom = 40, 36, 58
    plot_h = height - plot_top - bottom
    step = (width - left - 6) / max(n, 1)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
           f"<title>{_e(h.column)}: baseline against batch</title>",
           f"<text x='4' y='13' font-size='12' font-weight='bold'>{_e(h.column)}</text>",
           f"<text x='{width - 6}' y='13' font-size='10' text-anchor='end'>{_e(h.headline)}</text>",
           f"<rect x='{width - 130}' y='20' width='9' height='9' fill='{COLORS['baseline']}'/>"
           f"<text x='{width - 117}' y='28' font-size='9'>baseline</text>"
           f"<rect x='{width - 70}' y='20' width='9' height='9' fill='{COLORS['batch']}'/>"
           f"<text x='{width - 57}' y='28' font-size='9'>batch</text>",
           f"<text x='{left - 3}' y='{plot_top + 4}' font-size='9' text-anchor='end'>{top:.0%}</text>"]
    for i, (label, b, q) in enumerate(zip(h.labels, h.baseline, h.batch, strict=True)):
        x = left + i * step
        for j, (value, color) in enumerate(((b, COLORS["baseline"]), (q, COLORS["batch"]))):
            bar_h = plot_h * value / top
            out.append(f"<rect x='{x + 1 + j * step / 2:.1f}' y='{plot_top + plot_h - bar_h:.1f}' "
                       f"width='{step / 2 - 1:.1f}' height='{bar_h:.1f}' fill='{color}'><title>{_e(label)}: "
                       f"{'baseline' if j == 0 else 'batch'} {value:.1%}</title></rect>")
        if n <= 12 or i % max(1, n // 8) == 0 or i == n - 1:
            tx, ty = x + step / 2, plot_top + plot_h + 10
            out.append(f"<text x='{tx:.1f}' y='{ty}' font-size='8' text-anchor='end' "
                       f"transform='rotate(-30 {tx:.1f} {ty})'>{_e(label[:16])}</text>")
    out.append(f"<line x1='{left}' y1='{plot_top + plot_h}' x2='{width - 6}' y2='{plot_top + plot_h}' "
               "stroke='#999'/></svg>")
    return "".join(out)


def lines(x_labels: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str,
          reference: float | None = None, bars: Sequence[float | None] | None = None, y_max: float | None = None,
          width: int = 900, height: int = 260) -> str:
    """A line chart over ``x_labels``, with an optional dashed reference and 0-1 bars beneath, as SVG."""
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if reference is not None:
        values.append(reference)
    low = min([0.0, *values])
    high = y_max if y_max is not None else max([*values, 1e-9]) * 1.1
    left, right, top, bottom = 56, 10, 24, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(x_labels), 1)

    def x(i: int) -> float:
        return left + (i + 0.5) * plot_w / n

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - low) / ((high - low) or 1))

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
           f"<title>{_e(title)}</title><text x='{left}' y='14' font-size='12' font-weight='bold'>{_e(title)}</text>"]
    for i, share in enumerate(bars or []):
        if share is not None:
            bar_h = plot_h * min(share, 1.0)
            out.append(f"<rect x='{x(i) - plot_w / n * 0.35:.1f}' y='{top + plot_h - bar_h:.1f}' "
                       f"width='{plot_w / n * 0.7:.1f}' height='{bar_h:.1f}' fill='{COLORS['coverage']}'>"
                       f"<title>coverage {share:.0%}</title></rect>")
    for tick in (low, (low + high) / 2, high):
        out.append(f"<text x='{left - 4}' y='{y(tick) + 3:.1f}' font-size='9' text-anchor='end'>{fmt(tick)}</text>"
                   f"<line x1='{left}' y1='{y(tick):.1f}' x2='{width - right}' y2='{y(tick):.1f}' stroke='#eee'/>")
    if reference is not None:
        out.append(f"<line x1='{left}' y1='{y(reference):.1f}' x2='{width - right}' y2='{y(reference):.1f}' "
                   f"stroke='{COLORS['reference']}' stroke-dasharray='5,4'><title>at registration "
                   f"{fmt(reference)}</title></line>")
    for name, points in series.items():
        coords = [(x(i), y(v)) for i, v in enumerate(points) if v is not None and math.isfinite(v)]
        if coords:
            out.append(f"<polyline fill='none' stroke='{COLORS['line']}' stroke-width='2' points='"
                       + " ".join(f"{a:.1f},{b:.1f}" for a, b in coords) + f"'><title>{_e(name)}</title></polyline>")
            out += [f"<circle cx='{a:.1f}' cy='{b:.1f}' r='2.5' fill='{COLORS['line']}'/>" for a, b in coords]
    every = max(1, n // 16)
    for i, label in enumerate(x_labels):
        if i % every == 0:
            out.append(f"<text x='{x(i):.1f}' y='{height - bottom + 14}' font-size='9' text-anchor='end' "
                       f"transform='rotate(-35 {x(i):.1f} {height - bottom + 14})'>{_e(label[:16])}</text>")
    out.append("</svg>")
    return "".join(out)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any) -> str:
    """A number in four significant digits; '-' for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    return f"{value:.4g}" if isinstance(value, (int, float)) else _e(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _cls(status: str | None) -> str:
    return {"n/a": "na"}.get(status or "n/a", status or "na")
