"""The monitor's queries: drift checks and results, labels, alerts, report data (performance rows: `store.performance`).

One function per query; each takes a connection and never commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import args_row, dict_row
from psycopg.types.json import Jsonb

from store.serving import IN_SET

#: Runs whose profile can be checked for drift.
PROFILED = ("published", "superseded", "dropped")

RESULT_COLUMNS = ("column_name", "role", "kind", "metric", "value", "warning", "alert", "status")


def lock_model(conn: psycopg.Connection, model_name: str) -> None:
    """Serialise monitor runs of one model until the transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('predstore.monitor:' || %s))", [model_name])


# --- drift ---------------------------------------------------------------------------------


def profiled_runs(conn: psycopg.Connection, model_name: str, *, run_id: int | None = None,
                  since: datetime | None = None, unchecked: bool = False) -> list[dict[str, Any]]:
    """Runs of ``model_name`` that have a profile, oldest first: one run, those published since
    a time, or all; with ``unchecked``, only those without a drift check yet."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT r.run_id, r.model_version, r.partition_key, r.published_at, r.status, r.role AS run_role,
                  r.rows_scored - r.rows_duplicate AS predictions
           FROM runs r
           WHERE r.model_name = %(model)s AND r.status = ANY(%(statuses)s)
             AND EXISTS (SELECT 1 FROM run_profiles p WHERE p.run_id = r.run_id)
             AND (%(run_id)s::bigint IS NULL OR r.run_id = %(run_id)s)
             AND (%(since)s::timestamptz IS NULL OR r.published_at >= %(since)s)
             AND NOT (%(unchecked)s AND EXISTS (SELECT 1 FROM drift_checks c WHERE c.run_id = r.run_id))
           ORDER BY r.published_at, r.run_id""",
        {"model": model_name, "statuses": list(PROFILED), "run_id": run_id, "since": since, "unchecked": unchecked},
    ).fetchall()


def delete_run_check(conn: psycopg.Connection, run_id: int) -> None:
    """Forget a run's drift check (its results go with it), to check it again."""
    conn.execute("DELETE FROM drift_checks WHERE run_id = %s AND scope = 'run'", [run_id])


def insert_check(conn: psycopg.Connection, *, model_name: str, model_version: int, scope: str,
                 run_id: int | None, run_ids: list[int], run_role: str, window_start: datetime | None,
                 window_end: datetime | None, rows: int, features: int, drifted: int,
                 drift_share: float | None, dataset_drift: bool) -> int:
    """Record one drift check; returns its id."""
    row = conn.execute(
        """INSERT INTO drift_checks (model_name, model_version, scope, run_id, run_ids, run_role, window_start,
                                     window_end, rows, features, drifted, drift_share, dataset_drift)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING check_id""",
        [model_name, model_version, scope, run_id, run_ids, run_role, window_start, window_end, rows, features,
         drifted, drift_share, dataset_drift],
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_drift_results(conn: psycopg.Connection, check_id: int, results: Iterable[dict[str, Any]]) -> None:
    """Record a check's metrics, one row per column and metric."""
    conn.cursor().executemany(
        f"""INSERT INTO drift_results (check_id, {', '.join(RESULT_COLUMNS)})
            VALUES (%s, {', '.join(['%s'] * len(RESULT_COLUMNS))})""",
        [[check_id, *(r[k] for k in RESULT_COLUMNS)] for r in results],
    )


def drift_history(conn: psycopg.Connection, model_name: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """The ``drift_over_time`` rows of the newest ``limit`` checks of a model, oldest first; each
    check probed on its own, so the cost follows ``limit``, not how many checks the model had."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT v.* FROM (SELECT check_id FROM drift_checks WHERE model_name = %s
                            ORDER BY check_id DESC LIMIT %s) AS k
           CROSS JOIN LATERAL (SELECT * FROM drift_over_time o WHERE o.check_id = k.check_id OFFSET 0) AS v
           ORDER BY coalesce(v.published_at, v.window_end), v.check_id, v.role = 'output', v.column_name""",
        [model_name, limit],
    ).fetchall()


def check_drift(conn: psycopg.Connection, check_id: int) -> list[dict[str, Any]]:
    """One check's ``drift_over_time`` rows: features first, then outputs."""
    return conn.cursor(row_factory=dict_row).execute(
        "SELECT * FROM drift_over_time WHERE check_id = %s ORDER BY role = 'output', column_name", [check_id]
    ).fetchall()


def latest_check(conn: psycopg.Connection, model_name: str) -> dict[str, Any] | None:
    """The check of the model's most recently published served run (else its newest check)."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT c.*, r.partition_key, r.published_at FROM drift_checks c LEFT JOIN runs r ON r.run_id = c.run_id
           WHERE c.model_name = %s
           ORDER BY c.run_role = 'current' DESC, r.published_at DESC NULLS LAST, c.check_id DESC LIMIT 1""",
        [model_name],
    ).fetchone()


