"""Read queries of the lookup API, one function each.

The current prediction of (model, entity) is the row of the most recently published run of the
model that holds the entity, which the serving directory (`store.serving`) keeps: a lookup, hit or
miss, is one probe of its primary key, however many runs and partitions the store keeps. A lookup
of a given version reads the directory too; only an entity whose newest served row is of another
version is looked up in that version's published runs, named one by one so that the planner opens
those tables alone. Pooled connections prepare statements on first use: they run the same few
queries all day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool, PoolTimeout

from store.db import describe_target
from store.errors import NotFound, StoreUnavailable, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class Prediction:
    """One published prediction and where it comes from."""

    entity_id: str
    model: str
    model_version: int
    run_id: int
    partition: str
    scored_at: datetime
    prediction: float | None
    label: str | None
    scores: list[float] | None


@dataclass(frozen=True)
class PublishedRun:
    """The published run of one (model, partition)."""

    model: str
    model_version: int
    partition: str
    run_id: int
    rows: int
    scored_at: datetime
    published_at: datetime


#: In the order of `Prediction`'s fields, which rows are built from positionally.
_COLUMNS = """entity_id, model_name AS model, model_version, run_id, partition_key AS partition,
              scored_at, prediction, label, scores"""

#: The served row of one entity; without a version, of the 'current' role, else the newest of both
#: roles (whether it is of the version asked for is checked by the caller).
_ONE = f"SELECT {_COLUMNS} FROM served_predictions WHERE model_name = %s AND entity_id = %s AND role = 'current'"
_NEWEST = f"""SELECT {_COLUMNS} FROM served_predictions WHERE model_name = %s AND entity_id = %s
              ORDER BY published_at DESC, run_id DESC LIMIT 1"""

# A batch is rendered by PostgreSQL: building a thousand JSON objects there costs a fraction of
# what loading the rows into Python and encoding them again does. The object is the same one
# `lookup_api.service.present` builds for a single lookup (a test holds the two together).
_JSON = """SELECT entity_id, age > %(max_age)s AS stale, json_build_object(
                'entity_id', entity_id, 'model', model, 'model_version', model_version, 'run_id', run_id,
                'partition', partition,
                'scored_at', to_char(scored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), 'age', age,
                'stale', coalesce(age > %(max_age)s, false),
                'prediction', prediction, 'label', label, 'scores', scores)::text
            FROM (SELECT *, round(greatest(0, %(now)s - extract(epoch FROM scored_at))::numeric, 3) AS age
                  FROM ({rows}) AS found) AS aged"""
_MANY = _JSON.format(rows=f"""SELECT {_COLUMNS} FROM served_predictions
    WHERE model_name = %(model)s AND role = 'current' AND entity_id = ANY(%(ids)s::text[])""")
#: Of a version: the entities whose newest served row is of it, and the others' newest row among
#: the version's published runs ({runs}, spelled out).
_MANY_OF_VERSION = _JSON.format(rows=f"""
    WITH newest AS (
        SELECT DISTINCT ON (entity_id) {_COLUMNS} FROM served_predictions
        WHERE model_name = %(model)s AND entity_id = ANY(%(ids)s::text[])
        ORDER BY entity_id, published_at DESC, run_id DESC)
    SELECT * FROM newest WHERE model_version = %(version)s
    UNION ALL
    SELECT * FROM ({{older}}) AS older
    WHERE entity_id IN (SELECT entity_id FROM newest WHERE model_version <> %(version)s)""")
#: The newest row of some entities among the runs {runs}.
_IN_RUNS = f"""SELECT DISTINCT ON (entity_id) {_COLUMNS}
               FROM published_predictions WHERE run_id IN ({{runs}}) AND entity_id = ANY(%(ids)s::text[])
               ORDER BY entity_id, published_at DESC, run_id DESC"""

#: Session settings of lookup connections: a lookup never waits for parallel workers or JIT.
#: Timestamps come in UTC, whether PostgreSQL or Python renders them.
READER_OPTIONS = "-c max_parallel_workers_per_gather=0 -c jit=off -c TimeZone=UTC"


def make_reader_pool(url: str, *, size: int, name: str = "predstore-lookup") -> ConnectionPool:
    """A pool for lookups, not yet opened: statements prepared at first use, quick retries while
    the database is away (``reconnect_timeout``). Connections are not checked before each use (a
    round trip per request); `read` retries a query that meets a broken one instead."""
    return ConnectionPool(
        url,
        min_size=size,
        max_size=size,
        open=False,
        name=name,
        kwargs={"autocommit": True, "application_name": name, "connect_timeout": 3, "prepare_threshold": 0,
                "options": READER_OPTIONS},
        reconnect_timeout=5.0,
    )


def read(pool: ConnectionPool, query: Callable[[psycopg.Connection], T], *, timeout: float) -> T:
    """``query(conn)`` on a pooled connection, translating an unreachable database into `StoreUnavailable`.

    A connection that broke while idle (the server restarted) fails the query; then the pool drops
    every broken idle connection and the query runs once more: lookups only read, so this is safe.
    No free connection within ``timeout`` seconds is `StoreUnavailable` too, never a long wait.
    """
    for attempt in (1, 2):
        try:
            with pool.connection(timeout=timeout) as conn:
                return query(conn)
        except PoolTimeout as exc:
            raise StoreUnavailable(f"no connection to PostgreSQL at {_target(pool)} within {timeout:g} s") from exc
        except psycopg.OperationalError as exc:
            if attempt == 2:
                raise StoreUnavailable(f"lost the connection to PostgreSQL at {_target(pool)}: "
                                       f"{first_line(exc)}") from exc
            pool.check()
    raise AssertionError("unreachable")


def _target(pool: ConnectionPool) -> str:
    return describe_target(pool.conninfo) if isinstance(pool.conninfo, str) else pool.name


def current_prediction(
    conn: psycopg.Connection, model: str, entity_id: str, *, version: int | None = None
) -> Prediction | None:
    """The current published prediction of ``entity_id`` by ``model`` (restricted to ``version``)."""
    if version is None:
        row = conn.execute(_ONE, [model, entity_id]).fetchone()  # a tuple: the cheapest row
        return Prediction(*row) if row is not None else None
    with _snapshot(conn):
        row = conn.execute(_NEWEST, [model, entity_id]).fetchone()
        if row is None:
            return None  # no published run holds it
        found = Prediction(*row)
        if found.model_version == version:
            return found
        runs = _runs_of(conn, model, version)
        if not runs:
            return None
        older = conn.execute(_IN_RUNS.format(runs=runs), {"ids": [entity_id]}, prepare=False).fetchone()
        return Prediction(*older) if older is not None else None


def current_predictions_json(
    conn: psycopg.Connection, model: str, entity_ids: Sequence[str], *, version: int | None = None,
    now: float, max_age: int | None,
) -> list[tuple[str, bool, str]]:
    """The current predictions of those ``entity_ids`` that have one, in one query, each as
    (entity id, stale, the JSON object the API answers), its age taken at ``now`` (epoch seconds)
    and stale when older than ``max_age`` seconds."""
    params = {"model": model, "ids": list(entity_ids), "version": version, "now": now, "max_age": max_age}
    if version is None:
        rows = conn.execute(_MANY, params).fetchall()
    else:
        with _snapshot(conn):
            runs = _runs_of(conn, model, version) or "NULL"
            query = _MANY_OF_VERSION.format(older=_IN_RUNS.format(runs=runs))
            rows = conn.execute(query, params, prepare=False).fetchall()
    return [(entity_id, bool(stale), text) for entity_id, stale, text in rows]


def _runs_of(conn: psycopg.Connection, model: str, version: int) -> str:
    """The published runs of ``model`` ``version`` as a list of SQL literals ('' if none)."""
    rows = conn.execute("SELECT run_id FROM published_runs WHERE model_name = %s AND model_version = %s",
                        [model, version]).fetchall()
    return ", ".join(str(int(r[0])) for r in rows)


@contextmanager
def _snapshot(conn: psycopg.Connection) -> Iterator[None]:
    """One read-only REPEATABLE READ transaction: the statements of a lookup that needs more than
    one see the same published state."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def check_model(conn: psycopg.Connection, model: str, *, version: int | None = None) -> None:
    """Raise `NotFound` unless ``model`` (and ``version``) is registered."""
    versions = [r[0] for r in conn.execute("SELECT version FROM models WHERE name = %s ORDER BY version",
                                           [model])]
    if not versions:
        raise NotFound(f"no model named {model!r} is registered")
    if version is not None and version not in versions:
        raise NotFound(f"model {model!r} has no version {version} (versions: {', '.join(map(str, versions))})")


