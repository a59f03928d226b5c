"""The run ledger: one row per run, from `running` to published, skipped, failed or abandoned.

Every transition is conditional on the status it leaves (``WHERE status = 'running'``) and
checks that it changed the row, so a run once published, failed or abandoned is never flipped
again by a process that lost track of it. A running run holds a session advisory lock on its id
for as long as its process lives, so a run left `running` by a killed process is recognised (its
lock is free) and marked abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from store import liveness
from store.errors import NotFound, RunInProgress, RunNotRunning

FINAL_FIELDS = frozenset({
    "status", "rows_in", "rows_scored", "rows_rejected", "rows_duplicate", "duration_s", "rows_per_s",
    "peak_rss_bytes", "cpu_seconds", "error", "predictions_digest", "details", "input_fingerprint",
})


@dataclass(frozen=True)
class Run:
    """One run's ledger row, its fields in the table's column order."""

    run_id: int
    job_kind: str
    model_name: str
    model_version: int
    model_sha256: str | None
    partition_key: str
    input_uri: str
    input_fingerprint: str | None
    status: str
    rows_in: int
    rows_scored: int
    rows_rejected: int
    rows_duplicate: int
    started_at: datetime
    finished_at: datetime | None
    published_at: datetime | None
    duration_s: float | None
    rows_per_s: float | None
    peak_rss_bytes: int | None
    cpu_seconds: float | None
    error: str | None
    code_version: str | None
    host: str | None
    pid: int | None
    predictions_digest: str | None
    details: dict[str, Any] | None
    superseded_at: datetime | None
    role: str
    snapshot: bool


@dataclass(frozen=True)
class Scored:
    """What a published run scored: its model version and its input's content (fingerprint)."""

    model_version: int
    input_fingerprint: str | None


def is_current(published: Run | Scored | None, model_version: int, fingerprint: str) -> bool:
    """Whether ``published`` scored this content (``fingerprint``) with ``model_version`` already,
    so that scoring it again would repeat it: the rule by which a run is skipped and a scheduled
    partition passed over."""
    return (published is not None and published.model_version == model_version
            and published.input_fingerprint == fingerprint)


_RUN_COLUMNS = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(Run))


def start_run(
    conn: psycopg.Connection,
    *,
    model_name: str,
    model_version: int,
    model_sha256: str,
    partition_key: str,
    input_uri: str,
    code_version: str,
    host: str,
    pid: int,
    job_kind: str = "score",
    role: str = "current",
) -> int:
    """Insert a `running` row and hold its liveness lock on ``conn`` (a session lock).

    Raises `RunInProgress` if a live run holds the same (model, partition, role).
    """
    try:
        with conn.transaction():
            row = conn.execute(
                """INSERT INTO runs (job_kind, model_name, model_version, model_sha256, partition_key, input_uri,
                                     code_version, host, pid, role)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING run_id""",
                [job_kind, model_name, model_version, model_sha256, partition_key, input_uri, code_version,
                 host, pid, role],
            ).fetchone()
            assert row is not None
            # Taken before the row is visible, so no other process ever sees it running but unlocked.
            liveness.hold(conn, liveness.RUN, int(row[0]))
    except psycopg.errors.UniqueViolation:
        other = conn.execute(
            "SELECT run_id FROM runs WHERE model_name = %s AND partition_key = %s AND role = %s "
            "AND status = 'running'",
            [model_name, partition_key, role],
        ).fetchone()
        raise RunInProgress(other[0] if other else -1, model_name, partition_key) from None
    return int(row[0])


def release_run(conn: psycopg.Connection, run_id: int) -> None:
    """Give up the liveness lock taken by `start_run`."""
    liveness.release(conn, liveness.RUN, run_id)


