"""The scoring job's coordinator: one partition in, one published run out (or skipped, or failed).

It records the run in the ledger, creates the run's table (not attached, so invisible), has the
partition's slices scored into it by tasks (in this process, in local worker processes or on
Dask; see `batch.tasks`), and then, in one short transaction, builds the table's index, attaches
it to ``predictions`` and flips the ledger: readers see the previous run or this one, never part
of it. A failed run's table is dropped; a run whose process died is marked abandoned, and its
table dropped, by the next run of its partition.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import psycopg

from batch import faults, metrics, profile, reader
from batch.executors import ExecutorSpec, run_tasks
from batch.tasks import Target, TaskContext, TaskResult, digest_task, run_digest
from batch.validate import check_columns, required_columns
from store import ledger, predictions, profiles, registry
from store.db import connect, without_password
from store.errors import ConfigError, InputError, NotFound, PredstoreError, RunFailed, first_line, from_database
from store.migrate import prepare
from store.settings import Settings

log = logging.getLogger("predstore.batch.runner")

DEFAULT_ENTITY_COL = "entity_id"

#: Called as rows are done with (rows done so far, total rows or None).
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class ScoreRequest:
    """What to score, with which model, how strictly, and where (a local path, or an object-store URI)."""

    path: Path | str
    model_name: str
    version: int | None = None
    entity_col: str | None = None
    partition_key: str | None = None
    max_reject_fraction: float = 0.05
    force: bool = False
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)


@dataclass
class RunResult:
    """The outcome of one scoring run, as the ledger records it."""

    status: str
    model: str
    model_version: int
    partition: str
    run_id: int | None = None
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_bytes: int = 0
    superseded_run: int | None = None
    message: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    #: The run of the model's challenger, scored in the same pass, if it has one.
    challenger: RunResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_partition(settings: Settings, request: ScoreRequest, *, progress: Progress | None = None) -> RunResult:
    """Score one partition and publish it; raises `RunFailed` (carrying the result) if the run fails.

    When the model has a challenger (and no --version is asked for), the partition is scored by
    both in the same pass, into two runs that publish together or not at all; the result of the
    challenger's run is ``result.challenger``.
    """
    if not 0 <= request.max_reject_fraction <= 1:
        raise ConfigError(f"--max-reject-fraction {request.max_reject_fraction} must be between 0 and 1")
    url = prepare(settings)
    partition = reader.open_partition(request.path, key=request.partition_key)
    with connect(url, autocommit=True, application_name="predstore-score") as control:
        roles = _roles(control, request)
        current = roles["current"]
        entity_col = request.entity_col or current.feature_schema.get("entity_col") or DEFAULT_ENTITY_COL
        for run_id in ledger.reap_abandoned(control, model_name=current.name, partition_key=partition.key):
            predictions.drop_run_table(control, run_id)
            log.warning("run %s was left running by a process that died; marked abandoned", run_id)
        results = {role: RunResult(status="running", model=m.name, model_version=m.version, partition=partition.key)
                   for role, m in roles.items()}
        due = {}
        for role, model_row in roles.items():
            published = ledger.find_published(control, model_row.name, partition.key, role)
            if (published is not None and not request.force
                    and ledger.is_current(published, model_row.version, partition.fingerprint)):
                _skip(control, model_row, partition, published, results[role], role)
            else:
                due[role] = model_row
        try:
            if due:
                _score(settings, url, control, due, partition, entity_col, request, results, progress)
        finally:
            for role, run in results.items():
                _export(settings, run, role)
    result = results["current"]
    result.challenger = results.get("challenger")
    return result


def _export(settings: Settings, result: RunResult, role: str) -> None:
    metrics.export(settings, "score", {"model": result.model, "role": role}, {
        "rows_in": result.rows_in, "rows_scored": result.rows_scored, "rows_rejected": result.rows_rejected,
        "duration_seconds": result.duration_s, "rows_per_second": result.rows_per_s,
        "peak_rss_bytes": result.peak_rss_bytes,
    }, succeeded=result.status in ("published", "skipped"), status=result.status)


def _roles(control: psycopg.Connection, request: ScoreRequest) -> dict[str, registry.ModelVersion]:
    """The model versions to score with: the one asked for, or the current one and its challenger."""
    model_row = registry.get_model(control, request.model_name, version=request.version)
    roles = {"current": model_row}
    if request.version is None:
        try:
            challenger = registry.get_model(control, request.model_name, alias="challenger")
        except NotFound:
            return roles
        if challenger.version != model_row.version:
            roles["challenger"] = challenger
    return roles


def _score(settings: Settings, url: str, control: psycopg.Connection, due: dict[str, registry.ModelVersion],
           partition: reader.Partition, entity_col: str, request: ScoreRequest, results: dict[str, RunResult],
           progress: Progress | None) -> None:
    """Run the due roles' runs together: they publish together or fail together."""
    run_ids: dict[str, int] = {}
    try:
        for role, model_row in due.items():
            run_ids[role] = ledger.start_run(
                control, model_name=model_row.name, model_version=model_row.version, model_sha256=model_row.sha256,
                partition_key=partition.key, input_uri=partition.uri, code_version=_code_version(),
                host=socket.gethostname(), pid=os.getpid(), role=role,
            )
            results[role].run_id = run_ids[role]
        _note_fingerprint(url, partition, list(run_ids.values()))
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            faults.point("run_started")
            _run(url, control, run_ids, due, partition, entity_col, request, results, progress)
            for role, model_row in due.items():
                _apply_retention(control, model_row.name, partition.key, keep=settings.keep_runs, role=role)
        except (Exception, KeyboardInterrupt) as exc:  # whatever it was, the runs fail cleanly
            if not isinstance(exc, PredstoreError | psycopg.Error | KeyboardInterrupt):
                log.debug("unexpected error in the run", exc_info=exc)  # the traceback, with --verbose
            _after_error(control, run_ids, results, exc, url=url, partition=partition, started=started,
                         cpu_started=cpu_started)
    finally:
        for run_id in run_ids.values():
            with suppress(psycopg.Error):  # a lost connection has released its locks already
                ledger.release_run(control, run_id)


