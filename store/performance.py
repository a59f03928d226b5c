"""Performance queries: realized and estimated performance rows, calibrations, and what a run's
estimate reads. One function per query; each takes a connection and never commits."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from store.matching import RETAINED


@dataclass(frozen=True)
class PerformanceRow:
    """One metric of a run or a window, realized from labels or estimated before them: a row of
    ``performance_results``."""

    model_name: str
    model_version: int
    #: 'run' (``run_id`` set) or 'window' (``window_start`` and ``window_end`` set).
    scope: str
    run_id: int | None
    run_role: str
    window_start: datetime | None
    window_end: datetime | None
    metric: str
    value: float | None
    #: The same metric on the data it was judged against at registration (``reference``).
    training_value: float | None
    estimated: bool
    #: 'ok', 'warning', 'alert' or 'insufficient' (`models.performance.judge`).
    status: str
    labels: int
    predictions: int | None
    coverage: float | None
    low: float | None = None
    high: float | None = None
    backfill: bool = False
    reference: str | None = None


PERFORMANCE_COLUMNS = tuple(f.name for f in fields(PerformanceRow))


def last_performance(conn: psycopg.Connection, model_name: str) -> datetime | None:
    """When realized performance was last computed for the model."""
    row = conn.execute(
        "SELECT max(computed_at) FROM performance_results WHERE model_name = %s AND NOT estimated", [model_name]
    ).fetchone()
    return row[0] if row else None


def replace_performance(conn: psycopg.Connection, model_name: str, rows: Iterable[PerformanceRow]) -> None:
    """Replace the model's realized performance rows with ``rows`` (recomputed from every label)."""
    conn.execute("DELETE FROM performance_results WHERE model_name = %s AND NOT estimated", [model_name])
    insert_performance(conn, rows)


def insert_performance(conn: psycopg.Connection, rows: Iterable[PerformanceRow]) -> None:
    """Record performance rows (realized or estimated)."""
    conn.cursor().executemany(
        f"""INSERT INTO performance_results ({', '.join(PERFORMANCE_COLUMNS)})
            VALUES ({', '.join(['%s'] * len(PERFORMANCE_COLUMNS))})""",
        [astuple(r) for r in rows],
    )


def insert_calibration(conn: psycopg.Connection, model_name: str, version: int, calibration: dict[str, Any]) -> None:
    """Keep a version's calibration (`models.calibration.Calibration.to_json`)."""
    conn.execute("INSERT INTO calibrations (model_name, model_version, calibration) VALUES (%s, %s, %s)",
                 [model_name, version, Jsonb(calibration)])


def calibrations(conn: psycopg.Connection, model_name: str) -> dict[int, dict[str, Any]]:
    """The model's calibrations by version."""
    rows = conn.execute("SELECT model_version, calibration FROM calibrations WHERE model_name = %s",
                        [model_name]).fetchall()
    return {int(version): data for version, data in rows}


def runs_without_estimate(conn: psycopg.Connection, model_name: str) -> list[dict[str, Any]]:
    """Retained runs with no expected-performance estimate yet: a classifier's, or a calibrated
    regressor's."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT r.run_id, r.model_version, r.role AS run_role, r.rows_scored - r.rows_duplicate AS predictions
           FROM runs r JOIN models m ON m.name = r.model_name AND m.version = r.model_version
           WHERE r.model_name = %s AND r.status = ANY(%s)
             AND (m.task = 'classification' OR EXISTS (SELECT 1 FROM calibrations c
                                                         WHERE c.model_name = m.name AND c.model_version = m.version))
             AND NOT EXISTS (SELECT 1 FROM performance_results e WHERE e.run_id = r.run_id AND e.estimated)
           ORDER BY r.run_id""",
        [model_name, list(RETAINED)],
    ).fetchall()


def run_predictions(conn: psycopg.Connection, run_id: int, *,
                    size: int = 100_000) -> Iterator[list[tuple[float | None, str | None, Any]]]:
    """A run's (prediction, label, scores) rows, ``size`` at a time (a server-side cursor: run
    inside a transaction)."""
    with conn.cursor(name=f"predstore_run_{run_id}") as cursor:
        cursor.execute("SELECT prediction, label, scores FROM predictions WHERE run_id = %s", [run_id])
        while rows := cursor.fetchmany(size):
            yield rows


def run_sizes(conn: psycopg.Connection, model_name: str) -> dict[int, int]:
    """Predictions per retained run of the model."""
    rows = conn.execute(
        "SELECT run_id, rows_scored - rows_duplicate FROM runs WHERE model_name = %s AND status = ANY(%s)",
        [model_name, list(RETAINED)],
    ).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def performance_history(conn: psycopg.Connection, model_name: str) -> list[dict[str, Any]]:
    """The model's ``performance_over_time`` rows, oldest first."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT p.*, r.partition_key, r.published_at FROM performance_over_time p
           LEFT JOIN runs r ON r.run_id = p.run_id
           WHERE p.model_name = %s
           ORDER BY p.scope, coalesce(p.window_start, r.published_at), p.run_id, p.metric""",
        [model_name],
    ).fetchall()
