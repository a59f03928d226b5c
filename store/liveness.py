"""Whether the process working on a row (a run, a scheduler firing) is still alive: it holds a
session advisory lock on (kind, id) from the row's creation to its end, so the lock of a row whose
process died is free, and `reap` can mark the row abandoned while nobody else can."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg

#: The first key of each kind of liveness lock (the second is the row's id).
RUN = 7270
FIRING = 7272


def hold(conn: psycopg.Connection, kind: int, row_id: int) -> None:
    """Mark this session's process as working on ``row_id`` until `release` or the session ends."""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", [kind, _key(row_id)])


def release(conn: psycopg.Connection, kind: int, row_id: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", [kind, _key(row_id)])


def reap(conn: psycopg.Connection, kind: int, row_ids: Iterable[int], mark: Callable[[int], bool]) -> list[int]:
    """Call ``mark(row_id)`` for each of ``row_ids`` whose process is gone (its lock free), holding
    the lock meanwhile; the ids ``mark`` said it marked. ``conn`` in autocommit: each probe takes and
    releases a lock of its own."""
    reaped = []
    for row_id in row_ids:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [kind, _key(row_id)]).fetchone()
        if not got or not got[0]:
            continue  # its process is alive
        try:
            if mark(row_id):
                reaped.append(row_id)
        finally:
            release(conn, kind, row_id)
    return reaped


def _key(row_id: int) -> int:
    return row_id % 2_147_483_647