def _after_error(control: psycopg.Connection, run_ids: dict[str, int], results: dict[str, RunResult],
                 exc: BaseException, *, url: str, partition: reader.Partition, started: float,
                 cpu_started: float) -> None:
    """Settle the runs after ``exc``, going by what the ledger says now, not by how far the code got.

    Runs the ledger shows published (the error came after the publish COMMIT: in retention, on
    closing the connection, a lost COMMIT acknowledgement) stay published with their tables, and
    the error is only logged; Ctrl-C is raised again. Runs still running are failed and their
    tables dropped. If the ledger cannot be read, nothing is touched: the next run of the
    partition marks them abandoned.
    """
    message = _describe(exc, url)
    first = run_ids.get("current") or next(iter(run_ids.values()))
    try:
        now = ledger.statuses(control, list(run_ids.values()))
    except psycopg.Error:
        raise _run_failed(results, f"run {first} did not finish: {message}; once the database is back, "
                                   f"`predstore runs show {first}` tells whether it was published, and the "
                                   "next run of the partition marks it abandoned if not") from exc
    if all(now.get(run_id) == "published" for run_id in run_ids.values()):
        for role in run_ids:
            results[role].status = "published"
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        log.warning("run %s was published; after that: %s", first, message)
        return
    for role, run_id in run_ids.items():
        result = results[role]
        result.status, result.message = "failed", message
        _measure(result, started)
        if now.get(run_id) != "running":
            continue  # marked by another process meanwhile: its table is theirs to drop
        predictions.drop_run_table(control, run_id)
        ledger.finish_run(control, run_id, status="failed", error=message,
                          input_fingerprint=_fingerprint_if_readable(partition),
                          **_counts(result), cpu_seconds=time.process_time() - cpu_started)
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    raise _run_failed(results, f"run {first} failed, nothing was published: {message}") from exc


def _run_failed(results: dict[str, RunResult], message: str) -> RunFailed:
    current = results["current"]
    return RunFailed(message, run_id=current.run_id, result=current)


def _note_fingerprint(url: str, partition: reader.Partition, run_ids: list[int]) -> None:
    """Write the input's fingerprint into the running rows once it is computed (in its own thread)."""

    def note(done: Future[str]) -> None:
        if done.exception() is not None:
            return  # the run reads it again and reports the error
        try:
            with connect(url, autocommit=True, application_name="predstore-score") as conn:
                for run_id in run_ids:  # one row per statement: never waits holding another row's lock
                    ledger.note_fingerprint(conn, run_id, done.result())
        except (PredstoreError, psycopg.Error) as exc:
            log.debug("could not record the input fingerprint of runs %s: %s", run_ids, exc)

    partition.pending_fingerprint.add_done_callback(note)


