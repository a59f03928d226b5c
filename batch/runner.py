"""The scoring job's coordinator: one partition in, one published run out (or skipped, or failed).

It decides which roles' runs are due (a partition already scored by the same model version on
the same content is skipped), records the runs in the ledger, plans them (`batch.plan.RunPlan`)
and calls the stages over the plan (`batch.stages`: write, count rejects, publish): readers see the
previous run or this one, never part of it. Whatever a stage raises, the runs fail cleanly: a
failed run's table is dropped; a run whose process died is marked abandoned, and its table
dropped, by the next run of its partition.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import replace
from importlib.metadata import version as package_version

import psycopg

from batch import retention, stages
from batch.gate import GatePolicy
from batch.plan import DEFAULT_ENTITY_COL, Progress, RunPlan, RunResult, ScoreRequest, task_url
from batch.verify import verify_run
from models.validate import check_entity_column
from store import faults, ledger, logs, policies, predictions, prometheus, reader, registry, serving
from store.db import connect
from store.errors import (
    ConfigError,
    InputError,
    NotFound,
    PredstoreError,
    RunFailed,
    RunHeld,
    first_line,
    from_database,
)
from store.migrate import prepare
from store.settings import Settings

log = logging.getLogger("predstore.batch.runner")

#: The scoring job's surface: `score_partition`, its request and result, and `verify_run`.
__all__ = ["DEFAULT_ENTITY_COL", "Progress", "RunResult", "ScoreRequest", "score_partition", "task_url",
           "verify_run"]


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
    with logs.context(model=request.model_name, partition=partition.key), \
            connect(url, autocommit=True, application_name="predstore-score") as control:
        roles = _roles(control, request)
        current = roles["current"]
        entity_col = request.entity_col or current.feature_schema.entity_col or DEFAULT_ENTITY_COL
        for run_id in ledger.reap_abandoned(control, model_name=current.name, partition_key=partition.key):
            predictions.drop_run_table(control, run_id)
            log.warning("run %s was left running by a process that died; marked abandoned", run_id)
        serving.drop_retired(control)  # segment tables a publish replaced, if it died before dropping them
        results = {role: RunResult(status="running", model=m.name, model_version=m.version, partition=partition.key)
                   for role, m in roles.items()}
        due: dict[str, registry.ModelVersion] = {}
        skipped: dict[str, ledger.Run] = {}
        for role, model_row in roles.items():
            held = ledger.find_held(control, model_row.name, partition.key, role)
            if held is not None and not request.force and ledger.is_current(held, model_row.version,
                                                                              partition.fingerprint):
                raise RunHeld(f"run {held.run_id} holds this content of partition {partition.key!r} for "
                              f"{model_row.name} v{model_row.version}, unpublished: the publish gate stopped it "
                              f"({held.error}); `predstore runs release {held.run_id}` serves it, "
                              f"`predstore runs discard {held.run_id}` drops it", run_id=held.run_id)
            published = ledger.find_published(control, model_row.name, partition.key, role)
            if (published is not None and not request.force
                    and ledger.is_current(published, model_row.version, partition.fingerprint)):
                skipped[role] = published
            else:
                due[role] = model_row
        # A skip reads no row, so the entity column is checked here or never: nothing to read when the
        # published runs read this same content by the same column; else the partition's header says.
        if skipped and {(p.details or {}).get("entity_col") for p in skipped.values()} != {entity_col}:
            check_entity_column(entity_col, reader.columns_of(partition))
        for role, published in skipped.items():
            _skip(control, roles[role], partition, published, results[role], role)
        plan = RunPlan(url=url, partition=partition, entity_col=entity_col, request=request, models=due,
                       gate=_gate_policy(control, request, current.name))
        try:
            if due:
                _score(settings, control, plan, results, progress)
        finally:
            for role, run in results.items():
                _export(settings, run, role)
    result = results["current"]
    result.challenger = results.get("challenger")
    return result


def _export(settings: Settings, result: RunResult, role: str) -> None:
    prometheus.export(settings, "score", {"model": result.model, "role": role}, {
        "rows_in": result.rows_in, "rows_scored": result.rows_scored, "rows_rejected": result.rows_rejected,
        "duration_seconds": result.duration_s, "rows_per_second": result.rows_per_s,
        "peak_rss_bytes": result.peak_rss_bytes,
    }, succeeded=result.status in ("published", "skipped"), status=result.status)


def _gate_policy(control: psycopg.Connection, request: ScoreRequest, model: str) -> GatePolicy | None:
    """The gate the runs pass: asked for (or not) by the request, else by the model's policy."""
    policy = policies.get_policy(control, model)
    if not (request.gate if request.gate is not None else policy.gate):
        return None
    limit = request.max_row_change if request.max_row_change is not None else policy.max_row_change
    return GatePolicy(max_row_change=limit) if limit is not None else GatePolicy()


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


