"""The serving directory: what every lookup answers, kept so that a lookup costs the same whatever the
store's age, a publish costs about what writing its run costs, and a promotion is a pointer flip.

What is served (the tests hold the directory to these definitions):

* a version's **set** of runs: per partition, the newest run of the version that was published
  (a run superseded by another version's run stays in its version's set, so a rollback serves it
  again), none published before the version's latest snapshot run;
* a version's **segment**: per entity, the row of the newest run of the set that holds it;
* a model's **serving order**: its current version first, then the versions that were current
  before, most recent first. A snapshot published by the current version cuts the order after it:
  the entities the snapshot lacks are served no more;
* the **answer** for an entity: its row in the first segment of the order that holds it,
  ``version_current`` when that is the current version's.

How: ``served_predictions`` is partitioned by segment id, one table per (model, version), and
``serving_segments`` points each (model, version) at its live table and gives its rank in the
serving order. A lookup probes the unique index of each ranked segment (two or three tables, never
one per run). A publish either upserts the run's rows into its version's live segment (a run small
beside the segment) or builds the next segment table in bulk, from the run and the live segment, and
flips the pointer (a large run, a full refresh, a snapshot): sorting and building an index beats
inserting into a large B-tree row by row. Promotion and rollback re-rank the model's segments: a few
rows, whatever the model serves. Everything happens in the caller's transaction; a replaced segment
table stays attached, unreferenced, until `drop_retired` detaches and drops it after the commit.

Lookups read with a repeatable-read snapshot (`store.lookups.READER_OPTIONS`), taken before their
plan: a segment attached after the plan is not yet in the snapshot either, and a replaced one stays
attached until every snapshot that predates its replacement is gone, so every segment a lookup's
snapshot points at is in its plan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import psycopg
from psycopg import sql

from store import notices
from store.names import SEGMENT_SCHEMA, run_table, segment_table

log = logging.getLogger("predstore.serving")

#: NOTIFY channel told the model name whenever what it serves changes (publish, promotion, expiry).
PUBLISH_CHANNEL = "predstore_published"

#: Seconds a scoring job waits after its publish for the lookups older than it to end, so that it
#: drops the segment tables it replaced itself.
SETTLE = 2.0

#: A run at least this share of its segment's rows rebuilds the segment instead of upserting into it.
REBUILD_SHARE = 0.25

_ROW = "entity_id, run_id, row_number, prediction, label, scores"

#: Whether the retained run ``r`` (status published or superseded) is in its version's set: no
#: snapshot of the version came after it, nor another run of its version and partition.
IN_SET = """
    r.published_at >= coalesce((SELECT max(s.published_at) FROM runs s
                                WHERE s.model_name = r.model_name AND s.model_version = r.model_version
                                  AND s.snapshot AND s.published_at IS NOT NULL), '-infinity')
    AND NOT EXISTS (SELECT FROM runs n WHERE n.model_name = r.model_name AND n.model_version = r.model_version
                    AND n.partition_key = r.partition_key AND n.published_at > r.published_at)"""
#: The runs of one version's set (see the module's docstring), newest first.
SET_RUNS = f"""
    SELECT r.run_id FROM runs r
    WHERE r.model_name = %(model)s AND r.model_version = %(version)s AND r.status IN ('published', 'superseded')
      AND {IN_SET}
    ORDER BY r.published_at DESC, r.run_id DESC"""


def serve_run(conn: psycopg.Connection, run_id: int, *, snapshot: bool = False) -> None:
    """Serve ``run_id``, published in this transaction: its rows become its version's newest, the
    entities its partition's previous run of the version held and it lacks fall back to the rest of
    the set, and a ``snapshot`` replaces the version's segment (and, for the current version, ends
    the fallback to earlier versions)."""
    model, version, partition, published_at = conn.execute(
        "SELECT model_name, model_version, partition_key, published_at FROM runs WHERE run_id = %s",
        [run_id]).fetchone() or (None, None, None, None)
    assert model is not None, run_id
    _lock(conn, model)
    segment_id, segment_rows = _segment(conn, model, version)
    rows = _reltuples(conn, run_table(run_id))
    if snapshot:
        _rebuild(conn, model, version, old=None, run_id=run_id)
        conn.execute("UPDATE serving_segments SET snapshot_run_id = %s WHERE model_name = %s AND model_version = %s",
                     [run_id, model, version])
        if conn.execute("SELECT rank FROM serving_segments WHERE model_name = %s AND model_version = %s",
                        [model, version]).fetchone() == (0,):
            conn.execute("UPDATE serving_segments SET rank = NULL WHERE model_name = %s AND model_version <> %s",
                         [model, version])
        return
    # The run of this partition and version that this one replaces in the version's set.
    replaced = conn.execute(
        """SELECT run_id FROM runs WHERE model_name = %s AND model_version = %s AND partition_key = %s
           AND published_at < %s AND run_id <> %s ORDER BY published_at DESC, run_id DESC LIMIT 1""",
        [model, version, partition, published_at, run_id]).fetchone()
    replaced_id = int(replaced[0]) if replaced else None
    if rows >= REBUILD_SHARE * segment_rows:
        _rebuild(conn, model, version, old=(segment_id, replaced_id), run_id=run_id)
        return
    live = segment_table(segment_id)
    added = conn.execute(sql.SQL(
        """WITH upserted AS (
               INSERT INTO {seg} (segment_id, {row}) SELECT {id}, {row} FROM {run} ORDER BY entity_id
               ON CONFLICT (entity_id) DO UPDATE SET run_id = EXCLUDED.run_id, row_number = EXCLUDED.row_number,
                   prediction = EXCLUDED.prediction, label = EXCLUDED.label, scores = EXCLUDED.scores
               RETURNING xmax = 0 AS inserted)
           SELECT count(*) FILTER (WHERE inserted) FROM upserted""").format(
        seg=live, row=sql.SQL(_ROW), id=sql.Literal(segment_id), run=run_table(run_id))).fetchone()
    orphans: list[str] = []
    if replaced_id is not None:
        orphans = [r[0] for r in conn.execute(sql.SQL(
            """DELETE FROM {seg} d WHERE d.run_id = %s
               AND NOT EXISTS (SELECT FROM {run} n WHERE n.entity_id = d.entity_id) RETURNING d.entity_id""").format(
            seg=live, run=run_table(run_id)), [replaced_id]).fetchall()]
    found = _fall_back(conn, model, version, segment_id, orphans)
    conn.execute("UPDATE serving_segments SET rows = rows + %s, updated_at = now() WHERE segment_id = %s",
                 [(int(added[0]) if added else 0) - len(orphans) + found, segment_id])


def unserve_runs(conn: psycopg.Connection, run_ids: Sequence[int]) -> int:
    """Take the rows of ``run_ids`` (leaving their versions' sets in this transaction: expired or
    dropped, their tables still there) out of the segments; their entities fall back to the rest of
    each set. Returns how many entities no ranked segment serves any more."""
    gone = 0
    for run_id in run_ids:
        row = conn.execute(
            """SELECT s.model_name, s.model_version, s.segment_id, s.rank FROM runs r JOIN serving_segments s
               ON s.model_name = r.model_name AND s.model_version = r.model_version WHERE r.run_id = %s""",
            [run_id]).fetchone()
        if row is None:
            continue
        model, version, segment_id, rank = row
        _lock(conn, model)
        orphans = [r[0] for r in conn.execute(sql.SQL(
            """DELETE FROM {seg} d USING {run} e WHERE d.entity_id = e.entity_id AND d.run_id = %s
               RETURNING d.entity_id""").format(seg=segment_table(segment_id), run=run_table(run_id)),
            [run_id]).fetchall()]
        found = _fall_back(conn, model, version, segment_id, orphans)
        conn.execute("UPDATE serving_segments SET rows = rows - %s WHERE segment_id = %s",
                     [len(orphans) - found, segment_id])
        if rank is not None:
            gone += len(orphans) - found
    return gone


def rank_current(conn: psycopg.Connection, model: str, version: int) -> None:
    """Make ``version`` the head of ``model``'s serving order (a promotion or a rollback: the
    versions current before it follow, most recent first), in the alias's transaction."""
    _lock(conn, model)
    _segment(conn, model, version)
    order = [int(r[0]) for r in conn.execute(
        "SELECT model_version FROM serving_segments WHERE model_name = %s AND rank IS NOT NULL ORDER BY rank",
        [model]).fetchall()]
    order = [version, *(v for v in order if v != version)]
    conn.execute(
        """UPDATE serving_segments s SET rank = o.rank - 1, updated_at = now()
           FROM unnest(%s::int[]) WITH ORDINALITY AS o(version, rank)
           WHERE s.model_name = %s AND s.model_version = o.version""", [order, model])
    notices.notify(conn, PUBLISH_CHANNEL, model)


