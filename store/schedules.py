"""The scheduler's queries: firings claimed once across replicas, work locks, and what ran last.

A firing is a row of ``job_firings``. A cron firing is claimed by inserting (job, scheduled time):
the unique index lets exactly one replica win. A running firing holds a session advisory lock on
its id, like a run does, so a firing left `running` by a dead process is recognised and reaped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from store import liveness
from store.ledger import Scored

#: First key of the advisory locks that one replica holds while it works on a named thing
#: (a model's partition); the second key is ``hashtext(name)``.
WORK_LOCK_CLASS = 7271


def claim_firing(
    conn: psycopg.Connection,
    *,
    job_id: str,
    reason: str,
    scheduled_for: datetime | None,
    host: str,
    pid: int,
) -> int | None:
    """Insert a `running` firing and hold its liveness lock; None if (job, scheduled_for) is already claimed.

    Run with ``conn`` in autocommit, so that the claim is visible to other replicas at once.
    """
    row = conn.execute(
        """INSERT INTO job_firings (job_id, reason, scheduled_for, host, pid) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (job_id, scheduled_for) DO NOTHING RETURNING firing_id""",
        [job_id, reason, scheduled_for, host, pid],
    ).fetchone()
    if row is None:
        return None
    firing_id = int(row[0])
    liveness.hold(conn, liveness.FIRING, firing_id)
    return firing_id


def finish_firing(conn: psycopg.Connection, firing_id: int, *, status: str, attempts: int,
                  error: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Record a firing's outcome and give up its liveness lock."""
    conn.execute(
        """UPDATE job_firings SET status = %s, attempts = %s, error = %s, details = %s, finished_at = now()
           WHERE firing_id = %s""",
        [status, attempts, error, Jsonb(details) if details is not None else None, firing_id],
    )
    liveness.release(conn, liveness.FIRING, firing_id)


def reap_firings(conn: psycopg.Connection) -> list[int]:
    """Mark `running` firings whose process is gone as abandoned; returns their ids (autocommit ``conn``)."""
    def abandon(firing_id: int) -> bool:
        return bool(conn.execute(
            """UPDATE job_firings SET status = 'abandoned', finished_at = now(),
                      error = 'the scheduler running it ended before it finished (killed or crashed)'
               WHERE firing_id = %s AND status = 'running'""",
            [firing_id],
        ).rowcount)

    running = conn.execute("SELECT firing_id FROM job_firings WHERE status = 'running'").fetchall()
    return liveness.reap(conn, liveness.FIRING, [r[0] for r in running], abandon)


def last_firings(conn: psycopg.Connection, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The newest firing of each job that has one."""
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(
        """SELECT DISTINCT ON (job_id) * FROM job_firings WHERE job_id = ANY(%s)
           ORDER BY job_id, firing_id DESC""",
        [job_ids],
    ).fetchall()
    return {r["job_id"]: r for r in rows}


def last_successes(conn: psycopg.Connection, job_ids: list[str]) -> dict[str, datetime]:
    """When each job's newest succeeded firing (of its schedule or an arrival, not an alert) finished."""
    rows = conn.execute(
        """SELECT DISTINCT ON (job_id) job_id, finished_at FROM job_firings
           WHERE job_id = ANY(%s) AND status = 'succeeded' AND reason <> 'alert'
           ORDER BY job_id, firing_id DESC""",
        [job_ids],
    ).fetchall()
    return {job_id: finished for job_id, finished in rows}


def try_lock(conn: psycopg.Connection, name: str) -> bool:
    """Take the session lock on ``name`` if no other session holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [WORK_LOCK_CLASS, name]).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection, name: str) -> None:
    """Release a lock taken by `try_lock`."""
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [WORK_LOCK_CLASS, name])


def published_inputs(conn: psycopg.Connection, model_name: str) -> dict[str, Scored]:
    """For each partition of ``model_name`` with a published run: its model version and input
    fingerprint; a newer held or discarded run's instead (the publish gate stopped that content: it
    waits for a person or for new content, not for another try)."""
    rows = conn.execute(
        """SELECT partition_key, model_version, input_fingerprint FROM runs
           WHERE model_name = %s AND role = 'current' AND status IN ('published', 'held', 'discarded')
           ORDER BY run_id""",
        [model_name],
    ).fetchall()
    return {key: Scored(int(version), fingerprint) for key, version, fingerprint in rows}


def failed_attempts(conn: psycopg.Connection, *, model_name: str, model_version: int, partition_key: str,
                    input_fingerprint: str) -> int:
    """How many runs of this model version on this exact partition content have failed or died
    (`abandoned`: killed by the OOM killer, a segfault...), so a partition that crashes its scorer
    is not retried on every restart."""
    row = conn.execute(
        """SELECT count(*) FROM runs WHERE model_name = %s AND model_version = %s AND partition_key = %s
                  AND input_fingerprint = %s AND status IN ('failed', 'abandoned')""",
        [model_name, model_version, partition_key, input_fingerprint],
    ).fetchone()
    return int(row[0]) if row else 0




def labels_arrived(conn: psycopg.Connection, model_name: str, *, since: datetime | None) -> int:
    """Labels of ``model_name`` that arrived after ``since`` (every one, if None)."""
    row = conn.execute("SELECT count(*) FROM labels WHERE model_name = %s AND (%s::timestamptz IS NULL OR "
                       "arrival_time > %s)", [model_name, since, since]).fetchone()
    return int(row[0]) if row else 0


def recent_outcomes(conn: psycopg.Connection, job_ids: list[str], key: str, *, limit: int) -> list[dict[str, Any]]:
    """The outcome recorded under ``key`` by each of the newest ``limit`` finished firings of ``job_ids``."""
    rows = conn.execute(
        """SELECT details -> 'outcomes' -> %s FROM job_firings
           WHERE job_id = ANY(%s) AND status IN ('succeeded', 'failed')
           ORDER BY firing_id DESC LIMIT %s""", [key, job_ids, limit]).fetchall()
    return [r[0] or {} for r in rows]
