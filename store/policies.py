"""Each model's policies, set with `predstore models configure`: whether its runs pass the publish
gate before they are served, and the gate's row-count limit (retention's days live in `store.retention`)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Policy:
    """A model's policies; the defaults when it has no row."""

    gate: bool = False
    max_row_change: float | None = None


def get_policy(conn: psycopg.Connection, model: str) -> Policy:
    """``model``'s policies (the defaults if none were set)."""
    row = conn.execute("SELECT gate, max_row_change FROM model_policies WHERE model_name = %s", [model]).fetchone()
    return Policy(gate=bool(row[0]), max_row_change=row[1]) if row else Policy()


def set_policy(conn: psycopg.Connection, model: str, *, gate: bool | None = None,
               max_row_change: float | None = None) -> Policy:
    """Change what is given of ``model``'s policies, keep the rest; returns them all."""
    current = get_policy(conn, model)
    new = Policy(gate=current.gate if gate is None else gate,
                 max_row_change=current.max_row_change if max_row_change is None else max_row_change)
    conn.execute(
        """INSERT INTO model_policies (model_name, gate, max_row_change) VALUES (%s, %s, %s)
           ON CONFLICT (model_name) DO UPDATE SET gate = EXCLUDED.gate, max_row_change = EXCLUDED.max_row_change,
                                                  updated_at = now()""",
        [model, new.gate, new.max_row_change])
    return new