def _run(url: str, control: psycopg.Connection, run_ids: dict[str, int], due: dict[str, registry.ModelVersion],
         partition: reader.Partition, entity_col: str, request: ScoreRequest, results: dict[str, RunResult],
         progress: Progress | None) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    roles = list(due)
    ctx = _context(url, entity_col, control, partition, request.max_reject_fraction,
                   [(run_ids[role], due[role]) for role in roles])
    slices = reader.plan(partition, pieces=request.executor.pieces)
    ctx = replace(ctx, url=task_url(url, request.executor), sole_task=len(slices) == 1)
    total = sum(s.rows or 0 for s in slices) if all(s.rows is not None for s in slices) else None
    with control.transaction():
        for run_id in run_ids.values():
            predictions.create_run_table(control, run_id)
    faults.point("table_created")
    done = 0

    def advance(rows: int) -> None:
        nonlocal done
        done += rows
        if progress:
            progress(done, total)

    tasks = run_tasks(slices, ctx, request.executor, advance)
    for i, role in enumerate(roles):
        _add_up(tasks, i, results[role])
        _check_rejects(results[role], request.max_reject_fraction)
    faults.point("tasks_done")
    t = time.perf_counter()
    with connect(url, application_name="predstore-publish") as conn, conn.transaction():
        for i, role in enumerate(roles):
            result, run_id, model_row = results[role], run_ids[role], due[role]
            written = predictions.count_run_rows(conn, run_id)
            if written != result.rows_scored:
                raise RunFailed(f"run {run_id}'s table holds {written} rows but its tasks scored "
                                f"{result.rows_scored} (a task's output was written twice?); score the partition again")
            result.rows_duplicate = predictions.index_run_table(conn, run_id)
            faults.point("indexed")
            result.stages["index_s"] = round(time.perf_counter() - t, 3)
            if ctx.targets[i].baseline:
                total_profile: dict[str, Any] = {}
                for task in tasks:
                    total_profile = profile.add(total_profile, task.targets[i].profile)
                profiles.insert_run_profile(conn, run_id, total_profile)
            publishing = time.perf_counter()
            result.superseded_run = predictions.publish(conn, run_id, model_name=model_row.name,
                                                        partition_key=partition.key, role=role)
            result.stages["publish_s"] = round(time.perf_counter() - publishing, 3)
            result.status = "published"
            _measure(result, started)
            paired = {r: i for r, i in run_ids.items() if r != role}
            ledger.finish_run(conn, run_id, was="published", status="published",
                              input_fingerprint=partition.fingerprint,
                              predictions_digest=run_digest([d for task in tasks for d in task.targets[i].digests]),
                              details={"stages": result.stages, "entity_col": entity_col,
                                       "executor": asdict(request.executor), "tasks": len(tasks),
                                       **({"paired_runs": paired} if paired else {})},
                              cpu_seconds=time.process_time() - cpu_started, **_counts(result))
            verb = f"superseding run {result.superseded_run}" if result.superseded_run \
                else "first run of this partition"
            label = "" if role == "current" else f" (challenger v{model_row.version})"
            result.message = (f"published run {run_id}{label}: {result.rows_scored - result.rows_duplicate} "
                              f"predictions, {result.rows_rejected} rejected, {result.rows_duplicate} duplicate ids "
                              f"({verb})")
        faults.point("published")
    faults.point("committed")


def task_url(url: str, executor: ExecutorSpec) -> str:
    """The database URL the run's tasks get: without its password when they run on a Dask
    cluster elsewhere, whose workers take it from their own environment (``PGPASSWORD``, or a
    ``~/.pgpass``), so that it never travels in a task."""
    if executor.kind == "dask" and executor.dask_address != "local":
        return without_password(url)
    return url


def _context(url: str, entity_col: str, conn: psycopg.Connection, partition: reader.Partition,
             max_reject_fraction: float, runs: list[tuple[int, registry.ModelVersion]]) -> TaskContext:
    available = reader.columns_of(partition)
    total = reader.count_rows(partition)
    targets = []
    columns: list[str] = []
    for run_id, model_row in runs:
        schema = model_row.feature_schema
        check_columns(schema, entity_col, available)
        columns += [c for c in required_columns(schema, entity_col) if c not in columns]
        out_columns = ["entity_id", "row_number", "prediction"]
        if model_row.task == "classification":
            out_columns.append("label")
            if model_row.classes is not None and len(model_row.classes) > 2:
                out_columns.append("scores")
        targets.append(Target(
            run_id=run_id, artifact_uri=model_row.artifact_uri, sha256=model_row.sha256, format=model_row.format,
            schema=schema, out_columns=out_columns,
            baseline=profiles.get_baseline(conn, model_row.name, model_row.version),
            reject_limit=None if total is None else max_reject_fraction * total,
            trusted_types=model_row.trusted_types,
        ))
    return TaskContext(url=url, entity_col=entity_col, columns=columns, targets=tuple(targets))


