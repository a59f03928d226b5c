"""`predstore score` and `predstore runs`: thin commands over batch and store (`predstore models` is in
models/cli.py)."""

from __future__ import annotations

import getpass
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from batch.executors import EXECUTORS, ExecutorSpec
from store import ledger
from store.db import connect
from store.errors import RunFailed
from store.migrate import prepare
from store.settings import Settings

if TYPE_CHECKING:  # the jobs (scikit-learn, pandas, pyarrow) load inside the commands that run them
    from batch.runner import Progress, RunResult

log = logging.getLogger("predstore.score")
#: The columns of `runs list`, and the keys of its --json.
RUN_KEYS = ("run_id", "status", "model_name", "model_version", "partition_key", "rows_in", "rows_rejected",
            "rows_per_s", "started_at")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_name", required=True, help="Registered model name.")
@click.option("--version", type=int, help="Model version (default: the current one).")
@click.option("--entity-col", help="Entity id column (default: the model's, else entity_id).")
@click.option("--partition", "partition_key", help="Partition key (default: the file or directory name).")
@click.option("--max-reject-fraction", type=float, default=0.05, show_default=True,
              help="Fail the run, publishing nothing, when more rows than this are rejected.")
@click.option("--force", is_flag=True, help="Score again even if this content was already published.")
@click.option("--snapshot", is_flag=True,
              help="The run is the model's whole served set: entities it lacks stop being served.")
@click.option("--gate/--no-gate", default=None,
              help="Hold the run, serving nothing of it, if it looks broken beside the last published batch "
                   "(default: the model's policy, `models configure --gate`).")
@click.option("--max-row-change", type=click.FloatRange(min=0, min_open=True), metavar="SHARE",
              help="The gate holds a run whose row count moved by this share or more from the partition's "
                   "previous run (default: the model's policy, else 0.5).")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: this machine's processes; dask: a dask.distributed cluster.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (local: 1 scores in this process; dask local: the cluster's size).")
@click.option("--dask-address", help="tcp://HOST:PORT of a Dask scheduler, or 'local' to start a LocalCluster.")
@click.option("--json", "as_json", is_flag=True, help="Print each run's summary as JSON.")
@click.pass_obj
def score(settings: Settings, paths: tuple[str, ...], model_name: str, version: int | None, entity_col: str | None,
          partition_key: str | None, max_reject_fraction: float, force: bool, snapshot: bool, gate: bool | None,
          max_row_change: float | None, executor: str, workers: int, dask_address: str | None,
          as_json: bool) -> None:
    """Score data partitions (Parquet file, directory of Parquet, or CSV) and publish the predictions.

    A partition is a local path or a URI: s3://bucket/prefix/dt=.../, gs://, abfs://, file://.

    Exit status: 0 published or skipped, 1 a run failed, 2 usage or configuration error, 5 a run was
    held by the publish gate (`predstore runs release` or `runs discard` decides).
    """
    if partition_key and len(paths) > 1:
        raise click.UsageError("--partition names one partition; give one PATH with it")
    from batch.runner import ScoreRequest, score_partition
    from store import storage

    spec = ExecutorSpec(kind=executor, workers=workers, dask_address=dask_address)
    failures = []
    for path in paths:
        request = ScoreRequest(path=storage.target(path), model_name=model_name, version=version, entity_col=entity_col,
                               partition_key=partition_key, max_reject_fraction=max_reject_fraction, force=force,
                               snapshot=snapshot, gate=gate, max_row_change=max_row_change, executor=spec)
        with _progress(storage.basename(path)) as progress:
            try:
                result: RunResult | None = score_partition(settings, request, progress=progress)
            except RunFailed as exc:
                failures.append(exc)
                result = exc.result
                if not as_json or result is None:
                    raise
        assert result is not None
        _report(result, as_json)
    if failures:
        raise failures[0]


@click.group()
def runs() -> None:
    """Inspect and verify scoring runs."""


@runs.command("list")
@click.option("--model", "model_name", help="Only this model's runs.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON: " + ", ".join(RUN_KEYS) + ".")
@click.pass_obj
def runs_list(settings: Settings, model_name: str | None, limit: int, as_json: bool) -> None:
    """The newest runs: status, counts, speed."""
    with _conn(settings) as conn:
        rows = ledger.list_runs(conn, model_name=model_name, limit=limit)
    if as_json:
        click.echo(json.dumps([{key: getattr(r, key) for key in RUN_KEYS} for r in rows], indent=2, default=str))
        return
    if not rows:
        click.echo("no runs yet; see `predstore score --help`")
    for r in rows:
        click.echo(f"{r.run_id:>6} {r.status:<10} {r.model_name} v{r.model_version:<3} "
                   f"{r.partition_key:<24} in {r.rows_in:>9} rejected {r.rows_rejected:>6} "
                   f"{(r.rows_per_s or 0):>10,.0f} rows/s  {r.started_at:%Y-%m-%d %H:%M:%S}")


@runs.command("show")
@click.argument("run_id", type=int)
@click.option("--rejects", type=int, default=10, show_default=True, help="How many rejected rows to show.")
@click.option("--json", "as_json", is_flag=True, help="The output is JSON either way "
              "(accepted like every command's --json).")
