"""Realized performance, kept up to date from new labels only: the I/O around `monitor.tallies`.

Each label is matched once per run role (`store.matching`), and its tally is added
to its run's, for the UTC day of its event time; a corrected label takes its old tally back. The
performance rows are then computed from the tallies alone, so a monitor run costs what the new
labels cost, not what every label ever ingested costs, and a run whose table retention dropped
keeps the performance its labels measured. Labels older than every run holding their entity
(backfills, matched as 'earliest') are tallied and reported apart, and raise no alert. A window
alerts only when the metric's whole 95% interval is past the tolerance. Labels of entities the
lookup API scored live are also matched to the live prediction in force at their time and judged
per window apart (run role ``live``; no alert).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from models import performance
from monitor import tallies
from monitor.alerts import Alert
from monitor.config import MonitorConfig
from monitor.evaluate import Evaluation
from store import faults, live, matching, monitoring, registry
from store import performance as perf
from store.monitoring import StoredTally
from store.performance import PerformanceRow

Key = tuple[int, datetime, bool, int, str]  # run_id, day, backfill, model_version, run_role
#: Labels matched per query (what one query's result holds in memory).
MATCH_CHUNK = 200_000


def update(conn: psycopg.Connection, model_name: str, versions: Mapping[int, registry.ModelVersion],
             config: MonitorConfig, *, force: bool) -> Evaluation:
    """Match and tally the labels that arrived (all matches again, with ``force``), and record
    realized performance when anything it depends on changed."""
    changed_at, last = monitoring.last_change(conn, model_name), perf.last_performance(conn, model_name)
    if force:
        monitoring.delete_tallies(conn, model_name)
        for chunk in matching.label_matches(conn, model_name):
            monitoring.add_tallies(conn, model_name, count(chunk, versions))
    matched, after = 0, None
    while True:  # the waiting labels, a bounded number at a time
        upto = matching.pending_bound(conn, model_name, after=after, size=MATCH_CHUNK)
        changes = matching.match_labels(conn, model_name, after=after, upto=upto)
        faults.point("matched")
        if changes:
            monitoring.add_tallies(conn, model_name, count(changes, versions))
            matched += len(changes)
        if upto is None:
            break
        after = upto
    if matched >= MATCH_CHUNK:  # many labels changed state: let the next runs find the waiting ones fast
        matching.analyze_labels(conn)
    changed = matched > 0
    if not (force or changed) and (changed_at is None or (last is not None and last >= changed_at)):
        return Evaluation()
    stored = monitoring.tallies(conn, model_name)
    pending = monitoring.pending_counts(conn, model_name, window=config.window)
    in_window: dict[datetime, int] = defaultdict(int, {k.astimezone(UTC): v for k, v in pending.items()})
    served = [row for row in stored if row.run_role == "current"]
    for row in served:
        in_window[_window_start(row.day.astimezone(UTC), config.window)] += row.labels
    rows = performance_rows(stored, versions, config, sizes=perf.run_sizes(conn, model_name),
                            in_window=in_window)
    # Live predictions are judged too, per window and apart (run role 'live'): recounted each time.
    rows += [r for r in performance_rows(count(live.matches(conn, model_name), versions), versions, config,
                                         sizes={}, in_window={}) if r.scope == "window"]
    perf.replace_performance(conn, model_name, rows)
    matched = sum(row.labels for row in served)
    earliest = sum(row.labels for row in served if row.backfill)
    counts = {"labels": matched + sum(pending.values()), "matched": matched, "in_force": matched - earliest,
              "earliest": earliest, "unmatched": sum(pending.values())}
    return Evaluation(rows=rows, alerts=alerts(model_name, rows, config), labels=counts)


def count(changes: Iterable[tuple[Any, ...]], versions: Mapping[int, registry.ModelVersion]) -> list[StoredTally]:
    """The tallies of matched labels (`store.matching.MATCH_COLUMNS` rows), summed per run, UTC
    day and kind of match: rows for `store.monitoring.add_tallies`."""
    frame = pd.DataFrame(list(changes), columns=list(matching.MATCH_COLUMNS))
    if frame.empty:
        return []
    frame["day"] = pd.to_datetime(frame["event_time"], utc=True).dt.floor("D")
    frame["backfill"] = frame["matched_as"] == "earliest"
    summed: dict[Key, list[Any]] = {}
    for (run_id, day, backfill, version, role, sign), group in frame.groupby(
            ["run_id", "day", "backfill", "model_version", "run_role", "sign"], sort=False):
        model = versions[int(version)]
        key = (int(run_id), day.to_pydatetime(), bool(backfill), int(version), str(role))
        tally = int(sign) * _tally(model, group)
        if key in summed:
            summed[key][0] = summed[key][0] + tally
            summed[key][1] += int(sign) * len(group)
        else:
            summed[key] = [tally, int(sign) * len(group)]
    return [StoredTally(*key, tally.tolist(), labels) for key, (tally, labels) in summed.items()]


def _tally(model: registry.ModelVersion, group: pd.DataFrame) -> np.ndarray:
    if model.task == "regression":
        return tallies.regression(group["actual_value"].to_numpy(dtype=np.float64),
                                  group["prediction"].to_numpy(dtype=np.float64))
    classes = [str(c) for c in model.classes or []]
    proba = performance.probabilities(group["prediction"].tolist(), group["scores"].tolist(), classes)
    return tallies.classification(group["actual"].tolist(), group["predicted"].tolist(), proba, classes)


def performance_rows(stored: list[StoredTally], versions: Mapping[int, registry.ModelVersion],
                     config: MonitorConfig, *, sizes: Mapping[int, int],
                     in_window: Mapping[datetime, int]) -> list[PerformanceRow]:
    """Per run and per window (of ``config.window``), in-force and backfill apart: each metric
    with its interval and status. Pure."""
    runs: dict[tuple[Any, ...], list[Any]] = {}
    windows: dict[tuple[Any, ...], list[Any]] = {}
    for run_id, day, backfill, version, role, tally, labels in stored:
        vector = np.asarray(tally, dtype=np.float64)
        start = _window_start(day.astimezone(UTC), config.window)
        for groups, key in ((runs, (run_id, version, role, backfill)), (windows, (start, version, role, backfill))):
            if key in groups:
                groups[key][0] = groups[key][0] + vector
                groups[key][1] += labels
            else:
                groups[key] = [vector, labels]
    rows: list[PerformanceRow] = []
    for (run_id, version, role, backfill), (vector, labels) in sorted(runs.items()):
        size = sizes.get(run_id)
        rows += _rows(versions[version], config, vector, labels, scope="run", role=role, backfill=backfill,
                      run_id=run_id, predictions=size, coverage=labels / size if size else None)
    for (start, version, role, backfill), (vector, labels) in sorted(windows.items()):
        total = in_window.get(start)
        rows += _rows(versions[version], config, vector, labels, scope="window", role=role, backfill=backfill,
                      start=start, end=_window_end(start, config.window),
                      coverage=min(labels / total, 1.0) if total else None)
    return rows


def _rows(model: registry.ModelVersion, config: MonitorConfig, vector: np.ndarray, labels: int, *, scope: str,
          role: str, backfill: bool, run_id: int | None = None, start: datetime | None = None,
          end: datetime | None = None, predictions: int | None = None,
          coverage: float | None = None) -> list[PerformanceRow]:
    training = performance.training_values(model.training_metrics)
    reference = (model.training_metrics or {}).get("evaluated_on")
    return [PerformanceRow(model.name, model.version, scope, run_id, role, start, end, metric, value,
                           training.get(metric), estimated=False,
                           status=performance.judge(metric, value, low, high, training.get(metric),
                                                    tolerance=config.performance_tolerance, labels=labels,
                                                    min_labels=config.min_labels),
                           labels=labels, predictions=predictions, coverage=coverage, low=low, high=high,
                           backfill=backfill, reference=reference)
            for metric, (value, low, high) in tallies.metrics(model.task, len(model.classes or []), vector).items()]


def alerts(model_name: str, rows: list[PerformanceRow], config: MonitorConfig) -> list[Alert]:
    """A concept-drift alert per window of the served runs with a metric in alert; backfills
    only with ``config.backfill_alerts``, and apart."""
    degraded: dict[tuple[bool, datetime, int], list[PerformanceRow]] = defaultdict(list)
    for r in rows:
        if r.scope == "window" and r.run_role == "current" and r.status == "alert" and r.window_start \
                and (config.backfill_alerts or not r.backfill):
            degraded[(r.backfill, r.window_start, r.model_version)].append(r)
    out = []
    for (backfill, start, version), group in sorted(degraded.items()):
        first = group[0]
        reference = first.reference or "registration"
        names = ", ".join(f"{r.metric} {r.value:.4g} (95% interval {r.low:.4g} to {r.high:.4g}; "
                          f"{r.training_value:.4g} on {reference})" for r in group)
        kind = "backfill labels" if backfill else "labels"
        out.append(Alert(model_name, version, "concept_drift",
                         f"{'backfill' if backfill else 'window'}:{start:%Y-%m-%d}:v{version}",
                         f"performance degraded in the {config.window} of {start:%Y-%m-%d}: {names}, "
                         f"on {first.labels} {kind}", None,
                         {"window_start": start.isoformat(),
                          "window_end": first.window_end.isoformat() if first.window_end else None,
                          "labels": first.labels, "coverage": first.coverage,
                          "tolerance": config.performance_tolerance, "reference": first.reference,
                          "metrics": {r.metric: [r.value, r.low, r.high] for r in group}}))
    return out


def _window_start(day: datetime, window: str) -> datetime:
    if window == "day":
        return day
    if window == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _window_end(start: datetime, window: str) -> datetime:
    if window == "day":
        return start + timedelta(days=1)
    if window == "week":
        return start + timedelta(days=7)
    return (start.replace(day=1) + timedelta(days=32)).replace(day=1)
