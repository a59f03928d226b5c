"""The audit trail: who registered or promoted a model, changed an API key or erased an entity.

Each change is recorded by the command that makes it, in the same transaction, so a change and
its audit row commit together or not at all. The actor is the operating-system user running the
command or the Python code, whichever made the change: the database role is usually one shared
service account, which would say nothing of who did it.
"""

from __future__ import annotations

import getpass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def record(conn: psycopg.Connection, action: str, *, target: str | None = None, actor: str | None = None,
           details: dict[str, Any] | None = None) -> int:
    """Append one audit row; ``actor`` defaults to the operating-system user (`os_user`), else the
    database role. Returns its id."""
    from store.schema import AUDIT_ACTIONS  # SQLAlchemy's metadata: not for commands that never write the audit

    assert action in AUDIT_ACTIONS, action
    row = conn.execute(
        """INSERT INTO audit (actor, action, target, details) VALUES (coalesce(%s, session_user), %s, %s, %s)
           RETURNING audit_id""",
        [actor or os_user(), action, target, Jsonb(details) if details is not None else None],
    ).fetchone()
    assert row is not None
    return int(row[0])


def os_user() -> str | None:
    """The operating-system user running this process, as the audit names it (None if it has no name)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name, no USER and a uid without a passwd entry
        return None


def forgotten_from_run(conn: psycopg.Connection, run_id: int) -> int:
    """How many entities `predstore forget` erased from ``run_id``'s predictions, per the trail."""
    row = conn.execute(
        """SELECT count(DISTINCT target) FROM audit
           WHERE action = 'entity.forget' AND details -> 'runs' @> to_jsonb(%s::bigint)""",
        [run_id],
    ).fetchone()
    return int(row[0]) if row else 0


def entries(conn: psycopg.Connection, *, action: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest audit rows first (of ``action``, if given)."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT * FROM audit WHERE %(action)s::text IS NULL OR action = %(action)s ORDER BY audit_id DESC LIMIT %(n)s",
        {"action": action, "n": limit},
    ).fetchall()

