"""The stages of a scoring run, each a function over its `RunPlan`.

`write` creates the runs' tables (not attached, so invisible) and has the partition's slices
scored into them by tasks (in this process, in local worker processes or on Dask; see
`batch.tasks`); `count_rejects` adds up what the tasks did and fails the runs that rejected too much;
`publish`, in one short transaction, checks each table against its count, builds its index,
attaches it to ``predictions`` and flips the ledger, so that readers see the previous run or
this one, never part of it. `batch.runner` calls them in turn and fails the runs if one raises.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import psycopg

from batch import gate
from batch.executors import run_tasks
from batch.plan import Progress, RunPlan, RunResult
from batch.tasks import Target, TaskContext, TaskResult, run_digest
from models import profile
from models.validate import check_columns, required_columns
from store import faults, ledger, monitoring, predictions, profiles, prometheus, reader, registry, serving
from store.db import connect
from store.errors import InputError, RunFailed, RunHeld

log = logging.getLogger("predstore.score")


@dataclass(frozen=True)
class Written:
    """What `write` left for the later stages: the tasks' shared context and what each did."""

    context: TaskContext
    tasks: list[TaskResult]


def write(plan: RunPlan, control: psycopg.Connection, progress: Progress | None = None) -> Written:
    """Create the runs' tables and score the partition's slices into them, reporting rows done."""
    context = task_context(plan.url, plan.entity_col, control, plan.partition, plan.request.max_reject_fraction,
                           [(plan.run_ids[role], plan.models[role]) for role in plan.roles])
    slices = reader.plan(plan.partition, pieces=plan.request.executor.pieces)
    context = replace(context, url=plan.task_url, sole_task=len(slices) == 1)
    total = sum(s.rows or 0 for s in slices) if all(s.rows is not None for s in slices) else None
    with control.transaction():
        for run_id in plan.run_ids.values():
            predictions.create_run_table(control, run_id)
    faults.point("table_created")
    done = 0

    def advance(rows: int) -> None:
        nonlocal done
        done += rows
        if progress:
            progress(done, total)

    return Written(context, run_tasks(slices, context, plan.request.executor, advance))


def count_rejects(plan: RunPlan, written: Written, results: dict[str, RunResult]) -> None:
    """Add up each role's counts from its tasks; `InputError` if a run rejected too many rows."""
    for i, role in enumerate(plan.roles):
        erased = add_up(written.tasks, i, results[role])
        check_rejects(results[role], plan.request.max_reject_fraction, erased=erased)


def publish(plan: RunPlan, written: Written, results: dict[str, RunResult], *, started: float,
            cpu_started: float) -> None:
    """Index every role's run, then, in the same transaction, publish them all and record them in the
    ledger; or, if one fails the publish gate, hold them all and raise `RunHeld`."""
    t = time.perf_counter()
    with connect(plan.url, application_name="predstore-publish") as conn, conn.transaction():
        profiled = {role: _index(plan, written, conn, i, role, results[role], t=t)
                    for i, role in enumerate(plan.roles)}
        findings = _gate(plan, conn, results, profiled) if plan.gate is not None else []
        for i, role in enumerate(plan.roles):
            if findings:
                _hold(plan, written, conn, i, role, results[role], findings, started=started, cpu_started=cpu_started)
            else:
                _publish_one(plan, written, conn, i, role, results[role], started=started, cpu_started=cpu_started)
        faults.point("published")
    faults.point("committed")
    if findings:
        current = results.get("current") or next(iter(results.values()))
        raise RunHeld(current.message, run_id=current.run_id, result=current)
    with connect(plan.url, autocommit=True, application_name="predstore-publish") as conn:
        serving.drop_retired(conn, settle=serving.SETTLE)  # the segment tables this publish replaced


def _index(plan: RunPlan, written: Written, conn: psycopg.Connection, i: int, role: str, result: RunResult, *,
           t: float) -> dict[str, Any] | None:
    """Check the run's table against its count, build its index and record its profile (if its model
    has a baseline), which it returns."""
    run_id, tasks = plan.run_ids[role], written.tasks
    rows = predictions.count_run_rows(conn, run_id)
    if rows != result.rows_scored:
        raise RunFailed(f"run {run_id}'s table holds {rows} rows but its tasks scored "
                        f"{result.rows_scored} (a task's output was written twice?); score the partition again")
    result.rows_duplicate = predictions.index_run_table(conn, run_id)
    faults.point("indexed")
    result.stages["index_s"] = round(time.perf_counter() - t, 3)
    if not written.context.targets[i].baseline:
        return None
    total_profile: dict[str, Any] = {}
    for task in tasks:
        total_profile = profile.add(total_profile, task.targets[i].profile)
    profiles.insert_run_profile(conn, run_id, total_profile)
    return total_profile


def _gate(plan: RunPlan, conn: psycopg.Connection, results: dict[str, RunResult],
          profiled: dict[str, dict[str, Any] | None]) -> list[gate.Finding]:
    """What makes any role's run fail the gate: its profile against the last run of its model,
    version and role that was published (else the version's training baseline), its rows against the
    partition's previous run."""
    assert plan.gate is not None
    findings: list[gate.Finding] = []
    for role in plan.roles:
        model, result = plan.models[role], results[role]
        accepted = ledger.last_published(conn, model.name, role=role, model_version=model.version, profiled=True)
        previous: dict[str, dict[str, Any]] = {}
        if accepted is not None:
            previous = profiles.get_run_profiles(conn, [accepted])
        elif profiled[role] is not None:
            previous = {c["column_name"]: c for c in profiles.get_baseline(conn, model.name, model.version)}
        before = ledger.find_published(conn, model.name, plan.partition.key, role)
        found = gate.judge(previous, profiled[role] or {}, rows=result.rows_in,
                           previous_rows=before.rows_in if before is not None else None, policy=plan.gate)
        if len(plan.roles) > 1:  # held together: say whose batch each finding is about
            found = [replace(f, reason=f"{role} v{model.version}: {f.reason}") for f in found]
        findings += found
    return findings


