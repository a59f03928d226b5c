"""Live predictions: what the lookup API scored on request, one row each in ``live_predictions``,
with the features it was scored from (the monitor checks their drift per day)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import dict_row


class LivePrediction(NamedTuple):
    scored_at: datetime
    model_name: str
    model_version: int
    entity_id: str
    prediction: float | None
    label: str | None
    scores: list[float] | None
    #: The row's features as a JSON object, in text.
    features: str | None = None


def add(conn: psycopg.Connection, rows: Sequence[LivePrediction]) -> None:
    """Write ``rows`` with COPY, in one read-write transaction (the lookup API's role reads only,
    by default)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ WRITE")
        with conn.cursor().copy(
                "COPY live_predictions (scored_at, model_name, model_version, entity_id, prediction, label, scores, "
                "features) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)  # text COPY: the server parses the features' JSON


def days(conn: psycopg.Connection, model_name: str, *, since: datetime) -> list[tuple[datetime, int]]:
    """The UTC days (and versions) of ``model_name``'s live predictions with features, from ``since`` on."""
    return [(r[0], int(r[1])) for r in conn.execute(
        """SELECT DISTINCT date_trunc('day', scored_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', model_version
           FROM live_predictions WHERE model_name = %s AND scored_at >= %s AND features IS NOT NULL
           ORDER BY 1, 2""", [model_name, since])]


def of_day(conn: psycopg.Connection, model_name: str, version: int, day: datetime) -> list[dict[str, Any]]:
    """One day's live predictions of a version with their features (``prediction``, ``label``, ``features``)."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT prediction, label, features FROM live_predictions
           WHERE model_name = %s AND model_version = %s AND features IS NOT NULL
             AND scored_at >= %s AND scored_at < %s + interval '1 day'""", [model_name, version, day, day]).fetchall()


def last_checked(conn: psycopg.Connection, model_name: str) -> datetime | None:
    """The newest day of ``model_name``'s live traffic the monitor checked (its start, UTC)."""
    row = conn.execute("SELECT max(window_start) FROM drift_checks WHERE model_name = %s AND run_role = 'live'",
                       [model_name]).fetchone()
    return row[0] if row else None


def delete_check(conn: psycopg.Connection, model_name: str, version: int, day: datetime) -> None:
    """Forget the check of one day of a version's live traffic (it is checked again, with its new rows)."""
    conn.execute("""DELETE FROM drift_checks WHERE model_name = %s AND model_version = %s AND run_role = 'live'
                    AND scope = 'window' AND window_start = %s""", [model_name, version, day])


def checks(conn: psycopg.Connection, model_name: str, *, limit: int = 60) -> list[dict[str, Any]]:
    """The newest checks of ``model_name``'s live traffic, one per day and version, newest first,
    with the columns that drifted."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT c.window_start AS day, c.model_version, c.rows, c.features, c.drifted, c.dataset_drift,
                  array(SELECT d.column_name FROM drift_results d WHERE d.check_id = c.check_id
                        AND d.metric = 'drift' AND d.status = 'alert' ORDER BY d.column_name) AS columns
           FROM drift_checks c WHERE c.model_name = %s AND c.run_role = 'live'
           ORDER BY c.window_start DESC, c.model_version DESC LIMIT %s""", [model_name, limit]).fetchall()


def matches(conn: psycopg.Connection, model_name: str) -> list[tuple[Any, ...]]:
    """Each label of ``model_name`` matched to the live prediction in force at its event time (the
    newest scored at or before it), as `store.matching.MATCH_COLUMNS` rows of run role ``live``
    (run id 0: a live prediction belongs to no run). Driven by the live predictions, so it costs
    what live traffic costs, not what every label of the model costs."""
    return conn.execute(
        """SELECT DISTINCT ON (l.entity_id, l.event_time)
                  1, 0, p.model_version, 'live', l.event_time, 'in_force', l.label, l.label_value, p.prediction,
                  p.label, p.scores
           FROM live_predictions p
           JOIN labels l ON l.model_name = p.model_name AND l.entity_id = p.entity_id AND l.event_time >= p.scored_at
           WHERE p.model_name = %s
           ORDER BY l.entity_id, l.event_time, p.scored_at DESC""", [model_name]).fetchall()
