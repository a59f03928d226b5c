"""The report's queries beyond the monitor's own (`store.monitoring`): samples of matched labels.

One function per query; each takes a connection and never commits.
"""

from __future__ import annotations

from typing import Any

import psycopg


def recent_matches(conn: psycopg.Connection, model_name: str, *, limit: int) -> list[tuple[Any, ...]]:
    """(prediction, label value, event time, matched as) of the newest ``limit`` labels matched to
    the served runs' predictions, newest first."""
    return conn.execute(
        """SELECT prediction, label_value, event_time, matched_as FROM label_matches
           WHERE model_name = %s AND run_role = 'current' AND prediction IS NOT NULL AND label_value IS NOT NULL
           ORDER BY event_time DESC, entity_id LIMIT %s""",
        [model_name, limit],
    ).fetchall()