# --- labels --------------------------------------------------------------------------------


@contextmanager
def label_stage(conn: psycopg.Connection) -> Iterator[psycopg.Copy]:
    """A temporary table for one ingest, filled by COPY (entity_id, event_time, label, label_value, line)."""
    conn.execute(
        """CREATE TEMP TABLE label_stage (entity_id text NOT NULL, event_time timestamptz NOT NULL,
                                          label text NOT NULL, label_value float8, line bigint NOT NULL)
           ON COMMIT DROP"""
    )
    with conn.cursor().copy("COPY label_stage (entity_id, event_time, label, label_value, line) FROM STDIN") as copy:
        yield copy


def merge_labels(conn: psycopg.Connection, model_name: str, *, repeat_is_same: bool = False) -> dict[str, int]:
    """Upsert the staged labels (the last line wins for a repeated entity and time).

    A label already stored with the same value is left alone, so ingesting twice changes nothing;
    a different value is a correction and replaces it. With ``repeat_is_same`` (event times that
    were guessed, not read), a label equal to its entity's latest stored label is that label
    again, whatever its time. Counts what happened, and how many staged labels are for entities
    no retained run of the model scored.
    """
    # Entities held by a run of a version's set are in that version's segment; the other retained
    # runs are probed, spelled out so that the planner opens only their tables.
    superseded = [r[0] for r in conn.execute(
        f"""SELECT run_id FROM runs r WHERE model_name = %s AND status IN ('published', 'superseded')
            AND NOT ({IN_SET})""", [model_name])]
    in_superseded = sql.SQL(
        """UNION SELECT p.entity_id FROM predictions p
           WHERE p.run_id IN ({runs}) AND p.entity_id IN (SELECT entity_id COLLATE "C" FROM staged)""").format(
        runs=sql.SQL(", ").join(map(sql.Literal, superseded))) if superseded else sql.SQL("")
    row = conn.execute(sql.SQL(
        """WITH staged AS (
               SELECT DISTINCT ON (entity_id, event_time) * FROM label_stage
               ORDER BY entity_id, event_time, line DESC),
           changed AS (
               INSERT INTO labels AS l (model_name, entity_id, event_time, label, label_value)
               SELECT %(model)s, s.entity_id, s.event_time, s.label, s.label_value FROM staged s
               WHERE NOT (%(same)s AND EXISTS (
                   SELECT 1 FROM (SELECT label, label_value FROM labels
                                  WHERE model_name = %(model)s AND entity_id = s.entity_id
                                  ORDER BY event_time DESC LIMIT 1) AS last
                   WHERE last.label = s.label AND last.label_value IS NOT DISTINCT FROM s.label_value))
               ON CONFLICT (model_name, entity_id, event_time) DO UPDATE
                   SET label = excluded.label, label_value = excluded.label_value, arrival_time = now(),
                       matched_at = NULL
                   WHERE l.label IS DISTINCT FROM excluded.label OR l.label_value IS DISTINCT FROM excluded.label_value
               RETURNING (xmax = 0) AS inserted),
           scored AS (
               SELECT d.entity_id FROM serving_segments s
               CROSS JOIN LATERAL (  -- the model's segments alone (OFFSET 0: not flattened into a join)
                   SELECT p.entity_id FROM served_predictions p WHERE p.segment_id = s.segment_id
                   AND p.entity_id IN (SELECT entity_id COLLATE "C" FROM staged) OFFSET 0) d
               WHERE s.model_name = %(model)s
               {in_superseded})
           SELECT (SELECT count(*) FROM label_stage),
                  (SELECT count(*) FROM staged),
                  (SELECT count(*) FILTER (WHERE inserted) FROM changed),
                  (SELECT count(*) FILTER (WHERE NOT inserted) FROM changed),
                  (SELECT count(*) FROM staged s
                   WHERE NOT EXISTS (SELECT 1 FROM scored c WHERE c.entity_id = s.entity_id COLLATE "C"))""").format(
        in_superseded=in_superseded),
        {"model": model_name, "same": repeat_is_same}, prepare=False,
    ).fetchone()
    assert row is not None
    read, distinct, inserted, updated, unscored = (int(v) for v in row)
    return {"rows": read, "repeated": read - distinct, "inserted": inserted, "updated": updated,
            "unchanged": distinct - inserted - updated, "unscored": unscored}