def _score(settings: Settings, control: psycopg.Connection, plan: RunPlan, results: dict[str, RunResult],
           progress: Progress | None) -> None:
    """Run the plan's runs together: they publish together or fail together."""
    partition = plan.partition
    run_ids: dict[str, int] = {}
    try:
        for role, model_row in plan.models.items():
            run_ids[role] = ledger.start_run(
                control, model_name=model_row.name, model_version=model_row.version, model_sha256=model_row.sha256,
                partition_key=partition.key, input_uri=partition.uri, code_version=_code_version(),
                host=socket.gethostname(), pid=os.getpid(), role=role,
            )
            results[role].run_id = run_ids[role]
        plan = replace(plan, run_ids=dict(run_ids))
        _note_fingerprint(plan.url, partition, list(run_ids.values()))
        started, cpu_started = time.perf_counter(), time.process_time()
        # the lines of the run carry its id (the current version's, with a challenger beside it)
        with logs.context(run_id=run_ids.get("current", min(run_ids.values()))):
            try:
                faults.point("run_started")
                _run(control, plan, results, progress)
                for role, model_row in plan.models.items():
                    retention.drop_superseded(control, model_row.name, partition.key, keep=settings.keep_runs,
                                              role=role)
            except RunHeld:
                raise  # committed held: nothing to settle
            except (Exception, KeyboardInterrupt) as exc:  # whatever it was, the runs fail cleanly
                if not isinstance(exc, PredstoreError | psycopg.Error | KeyboardInterrupt):
                    log.debug("unexpected error in the run", exc_info=exc)  # the traceback, with --verbose
                _after_error(control, plan, results, exc, started=started, cpu_started=cpu_started)
    finally:
        for run_id in run_ids.values():
            with suppress(psycopg.Error):  # a lost connection has released its locks already
                ledger.release_run(control, run_id)


def _after_error(control: psycopg.Connection, plan: RunPlan, results: dict[str, RunResult],
                 exc: BaseException, *, started: float, cpu_started: float) -> None:
    """Settle the runs after ``exc``, going by what the ledger says now, not by how far the code got.

    Runs the ledger shows published (the error came after the publish COMMIT: in retention, on
    closing the connection, a lost COMMIT acknowledgement) stay published with their tables, and
    the error is only logged; Ctrl-C is raised again. Runs still running are failed and their
    tables dropped. If the ledger cannot be read, nothing is touched: the next run of the
    partition marks them abandoned.
    """
    message = _describe(exc, plan.url)
    run_ids = plan.run_ids
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
        stages.measure(result, started)
        if now.get(run_id) != "running":
            continue  # marked by another process meanwhile: its table is theirs to drop
        predictions.drop_run_table(control, run_id)
        ledger.finish_run(control, run_id, status="failed", error=message,
                          input_fingerprint=_fingerprint_if_readable(plan.partition),
                          **result.counts(), cpu_seconds=time.process_time() - cpu_started)
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


def _run(control: psycopg.Connection, plan: RunPlan, results: dict[str, RunResult],
         progress: Progress | None) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    written = stages.write(plan, control, progress)
    stages.count_rejects(plan, written, results)
    faults.point("tasks_done")
    stages.publish(plan, written, results, started=started, cpu_started=cpu_started)


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


def _fingerprint_if_readable(partition: reader.Partition) -> str | None:
    try:
        return partition.fingerprint
    except InputError:
        return None


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