def reap_abandoned(conn: psycopg.Connection, *, model_name: str | None = None,
                   partition_key: str | None = None) -> list[int]:
    """Mark `running` runs whose process is gone as abandoned; returns their ids.

    Run with ``conn`` in autocommit: each probe takes and releases a lock of its own.
    """
    filters = [sql.SQL("status = 'running'")]
    params: list[Any] = []
    if model_name is not None:
        filters.append(sql.SQL("model_name = %s"))
        params.append(model_name)
    if partition_key is not None:
        filters.append(sql.SQL("partition_key = %s"))
        params.append(partition_key)
    query = sql.SQL("SELECT run_id FROM runs WHERE {}").format(sql.SQL(" AND ").join(filters))

    def abandon(run_id: int) -> bool:
        return bool(conn.execute(
            """UPDATE runs SET status = 'abandoned', finished_at = now(),
                      duration_s = extract(epoch FROM now() - started_at),
                      error = 'the process running it ended before it finished (killed or crashed)'
               WHERE run_id = %s AND status = 'running'""",
            [run_id],
        ).rowcount)

    return liveness.reap(conn, liveness.RUN, [r[0] for r in conn.execute(query, params).fetchall()], abandon)


def finish_run(conn: psycopg.Connection, run_id: int, *, was: str = "running", **fields: Any) -> None:
    """Record a run's outcome (its status, counts, timings and error) if its status is still ``was``.

    Raises `RunNotRunning` when it is not: a run published, failed or abandoned meanwhile keeps
    what the ledger says. ``was="published"`` completes the row of a run `publish` just flipped.
    """
    unknown = set(fields) - FINAL_FIELDS
    assert not unknown, f"not ledger fields: {unknown}"
    if "details" in fields and fields["details"] is not None:
        fields["details"] = Jsonb(fields["details"])
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in fields
    )
    changed = conn.execute(
        sql.SQL("UPDATE runs SET {}, finished_at = now() WHERE run_id = %(run_id)s AND status = %(was)s").format(
            assignments),
        {**fields, "run_id": run_id, "was": was},
    ).rowcount
    if changed != 1:
        raise RunNotRunning(run_id, statuses(conn, [run_id]).get(run_id))


def statuses(conn: psycopg.Connection, run_ids: list[int]) -> dict[int, str]:
    """What the ledger says of each run now."""
    rows = conn.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", [run_ids]).fetchall()
    return {int(run_id): str(status) for run_id, status in rows}


def note_fingerprint(conn: psycopg.Connection, run_id: int, fingerprint: str) -> None:
    """Record a running run's input fingerprint as soon as it is known, so that an attempt that
    dies (and ends `abandoned`) still counts against that content's retries."""
    conn.execute("UPDATE runs SET input_fingerprint = %s WHERE run_id = %s AND status = 'running' "
                 "AND input_fingerprint IS NULL", [fingerprint, run_id])


def find_published(conn: psycopg.Connection, model_name: str, partition_key: str,
                   role: str = "current") -> Run | None:
    """The published run of (model, partition) in ``role``, if any."""
    return conn.cursor(row_factory=class_row(Run)).execute(
        sql.SQL("SELECT {} FROM runs WHERE model_name = %s AND partition_key = %s AND role = %s "
                "AND status = 'published'").format(_RUN_COLUMNS),
        [model_name, partition_key, role],
    ).fetchone()


def find_held(conn: psycopg.Connection, model_name: str, partition_key: str, role: str = "current") -> Run | None:
    """The newest held run of (model, partition) in ``role``, if any."""
    return conn.cursor(row_factory=class_row(Run)).execute(
        sql.SQL("SELECT {} FROM runs WHERE model_name = %s AND partition_key = %s AND role = %s "
                "AND status = 'held' ORDER BY run_id DESC LIMIT 1").format(_RUN_COLUMNS),
        [model_name, partition_key, role],
    ).fetchone()


def last_published(conn: psycopg.Connection, model_name: str, *, role: str, model_version: int,
                   profiled: bool = False) -> int | None:
    """The run of (model, version, role) published most recently (whatever it became since: a batch
    the user accepted), with a recorded profile if ``profiled``."""
    row = conn.execute(
        """SELECT run_id FROM runs r WHERE model_name = %s AND model_version = %s AND role = %s
           AND published_at IS NOT NULL
           AND (NOT %s OR EXISTS (SELECT FROM run_profiles p WHERE p.run_id = r.run_id))
           ORDER BY published_at DESC LIMIT 1""", [model_name, model_version, role, profiled]).fetchone()
    return int(row[0]) if row else None