class StoredTally(NamedTuple):
    """The summed tally of the labels matched to one run on one UTC day (`monitor.tallies`)."""

    run_id: int
    day: datetime
    #: Labels older than every run holding their entity (matched to the earliest): judged apart.
    backfill: bool
    model_version: int
    run_role: str
    tally: list[float]
    labels: int


def add_tallies(conn: psycopg.Connection, model_name: str, rows: Iterable[StoredTally]) -> None:
    """Add rows to the stored tallies, element by element."""
    conn.cursor().executemany(
        """INSERT INTO performance_tallies AS t (run_id, day, backfill, model_version, run_role, tally, labels,
                                                 model_name)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (run_id, day, backfill) DO UPDATE
               SET tally = (SELECT array_agg(a + b ORDER BY i)
                            FROM unnest(t.tally, excluded.tally) WITH ORDINALITY AS u(a, b, i)),
                   labels = t.labels + excluded.labels, updated_at = now()""",
        [[*row, model_name] for row in rows],
    )


def tallies(conn: psycopg.Connection, model_name: str, *, since: datetime | None = None,
            role: str | None = None) -> list[StoredTally]:
    """The tallies (days from ``since``, runs of ``role``)."""
    cursor = conn.cursor(binary=True, row_factory=args_row(StoredTally))  # binary: floats not parsed from text
    return cursor.execute(
        """SELECT run_id, day, backfill, model_version, run_role, tally, labels FROM performance_tallies
           WHERE model_name = %s AND labels > 0 AND (%s::timestamptz IS NULL OR day >= %s)
             AND (%s::text IS NULL OR run_role = %s)
           ORDER BY run_id, day""", [model_name, since, since, role, role]).fetchall()


def delete_tallies(conn: psycopg.Connection, model_name: str) -> None:
    """Forget the model's tallies (to count every match again)."""
    conn.execute("DELETE FROM performance_tallies WHERE model_name = %s", [model_name])