@click.pass_obj
def runs_show(settings: Settings, run_id: int, rejects: int, as_json: bool) -> None:
    """One run's ledger row and its first rejected rows, as JSON."""
    with _conn(settings) as conn:
        run = {**asdict(ledger.get_run(conn, run_id)),
               "rejected_sample": ledger.rejected_sample(conn, run_id, limit=rejects)}
    click.echo(json.dumps(run, indent=2, default=str))


@runs.command("verify")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON: run_id, match, rows_in, recorded, "
              "recomputed (the digests).")
@click.pass_obj
def runs_verify(settings: Settings, run_id: int, as_json: bool) -> None:
    """Re-score a run's recorded input with its recorded model and compare digests (publishes nothing).
    Exit status 1 when they differ."""
    from batch.runner import verify_run

    outcome = verify_run(settings, run_id)
    if as_json:
        click.echo(json.dumps(outcome, indent=2))
        if not outcome["match"]:
            sys.exit(1)
        return
    if outcome["match"]:
        click.echo(f"run {run_id} verified: {outcome['rows_in']} rows re-scored, digest {outcome['recorded'][:16]} "
                   "matches")
        return
    click.echo(f"run {run_id} does NOT verify: recorded {outcome['recorded'][:16]}, "
               f"recomputed {outcome['recomputed'][:16]}", err=True)
    sys.exit(1)


@runs.command("release")
@click.argument("run_id", type=int)
@click.pass_obj
def runs_release(settings: Settings, run_id: int) -> None:
    """Serve a run the publish gate held, as its publish would have (audited)."""
    from batch.held import release_run

    run = release_run(settings, run_id, actor=getpass.getuser())
    click.echo(f"released run {run_id}: {run.model_name} v{run.model_version} partition {run.partition_key!r} "
               f"is served from it")


@runs.command("discard")
@click.argument("run_id", type=int)
@click.pass_obj
def runs_discard(settings: Settings, run_id: int) -> None:
    """Drop a run the publish gate held; the partition's previous run stays served (audited)."""
    from batch.held import discard_run

    run = discard_run(settings, run_id, actor=getpass.getuser())
    click.echo(f"discarded run {run_id}: {run.model_name} v{run.model_version} partition {run.partition_key!r} "
               f"keeps its previous run")


@runs.command("prune")
@click.option("--model", help="Only this model's runs.")
@click.option("--older-than", "older_than", metavar="DURATION",
              help="Expire published runs older than this (90d, 12h, 2w), whatever the models' policies.")
@click.option("--dry-run", is_flag=True, help="List what would be dropped; change nothing.")
@click.option("--pace", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="After each run, rest this many times as long as it took (1: half speed, gentler on lookups).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.pass_obj
def runs_prune(settings: Settings, model: str | None, older_than: str | None, dry_run: bool, pace: float,
               as_json: bool) -> None:
    """Drop the runs past their model's retention (`models retain`, else PREDSTORE_KEEP_DAYS).

    An expired run's predictions stop being served (an entity that no other run holds answers 404)
    and its table is dropped; its ledger row, profile, drift and performance results stay.
    """
    from batch import retention

    try:
        age = retention.parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if age is None and settings.keep_days is None and model is None:
        log.debug("no --older-than and no PREDSTORE_KEEP_DAYS: only models with a policy are pruned")
    pruned = retention.prune_runs(settings, model=model, older_than=age, dry_run=dry_run, pace=pace)
    if as_json:
        click.echo(json.dumps(pruned.to_dict()))
        return
    verb = "would drop" if dry_run else "dropped"
    for run in pruned.runs:
        click.echo(f"{verb} run {run.run_id}: {run.model} v{run.model_version} partition {run.partition!r} "
                   f"({run.role}, {run.status}, published {run.published_at:%Y-%m-%d %H:%M}, {run.rows:,} rows, "
                   f"{run.bytes / 2**20:,.1f} MiB)")
    summary = pruned.to_dict()
    click.echo(f"{verb} {len(pruned.runs)} run(s), {summary['rows']:,} rows, {summary['bytes'] / 2**20:,.1f} MiB"
               + ("" if dry_run else f"; {pruned.entities_unserved:,} entities no longer served"))


@contextmanager
def _conn(settings: Settings) -> Iterator[Any]:
    with connect(prepare(settings), autocommit=True) as conn:
        yield conn


@contextmanager
def _progress(label: str) -> Iterator[Progress]:
    """A progress bar on a terminal; a log line per batch otherwise."""
    if not sys.stderr.isatty():
        yield lambda done, total: log.info("%s: %s of %s rows", label, f"{done:,}", f"{total:,}" if total else "?")
        return
    from rich.progress import Progress as Bar

    with Bar(transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _report(result: RunResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    for run in (result, result.challenger):
        if run is None:
            continue
        if run.status == "published":
            click.echo(f"{run.message} in {run.duration_s:.2f}s ({run.rows_per_s:,.0f} rows/s)")
        else:
            click.echo(run.message)