def published_runs(conn: psycopg.Connection, model: str | None = None) -> list[PublishedRun]:
    """The served (current) published run of every (model, partition), of ``model`` if given."""
    where = "WHERE role = 'current'" + (" AND model_name = %s" if model is not None else "")
    cur = conn.cursor(row_factory=class_row(PublishedRun))
    return cur.execute(
        f"""SELECT model_name AS model, model_version, partition_key AS partition, run_id, rows,
                   coalesce(scored_at, published_at) AS scored_at, published_at
            FROM published_runs {where} ORDER BY model_name, partition_key""",
        [model] if model is not None else [],
    ).fetchall()


def listen(conn: psycopg.Connection, channels: Sequence[str]) -> None:
    """Subscribe ``conn`` (in autocommit) to NOTIFY ``channels``."""
    try:
        for channel in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"lost the notification connection: {first_line(exc)}") from exc


def notifications(conn: psycopg.Connection, *, timeout: float) -> list[tuple[str, str]]:
    """The (channel, payload) notifications that arrive within ``timeout`` seconds (at least one
    returns early); a lost connection becomes `StoreUnavailable`."""
    try:
        return [(n.channel, n.payload) for n in conn.notifies(timeout=timeout, stop_after=1)]
    except psycopg.Error as exc:
        raise StoreUnavailable(f"lost the notification connection: {first_line(exc)}") from exc