def get_run(conn: psycopg.Connection, run_id: int) -> Run:
    """One run's ledger row; `NotFound` if there is none."""
    run = conn.cursor(row_factory=class_row(Run)).execute(
        sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(_RUN_COLUMNS), [run_id]).fetchone()
    if run is None:
        raise NotFound(f"there is no run {run_id}; see `predstore runs list`")
    return run


def list_runs(conn: psycopg.Connection, *, model_name: str | None = None, limit: int = 50) -> list[Run]:
    """The newest runs first (of ``model_name``, if given)."""
    where = sql.SQL("WHERE model_name = %s" if model_name else "")
    params: list[Any] = [model_name] if model_name else []
    return conn.cursor(row_factory=class_row(Run)).execute(
        sql.SQL("SELECT {} FROM runs {} ORDER BY run_id DESC LIMIT %s").format(_RUN_COLUMNS, where),
        [*params, limit],
    ).fetchall()


def superseded_runs(conn: psycopg.Connection, model_name: str, partition_key: str, *, keep: int,
                    role: str = "current") -> list[int]:
    """Superseded runs of (model, partition, role) beyond the newest ``keep`` runs that have data."""
    rows = conn.execute(
        """SELECT run_id FROM (
               SELECT run_id, status FROM runs
               WHERE model_name = %s AND partition_key = %s AND role = %s AND status IN ('published', 'superseded')
               ORDER BY run_id DESC OFFSET %s) AS old
           WHERE status = 'superseded'""",
        [model_name, partition_key, role, keep],
    ).fetchall()
    return [int(r[0]) for r in rows]


def mark_dropped(conn: psycopg.Connection, run_id: int) -> bool:
    """Record that a superseded run's rows were dropped by retention; False if it was not superseded."""
    return conn.execute("UPDATE runs SET status = 'dropped' WHERE run_id = %s AND status = 'superseded'",
                        [run_id]).rowcount == 1


def table_counts(conn: psycopg.Connection) -> dict[str, Any]:
    """What the store holds, for `predstore db status`."""
    one = conn.execute(
        """SELECT (SELECT count(*) FROM models),
                  (SELECT count(*) FROM runs),
                  (SELECT count(*) FROM runs WHERE status = 'published'),
                  (SELECT coalesce(sum(rows_scored - rows_duplicate), 0) FROM runs WHERE status = 'published'),
                  (SELECT count(*) FROM rejected_rows),
                  (SELECT count(*) FROM labels)"""
    ).fetchone()
    assert one is not None
    keys = ("models", "runs", "published_runs", "published_predictions", "rejected_rows", "labels")
    return dict(zip(keys, (int(v) for v in one), strict=True))


def record_skipped(
    conn: psycopg.Connection,
    *,
    model_name: str,
    model_version: int,
    model_sha256: str,
    partition_key: str,
    input_uri: str,
    input_fingerprint: str,
    code_version: str,
    host: str,
    pid: int,
    published_run: int,
    role: str = "current",
) -> int:
    """Record a run that found its work already published, and did nothing."""
    row = conn.execute(
        """INSERT INTO runs (model_name, model_version, model_sha256, partition_key, input_uri, input_fingerprint,
                             status, finished_at, duration_s, code_version, host, pid, details, role)
           VALUES (%s, %s, %s, %s, %s, %s, 'skipped', now(), 0, %s, %s, %s, %s, %s) RETURNING run_id""",
        [model_name, model_version, model_sha256, partition_key, input_uri, input_fingerprint, code_version,
         host, pid, Jsonb({"already_published_by": published_run}), role],
    ).fetchone()
    assert row is not None
    return int(row[0])


def rejected_sample(conn: psycopg.Connection, run_id: int, *, limit: int) -> list[dict[str, Any]]:
    """The first rejected rows of a run, in input order."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT row_number, entity_id, reason, raw FROM rejected_rows WHERE run_id = %s ORDER BY row_number LIMIT %s",
        [run_id, limit],
    ).fetchall()
