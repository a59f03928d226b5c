"""Matching labels to the predictions they judge, once each, at a cost that does not grow with the
number of runs the store keeps.

A label for entity e at event time t is matched, once per run role, to the prediction for e from
the retained run published most recently at or before t (the one in force at t, 'in_force'; or,
if that run was since superseded by one without e, 'latest_before'); when no run holding e was
published by t (a backfill), to the earliest run holding e, as 'earliest'. The match keeps a copy
of the prediction, so it outlives the run's dropped table.

PostgreSQL has no index across the run tables, so the obvious query probes every run for every
label. Two shortcuts avoid it:

* the serving directory (`store.serving`) holds each entity's newest published prediction per
  role: when that run predates the label and no superseded run of the role was published between
  them, it is the answer (labels arrive after the predictions they judge: the usual case);
* the other labels (entities re-scored since the label's time, backfills) walk the runs from the
  newest down, one statement per run over the labels still open, each label leaving at its first
  hit: a label k publishes old costs k probes, not one per run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from store.schema import RUN_ROLES, run_table
from store.serving import IN_SET

#: Runs whose predictions are still stored (a dropped run keeps its profile, not its rows).
RETAINED = ("published", "superseded")
#: What `match_labels` and `label_matches` return per match: +1 counts it, -1 takes back a count.
MATCH_COLUMNS = ("sign", "run_id", "model_version", "run_role", "event_time", "matched_as", "actual", "actual_value",
                 "prediction", "predicted", "scores")

LabelKey = tuple[str, datetime]

# The labels waiting in (after, upto], and whether each was matched before (a correction).
_WAITING = """
    CREATE TEMP TABLE match_waiting AS
    SELECT l.entity_id, l.event_time, l.label, l.label_value,
           EXISTS (SELECT 1 FROM label_matches m WHERE m.model_name = l.model_name
                   AND m.entity_id = l.entity_id AND m.event_time = l.event_time) AS corrected
    FROM labels l WHERE l.model_name = %(model)s AND l.matched_at IS NULL
      AND (%(after)s::text IS NULL OR (l.entity_id, l.event_time) > (%(after)s, %(after_time)s))
      AND (%(upto)s::text IS NULL OR (l.entity_id, l.event_time) <= (%(upto)s, %(upto_time)s))"""

# Each new label per role, with the directory's answer where it decides. The directory's newest row
# of the role (over every version's segment) is the run in force when it predates the label and no
# run the segments may hide came between them: a superseded run, a retained run outside its
# version's set, or one its version's later run of the other role shadows. With no row of the role
# and no such run at all, no retained run holds the entity.
_SERVED = f"""
    CREATE TEMP TABLE match_served AS
    WITH superseded AS MATERIALIZED (
        WITH retained AS (
            SELECT r.run_id, r.model_version, r.role, r.published_at, r.status, ({IN_SET}) AS in_set
            FROM runs r WHERE r.model_name = %(model)s AND r.status IN ('published', 'superseded'))
        SELECT role, published_at FROM retained r
        WHERE status = 'superseded' OR NOT in_set
           OR EXISTS (SELECT FROM retained z WHERE z.in_set AND z.model_version = r.model_version
                      AND z.role <> r.role AND z.published_at > r.published_at)),
    published AS MATERIALIZED (
        SELECT run_id FROM runs WHERE model_name = %(model)s AND status = 'published')
    SELECT w.entity_id, w.event_time, w.label, w.label_value, ro.role AS run_role, d.run_id,
           d.model_version AS version, 'in_force'::text AS matched_as, d.prediction, d.label AS predicted, d.scores,
           CASE WHEN d.run_id IS NULL THEN NOT EXISTS (SELECT FROM superseded s WHERE s.role = ro.role)
                WHEN d.run_id NOT IN (SELECT run_id FROM published) THEN false  -- not the directory's to answer
                ELSE d.published_at <= w.event_time
                     AND NOT EXISTS (SELECT FROM superseded s WHERE s.role = ro.role
                                     AND s.published_at >= d.published_at AND s.published_at <= w.event_time)
           END AS decided
    FROM match_waiting w CROSS JOIN unnest(%(roles)s::text[]) AS ro(role)
    LEFT JOIN LATERAL (  -- a probe of each segment's key per label and role, however large either side
        SELECT d.run_id, r.model_version, r.published_at, d.prediction, d.label, d.scores
        FROM serving_segments s
        CROSS JOIN LATERAL (  -- the model's segments alone (OFFSET 0: not flattened into a join)
            SELECT * FROM served_predictions p WHERE p.segment_id = s.segment_id
            AND p.entity_id = w.entity_id COLLATE "C" OFFSET 0) d
        JOIN runs r ON r.run_id = d.run_id
        WHERE s.model_name = %(model)s AND r.role = ro.role
        ORDER BY r.published_at DESC LIMIT 1) d ON true
    WHERE NOT w.corrected"""

_OPEN = """
    CREATE TEMP TABLE match_open AS
    SELECT entity_id, event_time, label, label_value, run_role FROM match_served WHERE NOT decided;
    DELETE FROM match_served WHERE NOT decided OR run_id IS NULL;
    ANALYZE match_open"""

# One step of the walk: the open labels of the run's role that this run (published at or before
# their time, or, for the backfill pass, after it) holds leave with its prediction.
_STEP = """
    WITH hit AS (
        DELETE FROM match_open o USING {table} p
        WHERE o.run_role = %(role)s AND p.entity_id = o.entity_id COLLATE "C" AND {when}
        RETURNING o.*, p.prediction, p.label AS predicted, p.scores)
    INSERT INTO match_served (entity_id, event_time, label, label_value, run_role, run_id, version, matched_as,
                              prediction, predicted, scores, decided)
    SELECT entity_id, event_time, label, label_value, run_role, %(run)s, %(version)s,
           CASE WHEN %(backfill)s THEN 'earliest'
                WHEN event_time < coalesce(%(superseded_at)s::timestamptz, 'infinity') THEN 'in_force'
                ELSE 'latest_before' END,
           prediction, predicted, scores, true
    FROM hit"""

# Save the new matches, move the corrected ones to their new label, mark the labels matched, and
# return what changed.
_SAVE = """
    WITH previous AS MATERIALIZED (
        SELECT m.*, w.label AS new_label, w.label_value AS new_value
        FROM match_waiting w JOIN label_matches m ON m.model_name = %(model)s AND m.entity_id = w.entity_id
                                               AND m.event_time = w.event_time
        WHERE w.corrected),
    saved AS (
        INSERT INTO label_matches (model_name, entity_id, event_time, run_role, run_id, model_version,
                                   matched_as, label, label_value, prediction, predicted, scores)
        SELECT %(model)s, entity_id, event_time, run_role, run_id, version, matched_as, label, label_value,
               prediction, predicted, scores FROM match_served),
    fixed AS (
        UPDATE label_matches m SET label = p.new_label, label_value = p.new_value, matched_at = now()
        FROM previous p WHERE m.model_name = %(model)s AND m.entity_id = p.entity_id
          AND m.event_time = p.event_time AND m.run_role = p.run_role),
    done AS (
        UPDATE labels l SET matched_at = now()
        FROM (SELECT entity_id, event_time, label, label_value FROM match_served
              UNION SELECT entity_id, event_time, new_label, new_value FROM previous) AS d
        WHERE l.model_name = %(model)s AND l.entity_id = d.entity_id AND l.event_time = d.event_time
          -- a correction ingested meanwhile waits for the next match
          AND l.label = d.label AND l.label_value IS NOT DISTINCT FROM d.label_value)
    SELECT 1, run_id, version, run_role, event_time, matched_as, label, label_value, prediction,
           predicted, scores FROM match_served
    UNION ALL
    SELECT -1, run_id, model_version, run_role, event_time, matched_as, label, label_value, prediction,
           predicted, scores FROM previous
    UNION ALL
    SELECT 1, run_id, model_version, run_role, event_time, matched_as, new_label, new_value, prediction,
           predicted, scores FROM previous"""


def pending_bound(conn: psycopg.Connection, model_name: str, *, after: LabelKey | None,
                  size: int) -> LabelKey | None:
    """The key (entity_id, event_time) of the ``size``-th label waiting to be matched after
    ``after``, in key order; None when fewer wait."""
    waiting = conn.execute("SELECT count(*) FROM labels WHERE model_name = %s AND matched_at IS NULL",
                           [model_name]).fetchone()
    if waiting is None or waiting[0] < size:  # the usual case, read off the partial index
        return None
    row = conn.execute(
        """SELECT entity_id, event_time FROM labels
           WHERE model_name = %(model)s AND matched_at IS NULL
             AND (%(entity)s::text IS NULL OR (entity_id, event_time) > (%(entity)s, %(time)s))
           ORDER BY entity_id, event_time OFFSET %(offset)s LIMIT 1""",
        {"model": model_name, "entity": after[0] if after else None, "time": after[1] if after else None,
         "offset": size - 1},
    ).fetchone()
    return (row[0], row[1]) if row else None


def match_labels(conn: psycopg.Connection, model_name: str, *, after: LabelKey | None = None,
                 upto: LabelKey | None = None) -> list[tuple[Any, ...]]:
    """Match the labels that wait for it (new, or corrected since), those with keys in
    (``after``, ``upto``], as the module says; returns the `MATCH_COLUMNS` of what changed, to be
    added to (or, sign -1, taken from) the performance tallies. Labels whose entity no retained
    run holds wait for such a run. Run it inside a transaction."""
    params = {"model": model_name, "roles": list(RUN_ROLES), "after": after[0] if after else None,
              "after_time": after[1] if after else None, "upto": upto[0] if upto else None,
              "upto_time": upto[1] if upto else None}
    conn.execute(_WAITING, params)
    conn.execute("ANALYZE match_waiting")  # a temporary table has no statistics until asked
    conn.execute(_SERVED, params)
    conn.execute(_OPEN)
    _walk(conn, model_name)
    rows = conn.execute(_SAVE, params).fetchall()
    conn.execute("DROP TABLE match_waiting, match_served, match_open")
    return rows


def _walk(conn: psycopg.Connection, model_name: str) -> None:
    """Match the open labels by walking the retained runs: newest first for the runs published
    by each label's time, then, for what is left (backfills), oldest first."""
    bounds = {role: (first, last, count) for role, first, last, count in conn.execute(
        "SELECT run_role, min(event_time), max(event_time), count(*) FROM match_open GROUP BY run_role")}
    if not bounds:
        return
    runs = conn.execute(
        """SELECT run_id, model_version, role, published_at, superseded_at FROM runs
           WHERE model_name = %s AND status = ANY(%s) AND role = ANY(%s)
           ORDER BY published_at DESC, run_id""", [model_name, list(RETAINED), list(bounds)]).fetchall()
    left = {role: count for role, (_, _, count) in bounds.items()}
    for backfill, order in ((False, runs), (True, runs[::-1])):
        for run_id, version, role, published_at, superseded_at in order:
            first, last, _ = bounds[role]
            if not left[role] or (published_at > last if not backfill else published_at <= first):
                continue
            when = "o.event_time < %(at)s" if backfill else "o.event_time >= %(at)s"
            left[role] -= conn.execute(sql.SQL(_STEP).format(table=run_table(run_id), when=sql.SQL(when)),
                                       {"role": role, "at": published_at, "run": run_id, "version": version,
                                        "backfill": backfill, "superseded_at": superseded_at}).rowcount


def analyze_labels(conn: psycopg.Connection) -> None:
    """Refresh the planner's statistics of ``labels`` (after matching many of them, so that the
    few left waiting are found through the partial index)."""
    conn.execute("ANALYZE labels")


def label_matches(conn: psycopg.Connection, model_name: str) -> Iterator[list[tuple[Any, ...]]]:
    """Every match of the model as `MATCH_COLUMNS` (sign 1), 200,000 at a time (a server-side
    cursor: run inside a transaction)."""
    with conn.cursor(name=f"predstore_matches_{abs(hash(model_name))}") as cursor:
        cursor.execute(
            """SELECT 1, run_id, model_version, run_role, event_time, matched_as, label, label_value, prediction,
                      predicted, scores
               FROM label_matches WHERE model_name = %s""", [model_name])
        while rows := cursor.fetchmany(200_000):
            yield rows
