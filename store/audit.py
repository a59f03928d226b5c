"""The audit trail: who registered or promoted a model, changed an API key or erased an entity.

Each change is recorded by the command that makes it, in the same transaction, so a change and
its audit row commit together or not at all.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def record(conn: psycopg.Connection, action: str, *, target: str | None = None, actor: str | None = None,
           details: dict[str, Any] | None = None) -> int:
    """Append one audit row; ``actor`` defaults to the database role. Returns its id."""
    from store.schema import AUDIT_ACTIONS  # SQLAlchemy's metadata: not for commands that never write the audit

    assert action in AUDIT_ACTIONS, action
    row = conn.execute(
        """INSERT INTO audit (actor, action, target, details) VALUES (coalesce(%s, session_user), %s, %s, %s)
           RETURNING audit_id""",
        [actor, action, target, Jsonb(details) if details is not None else None],
    ).fetchone()
    assert row is not None
    return int(row[0])


def entries(conn: psycopg.Connection, *, action: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest audit rows first (of ``action``, if given)."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT * FROM audit WHERE %(action)s::text IS NULL OR action = %(action)s ORDER BY audit_id DESC LIMIT %(n)s",
        {"action": action, "n": limit},
    ).fetchall()

