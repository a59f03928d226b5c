"""`predstore monitor`, `predstore labels` and `predstore models compare`: thin commands over the
monitor's runner and its comparison of a model's current version with its challenger."""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from store.settings import Settings

if TYPE_CHECKING:  # the monitor (pandas, scipy, scikit-learn's metrics) loads inside the commands that run it
    from monitor.config import MonitorConfig
    from monitor.results import MonitorResult
    from store.performance import PerformanceRow

#: `models promote --challenger --if-better`: the evidence was not enough; nothing changed.
NOT_PROMOTED = 3
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
#: Metrics shown in the drift table, per column kind.
SHOWN = {"numeric": ("psi", "jensen_shannon", "wasserstein", "ks", "null_rate_change", "p_adjusted"),
         "categorical": ("psi", "jensen_shannon", "cohens_w", "unseen_share", "null_rate_change", "p_adjusted")}
HEADERS = ("psi", "js", "wass|w", "ks|unseen", "null +/-", "p (corr.)")


@click.group(invoke_without_command=True)
@click.option("--model", "model_name", help="Registered model name.")
@click.option("--run", "run_id", type=int, help="Check this run again (default: every run not checked yet).")
@click.option("--since", type=click.DateTime(DATE_FORMATS),
              help="Also check the window of runs published since this date (UTC unless it has an offset).")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the HTML report (one self-contained file) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def monitor(ctx: click.Context, model_name: str | None, run_id: int | None, since: datetime | None,
            report_path: Path | None, as_json: bool) -> None:
    """Check a model's runs for data and prediction drift against its training baseline, and its
    realized performance on the labels ingested so far; record the results and raise alerts.

    Exit status: 0 no alert, 1 an alert fired (or stands) for what was checked, 2 usage or
    configuration error, 6 the run failed (one line on stderr, such as "database unavailable: ..."
    when the database cannot be reached or went away mid-run; run it again). Alerts also go to
    PREDSTORE_ALERT_WEBHOOK when it is set.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not model_name:
        raise click.UsageError("--model is required")
    if run_id is not None and since is not None:
        raise click.UsageError("give --run or --since, not both")
    from monitor.config import MonitorConfig
    from monitor.runner import run_monitor, write_report
    from store.errors import ConfigError, MonitorFailed, NotFound, PredstoreError, SchemaOutdated

    settings: Settings = ctx.obj
    config = MonitorConfig.from_env()
    try:
        unprofiled = _setup(settings, model_name, config)
        result = run_monitor(settings, model_name, run_id=run_id, since=_utc(since), config=config)
        if report_path:
            write_report(settings, model_name, report_path)
    except (ConfigError, NotFound, SchemaOutdated):
        raise  # exit 2, as for every command
    except PredstoreError as exc:  # the run failed: exit 6, never an alert's 1
        raise MonitorFailed(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
    else:
        _print(result, report_path, unprofiled=unprofiled)
    if result.alerts or result.standing:
        ctx.exit(1)


@monitor.command("profile")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--model", "model_name", required=True, help="Registered model name.")
@click.option("--version", type=int, help="Model version (default: the current one).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def monitor_profile(settings: Settings, path: Path, model_name: str, version: int | None, as_json: bool) -> None:
    """Profile a data file (Parquet file or directory, or CSV) against a model's baseline, as a
    scoring run would, and show its drift. Records nothing. Exit status 1 when a feature drifted."""
    from monitor.config import MonitorConfig
    from monitor.files import profile_file

    config = MonitorConfig.from_env()
    _setup(settings, model_name, config)
    outcome = profile_file(settings, path, model_name, version=version, config=config)
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), default=str))
    else:
        click.echo(f"{path}: {outcome.rows_in:,} rows ({outcome.rows_rejected:,} the model would reject) against "
                   f"{outcome.model} v{outcome.model_version}: {_share(outcome.to_dict())}")
        _table([r.to_dict() for r in outcome.check.results])
    if outcome.check.drifted:
        click.get_current_context().exit(1)


@click.group()
def labels() -> None:
    """Ingest the true outcomes (labels) that arrive after scoring."""


@labels.command("ingest")
@click.argument("path")
@click.option("--model", "model_name", required=True, help="Registered model name.")
@click.option("--entity-col", required=True, help="Column holding the entity id.")
@click.option("--label-col", required=True, help="Column holding the label (a class, or a number).")
@click.option("--time-col", help="Column holding each label's event time (UTC unless it has an offset).")
@click.option("--event-time", type=click.DateTime(DATE_FORMATS),
              help="Without --time-col: when the labels happened (default: the file's modification time).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def labels_ingest(settings: Settings, path: str, model_name: str, entity_col: str, label_col: str,
                  time_col: str | None, event_time: datetime | None, as_json: bool) -> None:
    """Upsert labels from a Parquet or CSV file (a path, or an s3://, gs://, abfs:// or file:// URI).
    Idempotent: ingesting the same file again changes nothing; a changed label replaces the old one.
    Labels for entities never scored are kept, counted and reported. All or nothing: a database lost
    mid-ingest keeps none of the file's labels and exits 1 with one line ("database unavailable:
    ..."); ingest it again."""
    from monitor.labels import describe, ingest_labels
    from store import storage

    counts = ingest_labels(settings, storage.target(path), model_name=model_name, entity_col=entity_col,
                           label_col=label_col, time_col=time_col, event_time=_utc(event_time))
    if as_json:
        click.echo(json.dumps(counts))
        return
    click.echo(f"{storage.basename(path)} -> {model_name}: {counts['rows']:,} rows read, {counts['inserted']:,} new, "
               f"{counts['updated']:,} corrected, {counts['unchanged']:,} unchanged, {counts['repeated']:,} repeated "
               f"in the file, {counts['skipped']:,} skipped"
               + (f" ({describe(counts['skipped_by'])})" if counts["skipped"] else "")
               + (f", {odd['rows']:,} not a number (e.g. {odd['example']!r}, row {odd['row']}): kept, but never "
                  "compared with a prediction" if (odd := counts["not_a_number"]) else "")
               + (f", {counts['erased']:,} of erased entities left out" if counts["erased"] else ""))
    if counts["unscored"]:
        click.echo(f"{counts['unscored']:,} label(s) are for entities no retained run of {model_name} scored; "
                   "they are kept and will match if such a run is published")


@click.command("compare")
@click.argument("name")
@click.option("--since", type=click.DateTime(), help="Only runs published since this date.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True)
@click.option("--min-labels", type=click.IntRange(min=2), default=100, show_default=True,
              help="Labeled entities needed before any verdict.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Non-inferiority margin, in the metric's units (see `promote --margin`).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--report", type=click.Path(path_type=Path), help="Also write it as a self-contained HTML page.")
@click.pass_obj
def models_compare(settings: Settings, name: str, since: Any, confidence: float, min_labels: int, margin: float,
                   as_json: bool, report: Path | None) -> None:
    """Compare NAME's current version with its challenger on the rows both scored: realized
    metrics on the labels that arrived, each entity counted once (an interval for one look, and
    an anytime interval that the verdict uses), disagreement, output drift."""
    from monitor.compare import compare_models, render

    comparison = compare_models(settings, name, since=since, confidence=confidence, min_labels=min_labels,
                                margin=margin)
    if report:
        report.write_text(render(comparison), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(comparison.to_dict(), indent=2, default=str))
        return
    click.echo(f"{name}: v{comparison.current_version} (current) against v{comparison.challenger_version} "
               f"(challenger) on {comparison.paired_runs} paired runs, {comparison.rows:,} rows, "
               f"{comparison.entities:,} entities")
    for key, value in comparison.to_dict().items():
        if key not in ("history", "model", "current_version", "challenger_version"):
            click.echo(f"{key:<24} {_plain(value)}")
    click.echo(f"{comparison.verdict}: {comparison.evidence()}")


def _plain(value: Any) -> str:
    """A figure as a person reads it: fractions in four significant digits, '-' for none, a table
    as ``key value, ...`` and a pair as ``[low, high]``."""
    from monitor.report import fmt

    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return f"[{', '.join(_plain(v) for v in value)}]"
    if hasattr(value, "item") and not isinstance(value, str):  # a numpy scalar
        value = value.item()
    return str(value) if isinstance(value, int) else fmt(value)


def _setup(settings: Settings, model_name: str, config: MonitorConfig) -> int | None:
    """Warn of the config's ``[features.NAME]`` tables that are no column of the model; return its
    current version when that has no baseline (registered without training data), else None."""
    from models.profile import LABEL, PREDICTION
    from monitor.config import unknown_features
    from store import profiles, registry
    from store.db import connect
    from store.logs import say
    from store.migrate import prepare

    with connect(prepare(settings), autocommit=True) as conn:
        versions = registry.list_models(conn, model_name)
        profiled = profiles.output_baseline_sources(conn, model_name)
    if not versions:
        return None  # the run says there is no such model
    columns = list(dict.fromkeys(c.name for v in versions for c in v.feature_schema.columns))
    warning = unknown_features(config, model_name, [*columns, PREDICTION, LABEL])
    if warning:
        say(warning, level=logging.WARNING, name="monitor")
    current = next((v for v in versions if "current" in v.aliases), versions[0])
    return None if current.version in profiled else current.version


def _print(result: MonitorResult, report_path: Path | None, *, unprofiled: int | None = None) -> None:
    from monitor.report import fmt

    if not result.checks and unprofiled is not None:
        click.echo(f"{result.model}: v{unprofiled} has no baseline (it was registered without --train-data), so "
                   "drift cannot be checked; register a version with --train-data (its training rows) to give it one")
    elif not result.checks and not result.performance:
        click.echo(f"{result.model}: nothing new to check (every profiled run is checked; no new labels)")
    for check in result.checks:
        where = f"run {check.run_id} ({check.partition_key})" if check.scope == "run" \
            else f"live traffic of {check.window_start:%Y-%m-%d}" if check.run_role == "live" \
            else f"window of {len(check.run_ids)} runs"
        click.echo(f"\n{where}, v{check.model_version}: {check.rows:,} rows, {_share(asdict(check))}")
        _table(check.results)
        for note in check.notes:
            click.echo(f"  note: {note}")
    _performance_table([r for r in result.performance if r.scope == "window" and not r.backfill],
                       result.labels)
    backfill = [r for r in result.performance if r.scope == "run" and r.backfill and r.metric in
                ("accuracy", "mae")]
    if backfill:
        click.echo("backfill (labels older than every run holding their entity; judged apart, no alert): "
                   + ", ".join(f"run {r.run_id} {r.metric} {fmt(r.value)} on {r.labels}"
                               for r in backfill[-6:]))
    estimates: dict[int | None, list[PerformanceRow]] = {}
    for r in result.performance:
        if r.estimated:
            estimates.setdefault(r.run_id, []).append(r)
    if estimates:
        click.echo("\nexpected performance before labels (an estimate from the probabilities):")
        for run_id, rows in list(estimates.items())[-12:]:
            values = ", ".join(f"{r.metric} {fmt(r.value)}" for r in rows)
            statuses = sorted({r.status for r in rows} - {"ok", "n/a"}) or ["ok"]
            click.echo(f"  run {run_id}: {values}  {'/'.join(statuses)}")
    if result.lookups.get("lookups"):
        click.echo(f"\nlookups in the last 24 hours: {result.lookups['lookups']:,}, "
                   f"{result.lookups['miss_rate']:.1%} missed, {result.lookups['stale']:,} stale")
    for alert in result.alerts:
        click.echo(f"\nALERT {alert.kind} [{alert.scope}]: {alert.message}")
    for alert in result.standing[:5]:
        click.echo(f"\nalert {alert.kind} [{alert.scope}] (raised before, #{alert.alert_id}): {alert.message}")
    if len(result.standing) > 5:
        click.echo(f"\n... and {len(result.standing) - 5} more alerts raised before (see the alerts table)")
    if report_path:
        click.echo(f"\nreport: {report_path}")


def _performance_table(windows: list[PerformanceRow], labels: Mapping[str, int], *, last: int = 12) -> None:
    """One line per window and model version: its metrics side by side, and the worst status."""
    from monitor.report import fmt

    if not windows:
        return
    metrics = list(dict.fromkeys(r.metric for r in windows))
    registered = {r.metric: r.training_value for r in windows if r.training_value is not None}
    groups: dict[tuple[Any, ...], dict[str, PerformanceRow]] = {}
    for r in windows:
        groups.setdefault((r.window_start, r.model_version, r.run_role), {})[r.metric] = r
    click.echo(f"\nrealized performance ({labels.get('matched', 0):,} of {labels.get('labels', 0):,} labels matched"
               + (f"; at registration: {', '.join(f'{m} {fmt(v)}' for m, v in registered.items())}" if registered
                  else "") + "):")
    click.echo(f"  {'window':<11} {'ver':<4} {'runs':<10} {'labels':>7} {'cover':>6}"
               + "".join(f" {m:>9}" for m in metrics) + "  status")
    keys = sorted(groups)
    if len(keys) > last:
        click.echo(f"  ... {len(keys) - last} earlier windows (see --json or --report)")
    rank = {"n/a": 0, "ok": 1, "warning": 2, "alert": 3}
    for start, version, role in keys[-last:]:
        cells = groups[(start, version, role)]
        first = next(iter(cells.values()))
        worst = max((c.status for c in cells.values()), key=rank.__getitem__)
        click.echo(f"  {start:%Y-%m-%d}  v{version:<3} {role:<10} {first.labels:>7} {(first.coverage or 0):>6.0%}"
                   + "".join(f" {fmt(cells[m].value) if m in cells else '':>9}" for m in metrics) + f"  {worst}")
    if "roc_auc" in metrics:
        from monitor.tallies import BINNED_AUC

        click.echo(f"  ({BINNED_AUC})")


def _share(check: dict[str, Any]) -> str:
    drifted = check["drifted"]
    text = f"{len(drifted)} of {check['features']} features drifted"
    if drifted:
        text += f" ({', '.join(drifted)})"
    return text + (" - dataset drift" if check.get("dataset_drift") else "")


def _table(results: Sequence[dict[str, Any]]) -> None:
    from monitor.report import fmt

    by_column: dict[str, dict[str, Any]] = {}
    for r in results:
        by_column.setdefault(r["column_name"], {"kind": r["kind"]})[r["metric"]] = r
    click.echo(f"  {'column':<24} {'verdict':<8}" + "".join(f" {h:>9}" for h in HEADERS))
    for name, metrics in by_column.items():
        verdict = metrics.get("drift", {}).get("status", "n/a")
        cells = "".join(f" {fmt(metrics[m]['value']) if m in metrics else '':>9}" for m in SHOWN[metrics["kind"]])
        click.echo(f"  {name[:24]:<24} {verdict:<8}{cells}")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@click.command("promote")
@click.argument("name")
@click.argument("version", type=int, required=False)
@click.option("--as", "alias", type=click.Choice(["current", "challenger"]), default="current", show_default=True,
              help="challenger: score beside the current version, served only by ?version=.")
@click.option("--challenger", "from_challenger", is_flag=True, help="Promote the challenger to current.")
@click.option("--if-better", is_flag=True, help="With --challenger: only if `models compare` finds it better "
              "(anytime-valid: safe to ask after every ingest).")
@click.option("--min-labels", type=click.IntRange(min=2), default=100, show_default=True,
              help="With --if-better: labeled entities needed before any verdict.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --if-better: also promote a challenger whose loss is known to be at most this much "
              "above the current one's (non-inferiority, in the metric's units).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="With --if-better: confidence of the anytime interval.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON: name, alias, before, version, "
              "promoted, and with --if-better the verdict and its evidence.")
@click.pass_obj
def models_promote(settings: Settings, name: str, version: int | None, alias: str, from_challenger: bool,
                   if_better: bool, min_labels: int, margin: float, confidence: float, as_json: bool) -> None:
    """Make VERSION the current version of NAME (the previous one stays, for rollback), or its
    challenger (--as challenger); or promote the challenger (--challenger [--if-better]).

    Exit status: 0 promoted, 3 with --if-better when the evidence is not enough (nothing
    changed), 2 usage or configuration error.
    """
    if from_challenger == (version is not None):
        raise click.UsageError("give a VERSION, or --challenger (not both)")
    if if_better and not from_challenger:
        raise click.UsageError("--if-better goes with --challenger")
    from models.promotion import promote_model

    evidence = None
    if from_challenger:
        if if_better:
            from monitor.compare import compare_models

            evidence = compare_models(settings, name, confidence=confidence, min_labels=min_labels, margin=margin)
            if not evidence.verdict.promotes:
                if as_json:
                    _promoted(name, "current", evidence.current_version, evidence.challenger_version, evidence,
                              promoted=False)
                else:
                    click.echo(f"{name}: challenger v{evidence.challenger_version} not promoted: "
                               f"{evidence.verdict} ({evidence.evidence()})")
                click.get_current_context().exit(NOT_PROMOTED)
        promotion = promote_model(settings, name, actor=getpass.getuser(),
                                  evidence=evidence.to_dict() if evidence else None)
        before, version = promotion.before, promotion.version
        why = f": {evidence.verdict} ({evidence.evidence()})" if evidence else ""
        if as_json:
            _promoted(name, "current", before, version, evidence)
            return
        click.echo(f"{name}: current version {before if before else 'none'} -> {version} (was the challenger){why}")
        return
    assert version is not None
    before = promote_model(settings, name, version, alias=alias, actor=getpass.getuser()).before
    if as_json:
        _promoted(name, alias, before, version, None)
        return
    click.echo(f"{name}: {alias} version {before if before else 'none'} -> {version}")


def _promoted(name: str, alias: str, before: int | None, version: int, evidence: Any, *,
              promoted: bool = True) -> None:
    """`models promote --json`: what changed (or, not promoted, what would have)."""
    click.echo(json.dumps({"name": name, "alias": alias, "before": before, "version": version, "promoted": promoted,
                           **({"verdict": str(evidence.verdict), "evidence": evidence.to_dict()} if evidence else {})},
                          indent=2, default=str))