def pending_counts(conn: psycopg.Connection, model_name: str, *, window: str) -> dict[datetime, int]:
    """How many labels wait to be matched, per time window of their event time."""
    rows = conn.execute(
        """SELECT date_trunc(%s, event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)
           FROM labels WHERE model_name = %s AND matched_at IS NULL GROUP BY 1""",
        [window, model_name],
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def last_change(conn: psycopg.Connection, model_name: str) -> datetime | None:
    """When the model last got a label still to match, or a published run: what realized
    performance depends on beyond the labels already tallied."""
    row = conn.execute(
        """SELECT greatest((SELECT max(arrival_time) FROM labels WHERE model_name = %s AND matched_at IS NULL),
                           (SELECT max(greatest(published_at, superseded_at)) FROM runs WHERE model_name = %s))""",
        [model_name, model_name],
    ).fetchone()
    return row[0] if row else None


# --- alerts --------------------------------------------------------------------------------


def insert_alert(conn: psycopg.Connection, *, model_name: str, model_version: int | None, kind: str,
                 scope_key: str, run_id: int | None, message: str, details: dict[str, Any]) -> int | None:
    """Raise an alert; None if one of this kind was already raised for this scope."""
    row = conn.execute(
        """INSERT INTO alerts (model_name, model_version, kind, scope_key, run_id, message, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (model_name, kind, scope_key) DO NOTHING RETURNING alert_id""",
        [model_name, model_version, kind, scope_key, run_id, message, Jsonb(details)],
    ).fetchone()
    return int(row[0]) if row else None


def find_alerts(conn: psycopg.Connection, model_name: str, scope_keys: list[str]) -> list[dict[str, Any]]:
    """Alerts already raised for these scopes."""
    return conn.cursor(row_factory=dict_row).execute(
        "SELECT * FROM alerts WHERE model_name = %s AND scope_key = ANY(%s) ORDER BY alert_id",
        [model_name, scope_keys],
    ).fetchall()


def undelivered_alerts(conn: psycopg.Connection, model_name: str, *, kinds: list[str]) -> list[dict[str, Any]]:
    """The alerts of ``kinds`` raised for ``model_name`` and not yet delivered nor tried."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT alert_id, model_version, kind, scope_key, run_id, message, details FROM alerts
           WHERE model_name = %s AND kind = ANY(%s) AND delivered_at IS NULL AND delivery_error IS NULL
           ORDER BY alert_id""", [model_name, kinds]).fetchall()


def mark_delivered(conn: psycopg.Connection, alert_id: int, *, error: str | None) -> None:
    """Record the outcome of sending an alert to the webhook."""
    conn.execute(
        "UPDATE alerts SET delivered_at = CASE WHEN %s::text IS NULL THEN now() END, delivery_error = %s "
        "WHERE alert_id = %s",
        [error, error, alert_id],
    )


def recent_alerts(conn: psycopg.Connection, model_name: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """The model's newest alerts."""
    return conn.cursor(row_factory=dict_row).execute(
        "SELECT * FROM alerts WHERE model_name = %s ORDER BY alert_id DESC LIMIT %s", [model_name, limit]
    ).fetchall()


def previous_cusum(conn: psycopg.Connection, model_name: str, run_id: int) -> tuple[int | None,
                                                                                   dict[str, tuple[float, float]]]:
    """The model version and per-column (up, down) CUSUMs of the served run checked last before
    ``run_id`` (by publication): where the next run's CUSUMs continue from."""
    rows = conn.execute(
        """WITH before AS (
               SELECT c.check_id, c.model_version FROM drift_checks c JOIN runs r ON r.run_id = c.run_id
               WHERE c.model_name = %(model)s AND c.scope = 'run' AND c.run_role = 'current'
                 AND (r.published_at, r.run_id) < (SELECT published_at, run_id FROM runs WHERE run_id = %(run)s)
               ORDER BY r.published_at DESC, r.run_id DESC LIMIT 1)
           SELECT b.model_version, d.column_name, max(d.value) FILTER (WHERE d.metric = 'cusum_up'),
                  max(d.value) FILTER (WHERE d.metric = 'cusum_down'), bool_or(d.status = 'alert')
           FROM before b LEFT JOIN drift_results d
             ON d.check_id = b.check_id AND d.metric IN ('cusum_up', 'cusum_down')
           GROUP BY b.model_version, d.column_name""",
        {"model": model_name, "run": run_id},
    ).fetchall()
    state = {column: (0.0, 0.0) if alarmed else (up or 0.0, down or 0.0)  # an alarm starts it again
             for _, column, up, down, alarmed in rows if column is not None}
    return (rows[0][0] if rows else None), state
