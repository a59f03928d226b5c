"""The serving directory, ``served_predictions``: for each (model, entity, role), the row of the most
recently published run that holds the entity.

PostgreSQL has no index across the partitions of ``predictions``: answering "the newest published
prediction of this entity" from the run tables means opening, locking and probing every run of the
model, so a lookup (and a miss most of all) costs more each day the store keeps another partition.
The directory is that missing global index, with the row itself: a lookup is one probe of its
primary key whatever the store holds.

It is kept in the publish transaction (readers see the old rows or the new ones, never a mix), at a
cost proportional to the run's rows: its rows are upserted (they are the newest, so they win), and
the entities that the run it supersedes held and it does not fall back to the newest other
published run that holds them, or leave the directory. Expiring runs does the same for their
entities. Publishes are serialised by the lock ATTACH PARTITION takes on ``predictions``, so the
order of ``published_at`` is the order in which the directory was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql

from store.schema import run_table

#: The directory's columns, in the order of the ``published_predictions`` view's.
COLUMNS = ("model_name", "model_version", "run_id", "partition_key", "entity_id", "row_number", "prediction",
           "label", "scores", "scored_at", "published_at", "role")

_INSERT = sql.SQL("INSERT INTO served_predictions ({})").format(sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
_UPDATED = sql.SQL(", ").join(
    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
    for c in COLUMNS if c not in ("model_name", "entity_id", "role"))


def serve_run(conn: psycopg.Connection, run_id: int, *, superseded: int | None) -> None:
    """Make ``run_id`` (just published, in this transaction) the served row of each of its entities,
    and re-point the entities that ``superseded`` alone held."""
    model_name, model_version, partition_key, role, published_at = _run(conn, run_id)
    # now(): the run's finished_at, which the ledger sets in this same transaction.
    conn.execute(_INSERT + sql.SQL(
        """ SELECT %(model)s, %(version)s, run_id, %(partition)s, entity_id, row_number, prediction, label, scores,
                   now(), %(at)s, %(role)s
            FROM {t} ORDER BY entity_id
            ON CONFLICT (model_name, entity_id, role) DO UPDATE SET {updated}""").format(
        t=run_table(run_id), updated=_UPDATED),
        {"model": model_name, "version": model_version, "partition": partition_key, "at": published_at,
         "role": role})
    if superseded is None:
        return
    orphans = [r[0] for r in conn.execute(sql.SQL(
        """DELETE FROM served_predictions d
           USING (SELECT s.entity_id FROM {old} s
                  WHERE NOT EXISTS (SELECT FROM {new} n WHERE n.entity_id = s.entity_id)) gone
           WHERE d.model_name = %s AND d.role = %s AND d.entity_id = gone.entity_id AND d.run_id = %s
           RETURNING d.entity_id""").format(old=run_table(superseded), new=run_table(run_id)),
        [model_name, role, superseded]).fetchall()]
    _fall_back(conn, model_name, role, orphans, before=_published_at(conn, superseded), excluding=[])


def unserve_runs(conn: psycopg.Connection, run_ids: Sequence[int]) -> int:
    """Take the rows of ``run_ids`` (published runs leaving service in this transaction, their tables
    still there) out of the directory; their entities fall back to the newest other published run
    that holds them. Returns how many entities no run serves any more."""
    gone = 0
    for run_id in run_ids:
        model_name, _, _, role, published_at = _run(conn, run_id)
        orphans = [r[0] for r in conn.execute(sql.SQL(
            """DELETE FROM served_predictions d USING {t} e
               WHERE d.model_name = %s AND d.role = %s AND d.entity_id = e.entity_id AND d.run_id = %s
               RETURNING d.entity_id""").format(t=run_table(run_id)),
            [model_name, role, run_id]).fetchall()]
        gone += len(orphans) - _fall_back(conn, model_name, role, orphans, before=published_at, excluding=run_ids)
    return gone


def forget_entity(conn: psycopg.Connection, entity_id: str, *, model: str | None = None) -> int:
    """Remove ``entity_id`` from the directory (of ``model`` only, if given)."""
    return conn.execute(
        "DELETE FROM served_predictions WHERE entity_id = %s AND (%s::text IS NULL OR model_name = %s)",
        [entity_id, model, model]).rowcount


def _fall_back(conn: psycopg.Connection, model_name: str, role: str, orphans: list[str], *, before: datetime,
               excluding: Sequence[int]) -> int:
    """Serve each of ``orphans`` from the newest published run of (model, role) published ``before``
    that holds it; returns how many found one. A newer run cannot hold them: the directory would
    have pointed there. The candidate runs are spelled out, so the planner opens only their tables."""
    if not orphans:
        return 0
    candidates = [r[0] for r in conn.execute(
        """SELECT run_id FROM runs WHERE model_name = %s AND role = %s AND status = 'published'
           AND published_at < %s AND NOT run_id = ANY(%s)""",
        [model_name, role, before, list(excluding)]).fetchall()]
    if not candidates:
        return 0
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    return conn.execute(_INSERT + sql.SQL(
        """ SELECT DISTINCT ON (entity_id) {columns} FROM published_predictions
            WHERE run_id IN ({runs}) AND entity_id = ANY(%s::text[])
            ORDER BY entity_id, published_at DESC, run_id DESC""").format(
        columns=columns, runs=sql.SQL(", ").join(map(sql.Literal, candidates))),
        [orphans], prepare=False).rowcount


def _run(conn: psycopg.Connection, run_id: int) -> tuple[str, int, str, str, datetime]:
    """(model, version, partition, role, published_at) of one run."""
    row = conn.execute("SELECT model_name, model_version, partition_key, role, published_at FROM runs "
                       "WHERE run_id = %s", [run_id]).fetchone()
    assert row is not None, run_id
    return row


def _published_at(conn: psycopg.Connection, run_id: int) -> datetime:
    return _run(conn, run_id)[4]