def _add_up(tasks: list[TaskResult], target: int, result: RunResult) -> None:
    for task in tasks:
        result.rows_in += task.rows_in
        result.rows_scored += task.targets[target].rows_scored
        result.rows_rejected += task.targets[target].rows_rejected
        for stage, seconds in task.stages.items():
            result.stages[stage] = round(result.stages.get(stage, 0.0) + seconds, 3)


def _check_rejects(result: RunResult, max_fraction: float) -> None:
    if result.rows_in == 0:
        raise InputError("the partition has no rows")
    fraction = result.rows_rejected / result.rows_in
    if fraction > max_fraction:
        raise InputError(
            f"{result.rows_rejected} of {result.rows_in} rows read were rejected ({fraction:.1%}, more than "
            f"--max-reject-fraction {max_fraction:.1%}); see `predstore runs show {result.run_id}`"
        )


def _skip(control: psycopg.Connection, model_row: registry.ModelVersion, partition: reader.Partition,
          published: ledger.Run, result: RunResult, role: str) -> RunResult:
    result.run_id = ledger.record_skipped(
        control, model_name=model_row.name, model_version=model_row.version, model_sha256=model_row.sha256,
        partition_key=partition.key, input_uri=partition.uri, input_fingerprint=partition.fingerprint,
        code_version=_code_version(), host=socket.gethostname(), pid=os.getpid(),
        published_run=published.run_id, role=role,
    )
    result.status = "skipped"
    result.message = (f"skipped: run {published.run_id} already published partition {partition.key!r} with "
                      f"{model_row.name} v{model_row.version} and the same input; --force scores it again")
    return result


def _apply_retention(control: psycopg.Connection, model_name: str, partition_key: str, *, keep: int,
                     role: str) -> None:
    for old in ledger.superseded_runs(control, model_name, partition_key, keep=keep, role=role):
        predictions.drop_run_table(control, old)
        if not ledger.mark_dropped(control, old):
            continue
        log.info("dropped the rows of superseded run %s (keeping %s runs per partition)", old, keep)


def _fingerprint_if_readable(partition: reader.Partition) -> str | None:
    try:
        return partition.fingerprint
    except InputError:
        return None


def _measure(result: RunResult, started: float) -> None:
    result.duration_s = round(time.perf_counter() - started, 3)
    result.rows_per_s = round(result.rows_in / result.duration_s, 1) if result.duration_s else 0.0
    result.peak_rss_bytes = metrics.peak_rss_bytes()



def _counts(result: RunResult) -> dict[str, Any]:
    return {"rows_in": result.rows_in, "rows_scored": result.rows_scored, "rows_rejected": result.rows_rejected,
            "rows_duplicate": result.rows_duplicate, "duration_s": result.duration_s,
            "rows_per_s": result.rows_per_s, "peak_rss_bytes": result.peak_rss_bytes}


def _describe(exc: BaseException, url: str) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, psycopg.Error):
        return str(from_database(exc, conninfo=url, connecting=False))
    if isinstance(exc, PredstoreError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {first_line(exc)} (run with --verbose for the traceback)"


def _code_version() -> str:
    try:
        return package_version("predstore")
    except Exception:
        return "unknown"


def verify_run(settings: Settings, run_id: int) -> dict[str, Any]:
    """Re-score a run's recorded input with its recorded model version, without publishing,
    and compare the digest of the predictions with the one recorded."""
    url = prepare(settings)
    with connect(url, autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        model_row = registry.get_model(conn, run.model_name, version=run.model_version)
        if not run.predictions_digest:
            raise InputError(f"run {run_id} has no recorded digest (status {run.status}); "
                             "only published runs verify")
        partition = reader.open_partition(run.input_uri, key=run.partition_key)
        if partition.fingerprint != run.input_fingerprint:
            raise InputError(f"the input {partition.uri} has changed since run {run_id} read it; it cannot be "
                             "replayed")
        entity_col = (run.details or {}).get("entity_col", DEFAULT_ENTITY_COL)
        ctx = _context(url, entity_col, conn, partition, 1.0, [(run_id, model_row)])
    tasks = [digest_task(part, ctx) for part in reader.plan(partition)]
    recomputed = run_digest([d for task in tasks for d in task.targets[0].digests])
    return {"run_id": run_id, "recorded": run.predictions_digest, "recomputed": recomputed,
            "match": recomputed == run.predictions_digest, "rows_in": sum(t.rows_in for t in tasks)}