def _hold(plan: RunPlan, written: Written, conn: psycopg.Connection, i: int, role: str, result: RunResult,
          findings: list[gate.Finding], *, started: float, cpu_started: float) -> None:
    """Keep the run unpublished (``held``, its table and profile kept) and raise a ``held_run`` alert."""
    run_id, model_row, tasks = plan.run_ids[role], plan.models[role], written.tasks
    why = "; ".join(f.reason for f in findings)
    result.status = "held"
    measure(result, started)
    ledger.finish_run(conn, run_id, status="held", error=f"held by the publish gate: {why}",
                      input_fingerprint=plan.partition.fingerprint,
                      predictions_digest=run_digest([d for task in tasks for d in task.targets[i].digests]),
                      details={"stages": result.stages, "entity_col": plan.entity_col,
                               "snapshot": plan.request.snapshot,
                               "gate": [{"column": f.column, "reason": f.reason} for f in findings]},
                      cpu_seconds=time.process_time() - cpu_started, **result.counts())
    result.message = (f"held run {run_id} of {model_row.name} v{model_row.version} (partition "
                      f"{plan.partition.key!r}) by the publish gate, nothing served: {why}; "
                      f"`predstore runs release {run_id}` serves it, `predstore runs discard {run_id}` drops it")
    monitoring.insert_alert(conn, model_name=model_row.name, model_version=model_row.version, kind="held_run",
                            scope_key=f"run:{run_id}", run_id=run_id, message=result.message,
                            details={"partition": plan.partition.key, "role": role,
                                     "findings": [f.reason for f in findings]})
    log.error("%s", result.message)


def _publish_one(plan: RunPlan, written: Written, conn: psycopg.Connection, i: int, role: str, result: RunResult,
                 *, started: float, cpu_started: float) -> None:
    run_id, model_row, tasks = plan.run_ids[role], plan.models[role], written.tasks
    publishing = time.perf_counter()
    result.superseded_run = predictions.publish(conn, run_id, model_name=model_row.name,
                                                partition_key=plan.partition.key, role=role,
                                                snapshot=plan.request.snapshot)
    result.stages["publish_s"] = round(time.perf_counter() - publishing, 3)
    result.status = "published"
    measure(result, started)
    paired = {r: other for r, other in plan.run_ids.items() if r != role}
    ledger.finish_run(conn, run_id, was="published", status="published",
                      input_fingerprint=plan.partition.fingerprint,
                      predictions_digest=run_digest([d for task in tasks for d in task.targets[i].digests]),
                      details={"stages": result.stages, "entity_col": plan.entity_col,
                               "executor": asdict(plan.request.executor), "tasks": len(tasks),
                               **({"paired_runs": paired} if paired else {})},
                      cpu_seconds=time.process_time() - cpu_started, **result.counts())
    verb = f"superseding run {result.superseded_run}" if result.superseded_run else "first run of this partition"
    label = "" if role == "current" else f" (challenger v{model_row.version})"
    result.message = (f"published run {run_id}{label}: {result.rows_scored - result.rows_duplicate} "
                      f"predictions, {result.rows_rejected} rejected, {result.rows_duplicate} duplicate ids "
                      f"({verb})")


def task_context(url: str, entity_col: str, conn: psycopg.Connection, partition: reader.Partition,
                 max_reject_fraction: float, runs: list[tuple[int, registry.ModelVersion]]) -> TaskContext:
    """What every task of the runs needs: the columns to read, and per run its model, output
    columns, profile baseline and reject limit; `InputError` if the partition lacks a column."""
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


def add_up(tasks: list[TaskResult], target: int, result: RunResult) -> int:
    """Add target ``target``'s counts and stage timings of ``tasks`` into ``result``; return how many
    of its rejected rows were erased entities' (which `check_rejects` does not hold against the input)."""
    erased = 0
    for task in tasks:
        erased += task.targets[target].rows_erased
        result.rows_in += task.rows_in
        result.rows_scored += task.targets[target].rows_scored
        result.rows_rejected += task.targets[target].rows_rejected
        for stage, seconds in task.stages.items():
            result.stages[stage] = round(result.stages.get(stage, 0.0) + seconds, 3)
    return erased


def check_rejects(result: RunResult, max_fraction: float, *, erased: int = 0) -> None:
    """`InputError` if the run read no row, or rejected more than ``max_fraction`` of them.

    The ``erased`` of its rejects (rows of entities on the erasure list) count on neither side: an
    erasure list says nothing about the input's quality, and must not fail a healthy run.
    """
    if result.rows_in == 0:
        raise InputError("the partition has no rows")
    bad, judged = result.rows_rejected - erased, result.rows_in - erased
    fraction = bad / judged if judged else 0.0
    if fraction > max_fraction:
        not_erased = f" (not counting {erased} erased)" if erased else ""
        raise InputError(
            f"{bad} of {judged} rows read were rejected{not_erased} ({fraction:.1%}, more than "
            f"--max-reject-fraction {max_fraction:.1%}); see `predstore runs show {result.run_id}`"
        )


def measure(result: RunResult, started: float) -> None:
    """Record the run's duration since ``started``, its speed and the process's peak memory."""
    result.duration_s = round(time.perf_counter() - started, 3)
    result.rows_per_s = round(result.rows_in / result.duration_s, 1) if result.duration_s else 0.0
    result.peak_rss_bytes = prometheus.peak_rss_bytes()
