"""The monitor job: the I/O shell around `monitor.stats` (drift) and `monitor.evaluate` (performance).

`run_monitor` checks what is missing for a model and records it in one transaction: drift of each
profiled run not checked yet (or of the runs asked for, and of their window), realized
performance when labels or runs changed since it was last computed, and expected performance of
classifier runs not estimated yet. It then raises alerts (once per kind and scope), logs them and
sends them to the webhook. The scheduler calls it as ``run_monitor(settings, model_name)``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import psycopg

from monitor import diagnostics, evaluate, realized, report, sequential, stats
from monitor import live as live_traffic
from monitor.alerts import Alert, deliver
from monitor.config import MonitorConfig
from monitor.errors import store_errors
from monitor.results import Found, MonitorResult, RecordedCheck
from store import faults, ledger, live, lookups, monitoring, profiles, prometheus, registry, reports
from store import performance as perf
from store.db import connect
from store.errors import ConfigError, NotFound
from store.migrate import prepare
from store.settings import Settings

log = logging.getLogger("predstore.monitor")


def run_monitor(settings: Settings, model_name: str, *, run_id: int | None = None, since: datetime | None = None,
                config: MonitorConfig | None = None) -> MonitorResult:
    """Compute what is missing for ``model_name``, record it, raise and send alerts; export its figures
    for Prometheus (`_export`)."""
    config = config or MonitorConfig.from_env()
    result = Found(model=model_name)
    try:
        latest = _monitor(settings, model_name, run_id, since, config, result)
    except (ConfigError, NotFound):
        raise  # no such model, or a run of another: nothing was monitored, so nothing to report
    except BaseException:
        _export(settings, result, None, succeeded=False)
        raise
    _export(settings, result, latest, succeeded=True)
    return result.done()


def _monitor(settings: Settings, model_name: str, run_id: int | None, since: datetime | None, config: MonitorConfig,
             result: Found) -> dict[str, Any] | None:
    """`run_monitor`'s work; returns the model's latest drift check (`monitoring.latest_check`)."""
    url = prepare(settings)
    with store_errors(f"monitoring {model_name}", conninfo=url), \
            connect(url, application_name="predstore-monitor") as conn:
        with conn.transaction():
            monitoring.lock_model(conn, model_name)
            faults.point("monitor")
            versions = {m.version: m for m in registry.list_models(conn, model_name)}
            if not versions:
                registry.get_model(conn, model_name)  # raises NotFound, saying what exists
            if run_id is not None and ledger.get_run(conn, run_id).model_name != model_name:
                raise ConfigError(f"run {run_id} is not a run of model {model_name!r}")
            candidates = _check_drift(conn, model_name, versions, run_id, since, config, result)
            for outcome in (realized.update(conn, model_name, versions, config, force=since is not None),
                            evaluate.estimated(conn, model_name, versions, config)):
                result.performance += outcome.rows
                result.labels = outcome.labels or result.labels
                candidates += outcome.alerts
            candidates += _misses(conn, model_name, config, result)
            _raise(conn, model_name, candidates, result)
            latest = monitoring.latest_check(conn, model_name)
            # Alerts the scoring job raised (runs held by the publish gate) go to the webhook with these.
            pending = [Alert(model_name, row["model_version"], row["kind"], row["scope_key"], row["message"],
                             row["run_id"], row["details"] or {}, row["alert_id"])
                       for row in monitoring.undelivered_alerts(conn, model_name, kinds=["held_run"])
                       ] if config.webhook_url else []
        for alert in [*result.alerts, *pending]:
            log.warning("ALERT %s %s (%s): %s", alert.kind, model_name, alert.scope, alert.message)
            if config.webhook_url:
                error = deliver(config.webhook_url, alert, timeout=config.webhook_timeout,
                                retries=config.webhook_retries)
                if error:
                    log.error("alert %s could not be sent to the webhook: %s", alert.alert_id, error)
                with conn.transaction():
                    monitoring.mark_delivered(conn, alert.alert_id or 0, error=error)
    return latest


def _export(settings: Settings, result: Found, latest: dict[str, Any] | None, *, succeeded: bool) -> None:
    """The model's figures for Prometheus (`store.prometheus`): the drift share of its latest served run's
    check, the alerts this run raised and those that stand, and, on success, the time of this check."""
    prometheus.export(settings, "monitor", {"model": result.model}, {
        "drift_share": latest["drift_share"] if latest else None,
        "dataset_drift": float(latest["dataset_drift"]) if latest and latest["dataset_drift"] is not None else None,
        "checks": len(result.checks) if succeeded else None,
        "alerts_raised": len(result.alerts) if succeeded else None,
        "alerts_standing": len(result.standing) if succeeded else None,
    }, succeeded=succeeded)


# --- drift ---------------------------------------------------------------------------------


def _check_drift(conn: psycopg.Connection, model_name: str, versions: Mapping[int, registry.ModelVersion],
                 run_id: int | None, since: datetime | None, config: MonitorConfig,
                 result: Found) -> list[Alert]:
    baselines: dict[int, list[dict[str, Any]]] = {}

    def baseline(version: int) -> list[dict[str, Any]]:
        if version not in baselines:
            baselines[version] = profiles.get_baseline(conn, model_name, version)
        return baselines[version]

    runs = monitoring.profiled_runs(conn, model_name, run_id=run_id, since=since, unchecked=run_id is None)
    if run_id is not None and not runs:
        raise NotFound(f"run {run_id} has no profile to check: it was not published, or its model version "
                       "has no baseline (register it with --train-data)")
    alerts = []
    for run in runs:
        base = baseline(run["model_version"])
        if not base:
            continue  # registered without --train-data: nothing to compare with
        monitoring.delete_run_check(conn, run["run_id"])
        profile = profiles.get_run_profiles(conn, [run["run_id"]])
        alerts += _record_check(conn, model_name, run["model_version"], base, profile, config, result,
                                scope="run", run=run, run_ids=[run["run_id"]])
    if since is not None:  # the served runs only: a challenger's rows are the same inputs again
        window = [r for r in monitoring.profiled_runs(conn, model_name, since=since) if r["run_role"] == "current"]
        for version, group in groupby(sorted(window, key=lambda r: r["model_version"]),
                                      key=lambda r: r["model_version"]):
            members = list(group)
            base = baseline(version)
            if not base:
                continue
            ids = [r["run_id"] for r in members]
            alerts += _record_check(conn, model_name, version, base, profiles.get_run_profiles(conn, ids), config,
                                    result, scope="window", run=None, run_ids=ids, start=since,
                                    end=max(r["published_at"] for r in members),
                                    partitions=[r["partition_key"] for r in members])
    if run_id is None:  # live traffic, per UTC day: the newest day checked again, as it may have grown
        start = live.last_checked(conn, model_name) or datetime.now(UTC) - timedelta(days=live_traffic.LOOKBACK_DAYS)
        for day, version in live.days(conn, model_name, since=start):
            if version in versions and (base := baseline(version)):
                live.delete_check(conn, model_name, version, day)
                counted = live_traffic.profile(live.of_day(conn, model_name, version, day), base,
                                               versions[version].feature_schema, versions[version].classes)
                alerts += _record_check(conn, model_name, version, base, counted, config, result, scope="window",
                                        run=None, run_ids=[], start=day, end=day + timedelta(days=1), role="live")
    return alerts


def _record_check(conn: psycopg.Connection, model_name: str, version: int, base: list[dict[str, Any]],
                  profile: dict[str, dict[str, Any]], config: MonitorConfig, result: Found, *, scope: str,
                  run: dict[str, Any] | None, run_ids: list[int], start: datetime | None = None,
                  end: datetime | None = None, role: str | None = None,
                  partitions: list[str] | None = None) -> list[Alert]:
    checked = stats.check(base, profile, config.drift)
    dataset_drift = checked.dataset_drift(config.drift)
    role = role or (run["run_role"] if run else "current")
    gradual: dict[str, tuple[float, float]] = {}
    if run and role == "current":  # served runs, in order; a new current version starts from 0
        last_version, state = monitoring.previous_cusum(conn, model_name, run["run_id"])
        rows, alarms, h = sequential.advance(base, profile, state if last_version == version else {}, config.cusum)
        checked.results.extend(rows)
        flagged = {*checked.drifted, *checked.outputs_drifted}  # alerted by this run already
        gradual = {name: cusum for name, cusum in alarms.items() if name not in flagged}
    check_id = monitoring.insert_check(
        conn, model_name=model_name, model_version=version, scope=scope, run_id=run["run_id"] if run else None,
        run_ids=run_ids, run_role=role, window_start=start, window_end=end, rows=checked.rows,
        features=checked.features,
        drifted=len(checked.drifted), drift_share=checked.drift_share, dataset_drift=dataset_drift)
    monitoring.insert_drift_results(conn, check_id, (r.to_dict() for r in checked.results))
    key = f"run:{run['run_id']}" if run else f"live:{start:%Y-%m-%d}:v{version}" if role == "live" \
        else f"window:{start:%Y-%m-%dT%H:%M}..{end:%Y-%m-%dT%H:%M}:v{version}"
    where = f"run {run['run_id']} ({run['partition_key']})" if run else \
        f"live traffic of {start:%Y-%m-%d} (v{version})" if role == "live" else f"runs published since {start:%Y-%m-%d}"
    result.checks.append(RecordedCheck(
        check_id, scope, key, version, role, run["run_id"] if run else None, run["partition_key"] if run else None,
        tuple(run_ids), start, checked.rows, checked.features, tuple(checked.drifted), checked.drift_share,
        dataset_drift, tuple(checked.outputs_drifted), tuple(checked.warnings), tuple(checked.notes),
        tuple(r.to_dict() for r in checked.results)))
    alerts: list[Alert] = []
    if role not in ("current", "live"):
        return alerts  # a challenger is judged on its own checks, and alerts nobody
    run_id = run["run_id"] if run else None
    # What explains it, for a hook that retrains: the partitions and rows checked, or the window.
    details = {"check_id": check_id, "run_ids": run_ids, "drift_share": checked.drift_share,
               "dataset_drift": dataset_drift, "rows": checked.rows,
               "partitions": [run["partition_key"]] if run else partitions or [],
               "window": [start.isoformat(), end.isoformat()] if start and end else None}
    if checked.drifted:
        share = f"{len(checked.drifted)} of {checked.features} features"
        alerts.append(Alert(model_name, version, "data_drift", key,
                            f"data drift in {where}: {share} drifted ({', '.join(checked.drifted)})"
                            + (" - the dataset drifted" if dataset_drift else ""), run_id,
                            {**details, "features": checked.drifted}))
    if checked.outputs_drifted:
        alerts.append(Alert(model_name, version, "prediction_drift", key,
                            f"prediction drift in {where}: {', '.join(checked.outputs_drifted)} drifted", run_id,
                            {**details, "outputs": checked.outputs_drifted}))
    if gradual:
        alerts.append(Alert(model_name, version, "gradual_drift", key,
                            f"gradual drift up to {where}: a small persistent shift in {', '.join(gradual)} "
                            f"(CUSUM over the served runs past {h:.3g})", run_id,
                            {**details, "columns": list(gradual), "cusum": gradual, "h": h}))
    return alerts


# --- alerts --------------------------------------------------------------------------------


def _misses(conn: psycopg.Connection, model_name: str, config: MonitorConfig, result: Found) -> list[Alert]:
    """The lookup API's miss rate over the last 24 hours, and a ``miss_rate`` alert (once a day) when
    it is above ``config.miss_rate`` on at least ``miss_min_lookups`` entities asked for: a client
    asking for entities that were never scored is a pipeline gap."""
    hits, misses, stale, today = lookups.lookup_totals(conn, model_name)
    asked = hits + misses
    rate = misses / asked if asked else None
    result.lookups = {"lookups": asked, "misses": misses, "stale": stale, "miss_rate": rate}
    if config.miss_rate is None or rate is None or asked < config.miss_min_lookups or rate <= config.miss_rate:
        return []
    return [Alert(model_name, None, "miss_rate", f"day:{today}",
                  f"{rate:.1%} of the {asked:,} entities asked of {model_name} in the last 24 hours had no "
                  f"prediction served (limit {config.miss_rate:.1%}): are they scored?",
                  details={"lookups": asked, "misses": misses, "miss_rate": rate, "limit": config.miss_rate})]


def _raise(conn: psycopg.Connection, model_name: str, candidates: list[Alert], result: Found) -> None:
    """Record each alert once per (kind, scope): new ones go to ``alerts``, earlier ones to ``standing``."""
    standing_keys = []
    for alert in candidates:
        alert_id = monitoring.insert_alert(conn, model_name=model_name, model_version=alert.model_version,
                                           kind=alert.kind, scope_key=alert.scope, run_id=alert.run_id,
                                           message=alert.message, details=alert.details)
        if alert_id is None:
            standing_keys.append((alert.kind, alert.scope))
        else:
            result.alerts.append(Alert(**{**asdict(alert), "alert_id": alert_id}))
    if standing_keys:
        for row in monitoring.find_alerts(conn, model_name, [scope for _, scope in standing_keys]):
            if (row["kind"], row["scope_key"]) in standing_keys:
                result.standing.append(Alert(model_name, row["model_version"], row["kind"], row["scope_key"],
                                             row["message"], row["run_id"], row["details"] or {}, row["alert_id"],
                                             new=False))


# --- the report ----------------------------------------------------------------------------


def write_report(settings: Settings, model_name: str, path: Path, *, max_histograms: int = 12,
                 max_windows: int = 6, sample: int = 1000) -> Path:
    """Write the model's HTML report (one self-contained file) to ``path``."""
    page = report.render(report_data(settings, model_name, max_histograms=max_histograms, max_windows=max_windows,
                                     sample=sample))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path} ({exc.strerror or exc})") from exc
    return path


