"""Live predictions: what the lookup API scored on request, one row each in ``live_predictions``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import psycopg


class LivePrediction(NamedTuple):
    scored_at: datetime
    model_name: str
    model_version: int
    entity_id: str
    prediction: float | None
    label: str | None
    scores: list[float] | None


def add(conn: psycopg.Connection, rows: Sequence[LivePrediction]) -> None:
    """Write ``rows`` with COPY, in one read-write transaction (the lookup API's role reads only,
    by default)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ WRITE")
        with conn.cursor().copy(
                "COPY live_predictions (scored_at, model_name, model_version, entity_id, prediction, label, scores) "
                "FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