def unserve_entity(conn: psycopg.Connection, entity_id: str, *, model: str | None = None) -> int:
    """Remove ``entity_id`` from every segment (of ``model`` only, if given)."""
    return conn.execute(
        """DELETE FROM served_predictions d USING serving_segments s
           WHERE d.segment_id = s.segment_id AND d.entity_id = %s AND (%s::text IS NULL OR s.model_name = %s)""",
        [entity_id, model, model]).rowcount


def drop_retired(conn: psycopg.Connection, *, wait: str = "100ms", settle: float = 0.0) -> int:
    """Detach and drop the segment tables no (model, version) points at any more: those a rebuild
    replaced, once every transaction that might still point at one has ended (any whose snapshot
    predates the rebuild's commit: a lookup's, an analyst's). Returns how many were dropped.

    ``settle`` seconds at most are spent waiting for those transactions first, as the scoring job
    does after its publish. Then one short transaction (``conn`` must be idle) takes
    served_predictions' exclusive lock, waiting ``wait`` at most (lookups queue behind it that
    long), and detaches and drops them all. Not ``DETACH ... CONCURRENTLY``: a lookup planned while
    such a detach finishes fails inside PostgreSQL (it plans with the table, and runs without it).
    What is left goes at the next call.
    """
    deadline = time.monotonic() + settle
    while settle and time.monotonic() < deadline \
            and conn.execute(f"SELECT EXISTS (SELECT FROM retired_segments r WHERE {_SEEN})").fetchone() != (False,):
        time.sleep(0.02)
    dropped = 0
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", [wait])
            for (pending,) in conn.execute(
                    "SELECT inhrelid::regclass::text FROM pg_inherits "
                    "WHERE inhparent = 'served_predictions'::regclass AND inhdetachpending").fetchall():
                conn.execute(sql.SQL("ALTER TABLE served_predictions DETACH PARTITION {} FINALIZE").format(
                    sql.SQL(pending)))
            retired = [int(r[0]) for r in conn.execute(
                f"""SELECT t.id FROM pg_class c, CAST(substring(c.relname FROM 'segment_([0-9]+)') AS bigint) AS t(id)
                    WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r' AND c.relname ~ '^segment_[0-9]+$'
                    AND NOT EXISTS (SELECT FROM serving_segments s WHERE s.segment_id = t.id)
                    AND NOT EXISTS (SELECT FROM retired_segments r WHERE r.segment_id = t.id AND {_SEEN})""",
                [SEGMENT_SCHEMA]).fetchall()]
            for segment_id in retired:
                table = segment_table(segment_id)
                if conn.execute("SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s)",
                                [table.as_string(conn)]).fetchone():
                    conn.execute(sql.SQL("ALTER TABLE served_predictions DETACH PARTITION {}").format(table))
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            conn.execute("DELETE FROM retired_segments WHERE segment_id = ANY(%s)", [retired])
            dropped = len(retired)
    except psycopg.errors.LockNotAvailable:
        log.info("a replaced serving segment waits for lookups or an open transaction on served_predictions; "
                 "it is dropped later")
        return 0
    return dropped


