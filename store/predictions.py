"""Prediction rows: each run is written into a table of its own, then attached and published at once.

A run's table lives in its own schema and is attached to ``predictions`` only when the run is
published, in the same transaction that flips ``runs.status``: readers see the previous run until
that commit, then the new one. Until then the table is invisible to every view; a run that fails
or dies has its table dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import psycopg
import pyarrow as pa
from pgpq import ArrowToPostgresBinaryEncoder
from psycopg import sql

from store import notices, serving
from store.errors import RunNotRunning
from store.schema import run_table

#: The columns a run may write, as the Arrow types its batches must have.
ARROW_TYPES = {"entity_id": pa.string(), "row_number": pa.int64(), "prediction": pa.float64(),
               "label": pa.string(), "scores": pa.list_(pa.float64())}

#: NOTIFY channel told the model name whenever a run of it is published.
PUBLISH_CHANNEL = serving.PUBLISH_CHANNEL

DUPLICATE_REASON = "duplicate entity_id: a later row of the partition has the same id and is the one kept"


def create_run_table(conn: psycopg.Connection, run_id: int) -> None:
    """Create the (still unattached, invisible) table that will hold the run's predictions."""
    conn.execute(
        sql.SQL("CREATE TABLE {t} (LIKE predictions INCLUDING DEFAULTS)").format(t=run_table(run_id))
    )
    conn.execute(sql.SQL("ALTER TABLE {t} ALTER COLUMN run_id SET DEFAULT {id}").format(
        t=run_table(run_id), id=sql.Literal(run_id)))


def arrow_schema(columns: Sequence[str]) -> pa.Schema:
    """The Arrow schema of the batches `copy_predictions` takes for these columns."""
    return pa.schema([(c, ARROW_TYPES[c]) for c in columns])


@contextmanager
def copy_predictions(conn: psycopg.Connection, run_id: int, columns: Sequence[str], *,
                     sole_writer: bool = False) -> Iterator[Callable[[pa.RecordBatch], None]]:
    """A binary COPY into the run's table, fed Arrow record batches of `arrow_schema(columns)`.

    pgpq encodes each batch into PostgreSQL's binary format in native code, so no Python object
    is made per row. The ``sole_writer`` of a run's table (its only task) first empties it in the
    same transaction, which lets COPY write the rows already frozen (the index build and the first
    readers then need not set hint bits on every page) and, under ``wal_level = minimal``, skip
    the WAL; ``conn`` must not be in autocommit.
    """
    schema = arrow_schema(columns)
    encoder = ArrowToPostgresBinaryEncoder(schema)
    if sole_writer:
        conn.execute(sql.SQL("TRUNCATE {t}").format(t=run_table(run_id)))
    query = sql.SQL("COPY {t} ({cols}) FROM STDIN (FORMAT BINARY{freeze})").format(
        t=run_table(run_id), cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        freeze=sql.SQL(", FREEZE" if sole_writer else ""))
    with conn.cursor().copy(query) as copy:
        copy.write(encoder.write_header())
        yield lambda batch: copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())


