"""Read queries of the lookup API, one function each.

What (model, entity) is served is its row in the first segment of the model's serving order that
holds it (`store.serving`): a lookup, hit or miss, single or batch, is one statement probing the
unique index of each ranked segment (the current version's, and those of the versions served
before it), however many runs and partitions the store keeps. A lookup of a given version probes
that version's segment alone. Pooled connections prepare statements on first use: they run the
same few queries all day.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool, PoolTimeout

from store import notices
from store.db import describe_target
from store.errors import NotFound, StoreUnavailable, from_database

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
    #: Whether it is the current version's (else an earlier version's, the entity's previous answer).
    version_current: bool


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


#: An entity's served rows, one per segment of the model ({which}: the ranked ones, or one version's),
#: in the order of `Prediction`'s fields. Each segment is one probe of its unique index.
_SERVED = """SELECT d.entity_id, s.model_name AS model, s.model_version, d.run_id, r.partition_key AS partition,
                    r.scored_at, d.prediction, d.label, d.scores, coalesce(s.rank = 0, false) AS version_current
             FROM serving_segments s
             CROSS JOIN LATERAL (  -- per segment, a probe of its table alone (OFFSET 0: not flattened into a join)
                 SELECT * FROM served_predictions p WHERE p.segment_id = s.segment_id AND p.entity_id {match}
                 OFFSET 0) d
             JOIN served_runs r ON r.run_id = d.run_id
             WHERE s.model_name = %(model)s AND {which}"""
_RANKED = "s.rank IS NOT NULL ORDER BY {order} s.rank"
_OF_VERSION = "s.model_version = %(version)s"
_ONE = _SERVED.format(match="= %(id)s", which=_RANKED.format(order="")) + " LIMIT 1"
_ONE_OF_VERSION = _SERVED.format(match="= %(id)s", which=_OF_VERSION)

# A batch is rendered by PostgreSQL: building a thousand JSON objects there costs a fraction of
# what loading the rows into Python and encoding them again does. The object is the same one
# `lookup_api.service.present` builds for a single lookup (a test holds the two together).
_JSON = """SELECT entity_id, age > %(max_age)s AS stale, json_build_object(
                'entity_id', entity_id, 'model', model, 'model_version', model_version, 'run_id', run_id,
                'partition', partition,
                'scored_at', to_char(scored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), 'age', age,
                'stale', coalesce(age > %(max_age)s, false),
                'prediction', prediction, 'label', label, 'scores', scores, 'version_current', version_current,
                'source', 'precomputed')::text
            FROM (SELECT *, round(greatest(0, %(now)s - extract(epoch FROM scored_at))::numeric, 3) AS age
                  FROM ({rows}) AS found) AS aged"""
_MANY = _JSON.format(rows="SELECT DISTINCT ON (d.entity_id) " + _SERVED.format(
    match="= ANY(%(ids)s::text[])", which=_RANKED.format(order="d.entity_id,")).removeprefix("SELECT "))
_MANY_OF_VERSION = _JSON.format(rows=_SERVED.format(match="= ANY(%(ids)s::text[])", which=_OF_VERSION))

#: Session settings of lookup connections: a lookup never waits for parallel workers or JIT.
#: Timestamps come in UTC, whether PostgreSQL or Python renders them. Each lookup reads one
#: repeatable-read snapshot, taken before it is planned: the segment tables its plan holds are
#: those its snapshot can point at (see `store.serving`), even while a publish attaches a new one.
READER_OPTIONS = ("-c max_parallel_workers_per_gather=0 -c jit=off -c TimeZone=UTC "
                  "-c default_transaction_isolation=repeatable\\ read")


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
                raise _unavailable(exc, pool.conninfo if isinstance(pool.conninfo, str) else "") from exc
            pool.check()
    raise AssertionError("unreachable")


def _target(pool: ConnectionPool) -> str:
    return describe_target(pool.conninfo) if isinstance(pool.conninfo, str) else pool.name


def _dsn(conn: psycopg.Connection) -> str:
    try:
        return conn.info.dsn  # never the password
    except psycopg.Error:  # closed
        return ""


def _unavailable(exc: psycopg.Error, conninfo: str, what: str = "") -> StoreUnavailable:
    """A database error met on an open connection as `StoreUnavailable` (a lookup answers 503), in
    the words of `store.errors.from_database`: one line, no password."""
    return StoreUnavailable(what + str(from_database(exc, conninfo=conninfo, connecting=False)))


def current_prediction(
    conn: psycopg.Connection, model: str, entity_id: str, *, version: int | None = None
) -> Prediction | None:
    """The prediction ``model`` serves for ``entity_id`` (of ``version``, if given)."""
    params = {"model": model, "id": entity_id, "version": version}
    row = conn.execute(_ONE if version is None else _ONE_OF_VERSION, params).fetchone()  # a tuple: the cheapest row
    return Prediction(*row) if row is not None else None


def current_predictions_json(
    conn: psycopg.Connection, model: str, entity_ids: Sequence[str], *, version: int | None = None,
    now: float, max_age: int | None,
) -> list[tuple[str, bool, str]]:
    """The served predictions of those ``entity_ids`` that have one, in one statement (so one
    published state, whatever commits meanwhile), each as (entity id, stale, the JSON object the
    API answers), its age taken at ``now`` (epoch seconds) and stale when older than ``max_age`` seconds."""
    params = {"model": model, "ids": list(entity_ids), "version": version, "now": now, "max_age": max_age}
    rows = conn.execute(_MANY if version is None else _MANY_OF_VERSION, params).fetchall()
    return [(entity_id, bool(stale), text) for entity_id, stale, text in rows]


def snapshot_of(conn: psycopg.Connection, model: str) -> tuple[int, int] | None:
    """(version, run id) of the snapshot that defines what ``model`` serves, if its current version
    published one and no earlier version is served beside it."""
    row = conn.execute(
        """SELECT model_version, snapshot_run_id FROM serving_segments s
           WHERE model_name = %s AND rank = 0 AND snapshot_run_id IS NOT NULL
             AND NOT EXISTS (SELECT FROM serving_segments o WHERE o.model_name = s.model_name AND o.rank > 0)""",
        [model]).fetchone()
    return (int(row[0]), int(row[1])) if row else None


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


def add_counts(conn: psycopg.Connection, counts: Mapping[tuple[str, datetime], Sequence[int]]) -> None:
    """Add (hits, misses, stale) per (model, hour) to ``lookup_counts``, in one read-write
    transaction (the lookup API's role reads only, by default)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ WRITE")
        conn.cursor().executemany(
            """INSERT INTO lookup_counts (model_name, hour, hits, misses, stale) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (model_name, hour) DO UPDATE SET hits = lookup_counts.hits + EXCLUDED.hits,
                   misses = lookup_counts.misses + EXCLUDED.misses, stale = lookup_counts.stale + EXCLUDED.stale""",
            [(model, hour, *values) for (model, hour), values in sorted(counts.items())])


def listen(conn: psycopg.Connection, channels: Sequence[str]) -> bool:
    """Subscribe ``conn`` (in autocommit) to NOTIFY ``channels``; False, subscribing to nothing,
    when it reads a hot standby, which refuses LISTEN (then poll `notice_counters`)."""
    try:
        if notices.in_recovery(conn):
            return False
        for channel in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return True
    except psycopg.Error as exc:
        raise _unavailable(exc, _dsn(conn), "notification connection: ") from exc


def notice_counters(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """The notices counted so far (`store.notices`); a lost connection becomes `StoreUnavailable`."""
    try:
        return notices.counters(conn)
    except psycopg.Error as exc:
        raise _unavailable(exc, _dsn(conn), "notification connection: ") from exc


def notifications(conn: psycopg.Connection, *, timeout: float) -> list[tuple[str, str]]:
    """The (channel, payload) notifications that arrive within ``timeout`` seconds (at least one
    returns early); a lost connection becomes `StoreUnavailable`."""
    try:
        return [(n.channel, n.payload) for n in conn.notifies(timeout=timeout, stop_after=1)]
    except psycopg.Error as exc:
        raise _unavailable(exc, _dsn(conn), "notification connection: ") from exc


def lookup_totals(conn: psycopg.Connection, model_name: str, *, hours: int = 24) -> tuple[int, int, int, str]:
    """(hits, misses, stale) the lookup API counted for ``model_name`` in the last ``hours`` hours
    (this one included), and today's date (the database's clock, UTC)."""
    row = conn.execute(
        """SELECT coalesce(sum(hits), 0), coalesce(sum(misses), 0), coalesce(sum(stale), 0),
                  to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')
           FROM lookup_counts WHERE model_name = %s AND hour > now() - make_interval(hours => %s)""",
        [model_name, hours]).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), str(row[3])
