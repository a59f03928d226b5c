"""What a training set is built from: each label matched to a served run's prediction, with the run
that made it and where that run read its partition (`models.training` reads the features back)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

#: The columns of `labeled_predictions`, in order.
COLUMNS = ("entity_id", "label", "label_value", "event_time", "run_id", "model_version", "partition", "matched_as",
           "input_uri", "input_fingerprint", "entity_col")


def labeled_predictions(conn: psycopg.Connection, model_name: str, *, since: datetime | None = None,
                        until: datetime | None = None, version: int | None = None) -> list[tuple[Any, ...]]:
    """The labels of ``model_name`` matched to a served run (event time in [since, until), of
    ``version``), as `COLUMNS`, by run; ``entity_col`` is the column the run read ids from (None
    when the run did not record it)."""
    return conn.cursor(binary=True).execute(
        """SELECT m.entity_id, m.label, m.label_value, m.event_time, m.run_id, m.model_version, r.partition_key,
                  m.matched_as, r.input_uri, r.input_fingerprint, r.details ->> 'entity_col'
           FROM label_matches m JOIN runs r ON r.run_id = m.run_id
           WHERE m.model_name = %(model)s AND m.run_role = 'current'
             AND (%(since)s::timestamptz IS NULL OR m.event_time >= %(since)s)
             AND (%(until)s::timestamptz IS NULL OR m.event_time < %(until)s)
             AND (%(version)s::int IS NULL OR m.model_version = %(version)s)
           ORDER BY m.run_id, m.entity_id, m.event_time""",
        {"model": model_name, "since": since, "until": until, "version": version}).fetchall()