@contextmanager
def copy_rejects(conn: psycopg.Connection) -> Iterator[psycopg.Copy]:
    """A COPY into rejected_rows; ``write_row((run_id, row_number, entity_id, reason, raw_dict))``."""
    with conn.cursor().copy(
        "COPY rejected_rows (run_id, row_number, entity_id, reason, raw) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "int8", "text", "text", "jsonb"])
        yield copy


def index_run_table(conn: psycopg.Connection, run_id: int) -> int:
    """Build the run table's unique index on ``entity_id``, first moving duplicate entity ids to
    rejected_rows (the last row of each id wins). Returns how many rows were moved.

    The key is the entity id alone: ``run_id`` is the same on every row of the table, and leaving
    it out halves the index build (no parent key spans the partitions)."""
    table = run_table(run_id)
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    add_key = sql.SQL("CREATE UNIQUE INDEX {k} ON {t} (entity_id)").format(
        t=table, k=sql.Identifier(f"uq_run_{run_id}"))
    try:
        with conn.transaction():
            conn.execute(add_key)
        return 0
    except psycopg.errors.UniqueViolation:
        pass
    moved = conn.execute(
        sql.SQL("""
            WITH ranked AS (
                SELECT ctid AS row_ctid,
                       row_number() OVER (PARTITION BY entity_id ORDER BY row_number DESC) AS rank
                FROM {t}),
            moved AS (
                DELETE FROM {t} USING ranked WHERE {t}.ctid = ranked.row_ctid AND ranked.rank > 1
                RETURNING {t}.*)
            INSERT INTO rejected_rows (run_id, row_number, entity_id, reason, raw)
            SELECT run_id, row_number, entity_id, {reason},
                   jsonb_build_object('prediction', prediction, 'label', label)
            FROM moved""").format(t=table, reason=sql.Literal(DUPLICATE_REASON))
    ).rowcount
    conn.execute(add_key)
    return moved


def publish(conn: psycopg.Connection, run_id: int, *, model_name: str, partition_key: str,
            role: str = "current", snapshot: bool = False, was: str = "running") -> int | None:
    """Attach the run's table and make it the published run of (model, partition, role); a
    ``snapshot`` is the published run of every partition of (model, role) it replaces. The run must
    be ``was`` (running; held, when a person releases it).

    Returns the run it supersedes in its partition. Visible to readers when the caller commits, the
    serving directory (`store.serving`) updated with it.
    """
    table = run_table(run_id)
    # The CHECK lets ATTACH skip scanning the table to prove its rows belong to the partition.
    conn.execute(sql.SQL("ALTER TABLE {t} ADD CONSTRAINT {c} CHECK (run_id = {id})").format(
        t=table, c=sql.Identifier(f"ck_run_{run_id}"), id=sql.Literal(run_id)))
    conn.execute(sql.SQL("ALTER TABLE predictions ATTACH PARTITION {t} FOR VALUES IN ({id})").format(
        t=table, id=sql.Literal(run_id)))
    # The clock now, not the transaction's start (now()): the index build came first in it.
    at = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    superseded = conn.execute(
        """UPDATE runs SET status = 'superseded', superseded_at = %s
           WHERE model_name = %s AND (partition_key = %s OR %s) AND role = %s AND status = 'published'
           RETURNING run_id, partition_key""",
        [at, model_name, partition_key, snapshot, role],
    ).fetchall()
    if conn.execute("UPDATE runs SET status = 'published', published_at = %s, snapshot = %s WHERE run_id = %s "
                    "AND status = %s", [at, snapshot, run_id, was]).rowcount != 1:
        raise RunNotRunning(run_id, None)  # reaped meanwhile: the caller's transaction rolls back
    serving.serve_run(conn, run_id, snapshot=snapshot)
    # Delivered at commit: lookup services drop what they cached for this model.
    notices.notify(conn, PUBLISH_CHANNEL, model_name)
    return next((int(r[0]) for r in superseded if r[1] == partition_key), None)


def drop_run_table(conn: psycopg.Connection, run_id: int) -> None:
    """Drop a run's table (detaching it first if it was published), if it exists. ``conn`` must
    be in autocommit: DETACH ... CONCURRENTLY lets lookups go on meanwhile.

    A DETACH ... CONCURRENTLY that was interrupted (cancelled, or its process killed) leaves its
    table attached but detach-pending, and PostgreSQL refuses every other concurrent detach from
    ``predictions`` until ``FINALIZE`` completes it: so any pending detach is finalized first.
    """
    for (pending,) in conn.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'predictions'::regclass "
        "AND inhdetachpending"
    ).fetchall():
        conn.execute(sql.SQL("ALTER TABLE predictions DETACH PARTITION {t} FINALIZE").format(t=sql.SQL(pending)))
    table = run_table(run_id)
    attached = conn.execute(
        "SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s)", [table.as_string(conn)]
    ).fetchone()
    if attached:
        conn.execute(sql.SQL("ALTER TABLE predictions DETACH PARTITION {t} CONCURRENTLY").format(t=table))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {t}").format(t=table))


def count_run_rows(conn: psycopg.Connection, run_id: int) -> int:
    """Rows written to a run's table so far (committed, or in ``conn``'s transaction)."""
    row = conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=run_table(run_id))).fetchone()
    assert row is not None
    return int(row[0])
