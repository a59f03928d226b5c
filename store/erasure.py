"""Erasing one entity: its predictions in every retained run, its labels and its rejected rows.

Run tables are deleted from directly, attached or not, so that a run published later (one that
was already scored) does not bring the entity back. The caller records the erasure in the audit
trail in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from store import serving
from store.predictions import PUBLISH_CHANNEL
from store.schema import PARTITION_SCHEMA


@dataclass(frozen=True)
class Erased:
    """What an erasure removed, counted."""

    predictions: int = 0
    labels: int = 0
    rejected_rows: int = 0
    #: The runs that held a prediction of the entity.
    runs: tuple[int, ...] = ()
    models: tuple[str, ...] = ()


def erase_entity(conn: psycopg.Connection, entity_id: str, *, model: str | None = None) -> Erased:
    """Delete ``entity_id``'s rows (of ``model``'s runs only, if given); lookup caches of the models
    touched are told to drop what they hold, at commit."""
    tables = conn.execute(
        """SELECT r.run_id, r.model_name FROM pg_tables t
           JOIN runs r ON 'run_' || r.run_id = t.tablename
           WHERE t.schemaname = %s AND (%s::text IS NULL OR r.model_name = %s)
           ORDER BY r.run_id""",
        [PARTITION_SCHEMA, model, model],
    ).fetchall()
    predictions, runs, models = 0, [], set()
    for run_id, model_name in tables:
        table = sql.SQL("{}.{}").format(sql.Identifier(PARTITION_SCHEMA), sql.Identifier(f"run_{run_id}"))
        deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE entity_id = %s").format(table), [entity_id]).rowcount
        if deleted:
            predictions += deleted
            runs.append(int(run_id))
            models.add(str(model_name))
    serving.forget_entity(conn, entity_id, model=model)
    labels = conn.execute(
        "DELETE FROM labels WHERE entity_id = %s AND (%s::text IS NULL OR model_name = %s)", [entity_id, model, model]
    ).rowcount
    # The monitor's matches copy the entity's predictions and labels (performance tallies hold sums only).
    conn.execute("DELETE FROM label_matches WHERE entity_id = %s AND (%s::text IS NULL OR model_name = %s)",
                 [entity_id, model, model])
    rejected = conn.execute(
        """DELETE FROM rejected_rows q USING runs r
           WHERE q.run_id = r.run_id AND q.entity_id = %s AND (%s::text IS NULL OR r.model_name = %s)""",
        [entity_id, model, model],
    ).rowcount
    for name in sorted(models):
        conn.execute("SELECT pg_notify(%s, %s)", [PUBLISH_CHANNEL, name])
    return Erased(predictions=predictions, labels=labels, rejected_rows=rejected, runs=tuple(runs),
                  models=tuple(sorted(models)))
