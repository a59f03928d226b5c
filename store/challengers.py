"""Champion and challenger: the paired runs of a model and their predictions side by side."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


def paired_runs(conn: psycopg.Connection, model_name: str, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Challenger runs that still have their rows, each with the current run published beside it."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT h.run_id AS challenger_run, h.model_version AS challenger_version,
                  c.run_id AS current_run, c.model_version AS current_version, h.partition_key, h.published_at
           FROM runs h JOIN runs c ON c.run_id = (h.details->'paired_runs'->>'current')::bigint
           WHERE h.model_name = %s AND h.role = 'challenger' AND h.status IN ('published', 'superseded')
             AND c.status IN ('published', 'superseded') AND (%s::timestamptz IS NULL OR h.published_at >= %s)
           ORDER BY h.run_id""",
        [model_name, since, since],
    ).fetchall()


def side_by_side(conn: psycopg.Connection, model_name: str, current_run: int,
                 challenger_run: int) -> list[tuple[Any, ...]]:
    """Per entity scored by both runs: (entity_id, current prediction, label, scores, challenger
    prediction, label, scores, the entity's latest label text and value, or NULLs)."""
    return conn.execute(
        """SELECT c.entity_id, c.prediction, c.label, c.scores, h.prediction, h.label, h.scores,
                  l.label, l.label_value
           FROM predictions c
           JOIN predictions h ON h.run_id = %(challenger)s AND h.entity_id = c.entity_id
           LEFT JOIN LATERAL (
               SELECT label, label_value FROM labels
               WHERE model_name = %(model)s AND entity_id = c.entity_id ORDER BY event_time DESC LIMIT 1) AS l ON true
           WHERE c.run_id = %(current)s""",
        {"model": model_name, "current": current_run, "challenger": challenger_run},
    ).fetchall()
