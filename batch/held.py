"""Runs the publish gate held (`batch.gate`): release one (serve it, as its publish would have) or
discard it (drop its rows). Each happens once, in one transaction, and is audited."""

from __future__ import annotations

import psycopg

from store import audit, faults, ledger, predictions, serving
from store.db import connect
from store.errors import ConfigError
from store.ledger import Run
from store.migrate import prepare
from store.settings import Settings


def release_run(settings: Settings, run_id: int, *, actor: str | None = None) -> Run:
    """Publish the held run ``run_id`` as its scoring run would have; returns its ledger row."""
    with connect(prepare(settings), autocommit=True, application_name="predstore-release") as conn:
        with conn.transaction():
            run = _held(conn, run_id, "release")
            superseded = predictions.publish(conn, run_id, model_name=run.model_name, partition_key=run.partition_key,
                                             role=run.role, snapshot=bool((run.details or {}).get("snapshot")),
                                             was="held")
            audit.record(conn, "run.release", target=f"run {run_id}", actor=actor,
                         details={"model": run.model_name, "version": run.model_version,
                                  "partition": run.partition_key, "held": run.error, "superseded": superseded})
            faults.point("released")
        serving.drop_retired(conn)
        return ledger.get_run(conn, run_id)


def discard_run(settings: Settings, run_id: int, *, actor: str | None = None) -> Run:
    """Drop the held run ``run_id``'s rows (``discarded``); returns its ledger row."""
    with connect(prepare(settings), autocommit=True, application_name="predstore-discard") as conn:
        with conn.transaction():
            run = _held(conn, run_id, "discard")
            conn.execute("UPDATE runs SET status = 'discarded' WHERE run_id = %s", [run_id])
            audit.record(conn, "run.discard", target=f"run {run_id}", actor=actor,
                         details={"model": run.model_name, "version": run.model_version,
                                  "partition": run.partition_key, "held": run.error})
        predictions.drop_run_table(conn, run_id)
        return ledger.get_run(conn, run_id)


def _held(conn: psycopg.Connection, run_id: int, verb: str) -> Run:
    """The held run ``run_id``, its row locked; `ConfigError` if it is not held (any more)."""
    conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", [run_id])
    run = ledger.get_run(conn, run_id)
    if run.status != "held":
        raise ConfigError(f"run {run_id} is {run.status}, not held: there is nothing to {verb} "
                          f"(`predstore runs show {run_id}` tells its story)")
    return run