def report_data(settings: Settings, model_name: str, *, max_histograms: int = 12, max_windows: int = 6,
                sample: int = 1000) -> report.ReportData:
    """What the report shows, read from the store: for a classifier, the confusion and reliability
    of its newest ``max_windows`` windows; for a regressor, its newest ``sample`` matched labels."""
    with connect(prepare(settings), autocommit=True) as conn:
        return gather_report(conn, model_name, max_histograms=max_histograms, max_windows=max_windows, sample=sample)


def gather_report(conn: psycopg.Connection, model_name: str, *, max_histograms: int = 12, max_windows: int = 6,
                  sample: int | None = 1000, parts: Collection[str] = ("drift", "performance"),
                  history: int = 200) -> report.ReportData:
    """`report_data` on an open connection: its ``parts`` (drift, performance) only, drift over time
    of the newest ``history`` checks; ``sample=None`` leaves a regressor's matched labels
    (prediction-level rows) out. Each read is bounded by these limits, not by the store's age."""
    versions = registry.list_models(conn, model_name)
    if not versions:
        registry.get_model(conn, model_name)  # raises NotFound, saying what exists
    latest = monitoring.latest_check(conn, model_name) if "drift" in parts else None
    rows: list[dict[str, Any]] = []
    bars: list[report.Histogram] = []
    notes: list[str] = []
    if latest is not None:
        rows = monitoring.check_drift(conn, latest["check_id"])
        base = profiles.get_baseline(conn, model_name, latest["model_version"])
        profile = profiles.get_run_profiles(conn, list(latest["run_ids"]))
        bars = histograms(base, profile, rows, max_histograms)
        notes = stats.baseline_notes(base)
    performance = perf.performance_history(conn, model_name) if "performance" in parts else []
    task = versions[0].task
    windows: list[diagnostics.WindowDiagnostics] = []
    matches: list[diagnostics.Match] = []
    if task == "regression" and sample is not None and "performance" in parts:
        matches = diagnostics.matches(reports.recent_matches(conn, model_name, limit=sample))
    elif task != "regression" and (newest := diagnostics.windows_of(performance)[:max_windows]):
        stored = monitoring.tallies(conn, model_name, since=min(w.start for w in newest), role="current")
        windows = diagnostics.by_window(stored, newest, {v.version: [str(c) for c in v.classes or []]
                                                         for v in versions})
    return report.ReportData(
        model=model_name, task=task, generated_at=datetime.now().astimezone(), latest=latest,
        latest_rows=rows, histograms=bars,
        history=monitoring.drift_history(conn, model_name, limit=history) if "drift" in parts else [],
        performance=performance, alerts=monitoring.recent_alerts(conn, model_name), notes=notes,
        windows=windows, matches=matches, live=live.checks(conn, model_name) if "drift" in parts else [])


