"""Champion and challenger: the paired runs of a model, their predictions side by side, and the
labels they are judged on."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def paired_runs(conn: psycopg.Connection, model_name: str, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Challenger runs that still have their rows, each with the current run published beside it,
    oldest first."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT h.run_id AS challenger_run, h.model_version AS challenger_version,
                  c.run_id AS current_run, c.model_version AS current_version, h.partition_key, h.published_at
           FROM runs h JOIN runs c ON c.run_id = (h.details->'paired_runs'->>'current')::bigint
           WHERE h.model_name = %s AND h.role = 'challenger' AND h.status IN ('published', 'superseded')
             AND c.status IN ('published', 'superseded') AND (%s::timestamptz IS NULL OR h.published_at >= %s)
           ORDER BY h.published_at, h.run_id""",
        [model_name, since, since],
    ).fetchall()


def side_by_side(conn: psycopg.Connection, current_run: int, challenger_run: int) -> list[tuple[Any, ...]]:
    """Per entity scored by both runs: (entity_id, current prediction, label, scores, challenger
    prediction, label, scores).

    Each side reads one partition (the run ids are plan-time constants), joined on the entity,
    so the plan needs no statistics of freshly published, never analyzed partitions.
    """
    return conn.execute(
        """SELECT c.entity_id, c.prediction, c.label, c.scores, h.prediction, h.label, h.scores
           FROM predictions c JOIN predictions h ON h.entity_id = c.entity_id
           WHERE c.run_id = %s AND h.run_id = %s""",
        [current_run, challenger_run], prepare=False,
    ).fetchall()


def latest_labels(conn: psycopg.Connection, model_name: str) -> list[tuple[str, str, float | None]]:
    """Each labeled entity's latest label: (entity_id, label, label_value)."""
    return conn.execute(
        """SELECT DISTINCT ON (entity_id) entity_id, label, label_value FROM labels
           WHERE model_name = %s ORDER BY entity_id, event_time DESC""",
        [model_name],
    ).fetchall()


def record_comparison(conn: psycopg.Connection, result: dict[str, Any]) -> None:
    """Keep a comparison (``Comparison.to_dict()``: model, versions, verdict and the figures)."""
    conn.execute(
        """INSERT INTO comparisons (model_name, current_version, challenger_version, verdict, result)
           VALUES (%s, %s, %s, %s, %s)""",
        [result["model"], result["current_version"], result["challenger_version"], result["verdict"],
         Jsonb(result, dumps=lambda value: json.dumps(value, default=_plain))])


def latest_comparison(conn: psycopg.Connection, model_name: str, current_version: int,
                      challenger_version: int) -> dict[str, Any] | None:
    """The newest comparison of these two versions: its result and when it was made."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT result, computed_at FROM comparisons
           WHERE model_name = %s AND current_version = %s AND challenger_version = %s
           ORDER BY comparison_id DESC LIMIT 1""", [model_name, current_version, challenger_version]).fetchone()


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds; anything else as its text."""
    return value.item() if hasattr(value, "item") else str(value)