#: Whether the retired segment ``r`` may still be seen: a transaction other than this one holds a
#: snapshot taken while the rebuild that retired it ran (its xmin is not after the rebuild's xid).
_SEEN = """EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid() AND a.backend_xmin IS NOT NULL
                   AND age(a.backend_xmin) >= age(CAST(CAST(mod(r.retired_xid, 4294967296) AS text) AS xid)))"""


def set_runs(conn: psycopg.Connection, model: str, version: int) -> list[int]:
    """The runs of ``model`` ``version``'s set, newest first."""
    return [int(r[0]) for r in conn.execute(SET_RUNS, {"model": model, "version": version}).fetchall()]


def _lock(conn: psycopg.Connection, model: str) -> None:
    """Take ``model``'s serving lock until the transaction ends: its publishes, promotions and
    expiries change its segments and ranks one at a time, in one order (no deadlock between a
    snapshot that unranks versions and a promotion that re-ranks them)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('predstore.serving:' || %s))", [model])


def _segment(conn: psycopg.Connection, model: str, version: int) -> tuple[int, int]:
    """(segment id, rows) of (model, version), locked for this transaction; an empty one is made
    (not ranked) if the version has none yet."""
    row = conn.execute("SELECT segment_id, rows FROM serving_segments WHERE model_name = %s AND model_version = %s "
                       "FOR UPDATE", [model, version]).fetchone()
    if row is not None:
        return int(row[0]), int(row[1])
    segment_id = _new_table(conn)
    _index_and_attach(conn, segment_id)
    conn.execute("INSERT INTO serving_segments (model_name, model_version, segment_id, rows) VALUES (%s, %s, %s, 0)",
                 [model, version, segment_id])
    return segment_id, 0


def _new_table(conn: psycopg.Connection) -> int:
    """A new, empty, unattached segment table; returns its id."""
    segment_id = int(conn.execute("SELECT nextval('serving_segment_ids')").fetchone()[0])  # type: ignore[index]
    conn.execute(sql.SQL("CREATE TABLE {t} (LIKE served_predictions INCLUDING DEFAULTS)").format(
        t=segment_table(segment_id)))
    return segment_id


def _index_and_attach(conn: psycopg.Connection, segment_id: int) -> None:
    """Index a filled segment table, give the planner its statistics, and attach it."""
    table = segment_table(segment_id)
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    conn.execute(sql.SQL("CREATE UNIQUE INDEX {k} ON {t} (entity_id)").format(
        k=sql.Identifier(f"uq_segment_{segment_id}"), t=table))
    # Statistics now: a lookup planned against an unanalyzed table may scan it.
    conn.execute(sql.SQL("ANALYZE {t}").format(t=table))
    conn.execute(sql.SQL("ALTER TABLE {t} ADD CONSTRAINT {c} CHECK (segment_id = {id})").format(
        t=table, c=sql.Identifier(f"ck_segment_{segment_id}"), id=sql.Literal(segment_id)))
    conn.execute(sql.SQL("ALTER TABLE served_predictions ATTACH PARTITION {t} FOR VALUES IN ({id})").format(
        t=table, id=sql.Literal(segment_id)))


def _rebuild(conn: psycopg.Connection, model: str, version: int, *, old: tuple[int, int | None] | None,
             run_id: int) -> None:
    """Build the version's next segment from ``run_id`` and (unless a snapshot) the live segment
    ``old`` = (segment id, the run ``run_id`` replaces), and point the version at it."""
    segment_id = _new_table(conn)
    table = segment_table(segment_id)
    conn.execute(sql.SQL("INSERT INTO {t} (segment_id, {row}) SELECT {id}, {row} FROM {run}").format(
        t=table, row=sql.SQL(_ROW), id=sql.Literal(segment_id), run=run_table(run_id)))
    if old is not None:
        live, replaced = old
        # One pass over the live segment's rows that the run lacks: kept, or (the replaced run's) orphans.
        orphans = [r[0] for r in conn.execute(sql.SQL(
            """WITH lacked AS MATERIALIZED (
                   SELECT o.* FROM {live} o WHERE NOT EXISTS (SELECT FROM {run} n WHERE n.entity_id = o.entity_id)),
               kept AS (
                   INSERT INTO {t} (segment_id, {row})
                   SELECT {id}, {row} FROM lacked WHERE run_id IS DISTINCT FROM %(replaced)s)
               SELECT entity_id FROM lacked WHERE run_id = %(replaced)s""").format(
            t=table, row=sql.SQL(_ROW), id=sql.Literal(segment_id), live=segment_table(live),
            run=run_table(run_id)), {"replaced": replaced}).fetchall()]
        _fall_back(conn, model, version, segment_id, orphans, table=table)
    _index_and_attach(conn, segment_id)
    # An empty segment answers what no segment answers: it can go at once.
    conn.execute("INSERT INTO retired_segments (segment_id, retired_xid) "
                 "SELECT segment_id, pg_current_xact_id()::text::bigint FROM serving_segments "
                 "WHERE model_name = %s AND model_version = %s AND rows > 0", [model, version])
    conn.execute("UPDATE serving_segments SET segment_id = %s, rows = %s, updated_at = now() "
                 "WHERE model_name = %s AND model_version = %s",
                 [segment_id, _reltuples(conn, table), model, version])


def _fall_back(conn: psycopg.Connection, model: str, version: int, segment_id: int, orphans: list[str], *,
               table: sql.Composed | None = None) -> int:
    """Give each of ``orphans`` its row from the newest run of the version's set that holds it;
    returns how many found one. The set's runs are spelled out, so the planner opens only their tables."""
    if not orphans:
        return 0
    runs = set_runs(conn, model, version)
    if not runs:
        return 0
    return conn.execute(sql.SQL(
        """INSERT INTO {t} (segment_id, {row})
           SELECT DISTINCT ON (p.entity_id) {id}, p.entity_id, p.run_id, p.row_number, p.prediction, p.label, p.scores
           FROM predictions p JOIN runs r ON r.run_id = p.run_id
           WHERE p.run_id IN ({runs}) AND p.entity_id = ANY(%s::text[])
           ORDER BY p.entity_id, r.published_at DESC, p.run_id DESC""").format(
        t=table if table is not None else segment_table(segment_id), row=sql.SQL(_ROW), id=sql.Literal(segment_id),
        runs=sql.SQL(", ").join(map(sql.Literal, runs))), [orphans], prepare=False).rowcount


def _reltuples(conn: psycopg.Connection, table: sql.Composed) -> int:
    """A table's row count: the planner's (exact right after its index was built), else counted."""
    row = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                       [table.as_string(conn)]).fetchone()
    if row is not None and row[0] >= 0:
        return int(row[0])
    counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(counted[0]) if counted else 0