def histograms(base: list[dict[str, Any]], profile: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
               limit: int, *, every: bool = False) -> list[report.Histogram]:
    """Baseline-against-batch bins of the drifted columns (else of the outputs and the three
    features that moved most), or of ``every`` column the run profiled."""
    by_name = {r["column_name"]: r for r in rows}
    drifted = [r["column_name"] for r in rows if r.get("drifted")]
    if every:
        drifted = list(profile)
    elif not drifted:
        moved = sorted((r for r in rows if r["role"] == "feature"),
                       key=lambda r: -(r.get(report.TREND_METRIC[r["kind"]]) or 0))
        drifted = [r["column_name"] for r in rows if r["role"] == "output"] + [r["column_name"] for r in moved[:3]]
    out: list[report.Histogram] = []
    for column in base:
        name = column["column_name"]
        if name not in drifted or name not in profile or len(out) >= limit:
            continue
        seen = profile[name]
        row = by_name.get(name, {})
        metric = report.TREND_METRIC[column["kind"]]
        headline = f"{metric} {report.fmt(row.get(metric))}, psi {report.fmt(row.get('psi'))}" if row else ""
        out.append(report.Histogram(column=name, labels=report.bin_labels(column),
                                    baseline=report.shares(column["counts"], column["null_count"]),
                                    batch=report.shares(seen["counts"], seen["null_count"]),
                                    status=row.get("status") or "n/a", headline=headline))
    return out
