"""Change notices: what a lookup service must drop from its caches (a model's answers, the API
keys), told two ways. ``NOTIFY`` reaches a service that listens on the primary at commit; a
counter per (channel, payload) in ``notices``, bumped in the same transaction, reaches one that
reads a hot standby, where LISTEN is refused: it polls the counters, which change only once the
standby has replayed the change, so it never drops a cache before the new answer is there to read.
"""

from __future__ import annotations

import psycopg


def notify(conn: psycopg.Connection, channel: str, payload: str) -> None:
    """Tell the lookup services, at this transaction's commit, that ``payload`` changed on ``channel``."""
    conn.execute("SELECT pg_notify(%s, %s)", [channel, payload])
    conn.execute(
        """INSERT INTO notices (channel, payload, n) VALUES (%s, %s, 1)
           ON CONFLICT (channel, payload) DO UPDATE SET n = notices.n + 1, at = now()""", [channel, payload])


def counters(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """Every (channel, payload)'s count of notices so far."""
    return {(c, p): int(n) for c, p, n in conn.execute("SELECT channel, payload, n FROM notices").fetchall()}


def in_recovery(conn: psycopg.Connection) -> bool:
    """Whether ``conn`` reads a standby (a server in recovery, which refuses LISTEN)."""
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])
