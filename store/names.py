"""The names of the tables the store creates at run time: one per scoring run, one per serving
segment. Apart from `store.schema` so that what only names them imports no SQLAlchemy."""

from __future__ import annotations

from psycopg import sql

#: Schema holding one table per scoring run; each is attached to ``predictions`` when published.
PARTITION_SCHEMA = "predstore_partitions"
#: Schema holding the serving directory's segment tables, attached to ``served_predictions``.
SEGMENT_SCHEMA = "predstore_serving"


def run_table(run_id: int) -> sql.Composed:
    """The name of the table holding one run's predictions."""
    return sql.SQL("{}.{}").format(sql.Identifier(PARTITION_SCHEMA), sql.Identifier(f"run_{run_id}"))


def segment_table(segment_id: int) -> sql.Composed:
    """The name of one serving segment's table."""
    return sql.SQL("{}.{}").format(sql.Identifier(SEGMENT_SCHEMA), sql.Identifier(f"segment_{segment_id}"))
