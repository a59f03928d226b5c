"""Retention by age: each model's policy, the runs it expires, and expiring them.

A published run older than its model's ``keep_days`` (counted from its publication) expires: it
leaves the serving directory, its status becomes ``expired`` and its table is dropped. Superseded
runs past the same age lose their table too (``dropped``). The ledger row stays, and with it the
run's profile, drift checks and performance rows: monitoring history outlives the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row

from store import notices, serving
from store.predictions import PUBLISH_CHANNEL
from store.schema import PARTITION_SCHEMA


@dataclass(frozen=True)
class Expiring:
    """A run whose table retention drops, and why."""

    run_id: int
    model: str
    model_version: int
    partition: str
    role: str
    #: 'published' (it expires), 'superseded' (its table goes), 'held' (the publish gate held it and
    #: nobody released it: it is discarded), or already 'expired'/'dropped'/'discarded' with its
    #: table left behind by an interrupted prune.
    status: str
    #: When it was published (a held run: when it was held).
    published_at: datetime
    rows: int
    bytes: int


def set_keep_days(conn: psycopg.Connection, model: str, keep_days: int | None) -> None:
    """Set ``model``'s policy; None removes it (the default, ``PREDSTORE_KEEP_DAYS``, applies)."""
    if keep_days is None:
        conn.execute("DELETE FROM retention WHERE model_name = %s", [model])
        return
    conn.execute(
        """INSERT INTO retention (model_name, keep_days) VALUES (%s, %s)
           ON CONFLICT (model_name) DO UPDATE SET keep_days = EXCLUDED.keep_days, updated_at = now()""",
        [model, keep_days])


def policies(conn: psycopg.Connection) -> dict[str, int]:
    """The models that have a policy of their own, with its days."""
    return {str(m): int(d) for m, d in conn.execute(
        "SELECT model_name, keep_days FROM retention WHERE keep_days IS NOT NULL").fetchall()}


def expiring(conn: psycopg.Connection, *, now: datetime, default: timedelta | None,
             override: timedelta | None = None, model: str | None = None) -> list[Expiring]:
    """The runs whose tables retention would drop at ``now``, oldest first: those published (or held
    by the publish gate) before ``now`` minus their model's age limit (``override`` if given, else
    the model's policy, else ``default``; None: no limit), and those whose table an interrupted
    prune left behind."""
    return conn.cursor(row_factory=class_row(Expiring)).execute(
        """WITH limits AS (
               SELECT r.run_id, coalesce(%(override)s, make_interval(days => p.keep_days), %(default)s) AS keep
               FROM runs r LEFT JOIN retention p ON p.model_name = r.model_name
               WHERE %(model)s::text IS NULL OR r.model_name = %(model)s)
           SELECT r.run_id, r.model_name AS model, r.model_version, r.partition_key AS partition, r.role,
                  r.status, coalesce(r.published_at, r.finished_at) AS published_at,
                  r.rows_scored - r.rows_duplicate AS rows,
                  coalesce(pg_total_relation_size(t.oid), 0) AS bytes
           FROM runs r JOIN limits l USING (run_id)
           LEFT JOIN pg_class t ON t.relname = 'run_' || r.run_id
                AND t.relnamespace = %(schema)s::regnamespace
           WHERE (r.status IN ('published', 'superseded') AND r.published_at < %(now)s - l.keep)
              OR (r.status = 'held' AND r.finished_at < %(now)s - l.keep)
              OR (r.status IN ('expired', 'dropped', 'discarded') AND t.oid IS NOT NULL)
           ORDER BY coalesce(r.published_at, r.finished_at), r.run_id""",
        {"override": override, "default": default, "model": model, "now": now, "schema": PARTITION_SCHEMA},
    ).fetchall()


def expire(conn: psycopg.Connection, runs: Sequence[Expiring]) -> int:
    """Mark ``runs`` expired (the published ones), dropped (the superseded ones) or discarded (the
    held ones, which serve nothing) and take them out of the serving directory; their tables are
    the caller's to drop once this commits. Returns how many entities no published run serves any more."""
    conn.execute("UPDATE runs SET status = 'discarded' WHERE run_id = ANY(%s) AND status = 'held'",
                 [[r.run_id for r in runs if r.status == "held"]])
    published = [r.run_id for r in runs if r.status == "published"]
    expired = [int(row[0]) for row in conn.execute(
        "UPDATE runs SET status = 'expired' WHERE run_id = ANY(%s) AND status = 'published' RETURNING run_id",
        [published]).fetchall()]
    dropped = [int(row[0]) for row in conn.execute(
        "UPDATE runs SET status = 'dropped' WHERE run_id = ANY(%s) AND status = 'superseded' RETURNING run_id",
        [[r.run_id for r in runs if r.status == "superseded"]]).fetchall()]
    # A superseded run may still serve its version (superseded by another version's run).
    gone = serving.unserve_runs(conn, expired + dropped)
    for model in sorted({r.model for r in runs if r.run_id in expired or r.run_id in dropped}):
        notices.notify(conn, PUBLISH_CHANNEL, model)
    return gone
