"""Each model's policies, set with `predstore models configure`: whether its runs pass the publish
gate before they are served, the gate's row-count limit, and what a batch lookup with rows does on a
miss (retention's days live in `store.retention`)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Policy:
    """A model's policies; the defaults when it has no row."""

    gate: bool = False
    max_row_change: float | None = None
    #: What a batch lookup that sends rows does for an entity with no prediction: "404" or "score".
    on_miss: str = "404"


def get_policy(conn: psycopg.Connection, model: str) -> Policy:
    """``model``'s policies (the defaults if none were set)."""
    row = conn.execute("SELECT gate, max_row_change, on_miss FROM model_policies WHERE model_name = %s",
                       [model]).fetchone()
    return Policy(gate=bool(row[0]), max_row_change=row[1], on_miss=row[2] or "404") if row else Policy()


def set_policy(conn: psycopg.Connection, model: str, *, gate: bool | None = None,
               max_row_change: float | None = None, on_miss: str | None = None) -> Policy:
    """Change what is given of ``model``'s policies, keep the rest; returns them all."""
    current = get_policy(conn, model)
    new = Policy(gate=current.gate if gate is None else gate,
                 max_row_change=current.max_row_change if max_row_change is None else max_row_change,
                 on_miss=current.on_miss if on_miss is None else on_miss)
    conn.execute(
        """INSERT INTO model_policies (model_name, gate, max_row_change, on_miss) VALUES (%s, %s, %s, %s)
           ON CONFLICT (model_name) DO UPDATE SET gate = EXCLUDED.gate, max_row_change = EXCLUDED.max_row_change,
                                                  on_miss = EXCLUDED.on_miss, updated_at = now()""",
        [model, new.gate, new.max_row_change, new.on_miss])
    return new
