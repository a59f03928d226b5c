"""Baselines and run profiles: the histograms the monitor compares."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row

BASELINE_COLUMNS = ("column_name", "role", "kind", "edges", "categories", "counts", "null_count", "n", "mean",
                    "std", "min", "max", "sums", "source")
PROFILE_COLUMNS = ("counts", "null_count", "n", "sum", "sum_sq", "min", "max", "unseen", "sums")


def insert_baseline(conn: psycopg.Connection, model_name: str, model_version: int,
                    columns: Iterable[dict[str, Any]]) -> None:
    """Record a model version's frozen baseline, one row per feature or output."""
    conn.cursor().executemany(
        f"""INSERT INTO baselines (model_name, model_version, {', '.join(BASELINE_COLUMNS)})
            VALUES (%s, %s, {', '.join(['%s'] * len(BASELINE_COLUMNS))})""",
        [[model_name, model_version, *(c.get(k) for k in BASELINE_COLUMNS)] for c in columns],
    )


def get_baseline(conn: psycopg.Connection, model_name: str, model_version: int) -> list[dict[str, Any]]:
    """A model version's baseline, features first in schema order; empty if it has none."""
    return conn.cursor(row_factory=dict_row).execute(
        f"""SELECT {', '.join(BASELINE_COLUMNS)} FROM baselines
            WHERE model_name = %s AND model_version = %s ORDER BY role = 'output', ctid""",
        [model_name, model_version],
    ).fetchall()


def output_baseline_sources(conn: psycopg.Connection, model_name: str) -> dict[int, str]:
    """Per version of ``model_name`` with a baseline, what its outputs' histograms were counted on
    ('validation', 'cross_validation' or 'in_sample')."""
    rows = conn.execute("""SELECT model_version, min(source) FROM baselines
                           WHERE model_name = %s AND role = 'output' GROUP BY model_version""", [model_name])
    return dict(rows.fetchall())


def insert_run_profile(conn: psycopg.Connection, run_id: int, profile: dict[str, dict[str, Any]]) -> None:
    """Record a run's histograms, counted in its model version's baseline bins."""
    conn.cursor().executemany(
        f"""INSERT INTO run_profiles (run_id, column_name, {', '.join(PROFILE_COLUMNS)})
            VALUES (%s, %s, {', '.join(['%s'] * len(PROFILE_COLUMNS))})""",
        [[run_id, name, *(p.get(k) for k in PROFILE_COLUMNS)] for name, p in profile.items()],
    )


def get_run_profiles(conn: psycopg.Connection, run_ids: list[int]) -> dict[str, dict[str, Any]]:
    """The summed profile of several runs (of one model version), per column."""
    rows = conn.cursor(row_factory=dict_row).execute(
        f"SELECT column_name, {', '.join(PROFILE_COLUMNS)} FROM run_profiles WHERE run_id = ANY(%s) ORDER BY run_id",
        [run_ids],
    ).fetchall()
    total: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = row.pop("column_name")
        seen = total.get(name)
        if seen is None:
            total[name] = row
            continue
        seen["counts"] = [a + b for a, b in zip(seen["counts"], row["counts"], strict=True)]
        seen["sums"] = None if seen["sums"] is None or row["sums"] is None \
            else [a + b for a, b in zip(seen["sums"], row["sums"], strict=True)]
        for key in ("null_count", "n", "sum", "sum_sq", "unseen"):
            seen[key] += row[key]
        seen["min"] = min((v for v in (seen["min"], row["min"]) if v is not None), default=None)
        seen["max"] = max((v for v in (seen["max"], row["max"]) if v is not None), default=None)
    return total
