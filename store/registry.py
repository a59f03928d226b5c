"""The model registry: versions, their artifacts and feature schemas, and the `current` alias."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from store import serving
from store.db import embedded_home
from store.errors import NotFound
from store.features import FeatureSchema


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version, as recorded."""

    name: str
    version: int
    artifact_uri: str
    sha256: str
    format: str
    task: str
    feature_schema: FeatureSchema
    classes: list[Any] | None
    training_metrics: dict[str, Any] | None
    created_at: datetime
    aliases: tuple[str, ...] = ()
    #: The types a skops artifact may load with, reviewed at registration (None: recorded before
    #: they were kept; such an artifact loads trusting the types its vetted bytes hold).
    trusted_types: tuple[str, ...] | None = None
    #: Where a version registered from MLflow came from (models:/churn/3, runs:/<id>/model) and its
    #: MLflow registry version; None for one registered from a file.
    mlflow_uri: str | None = None
    mlflow_version: int | None = None


_SELECT = """
    SELECT m.name, m.version, m.artifact_uri, m.sha256, m.format, m.task, m.feature_schema, m.classes,
           m.training_metrics, m.created_at, m.trusted_types, m.mlflow_uri, m.mlflow_version,
           coalesce(array_agg(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases
    FROM models m LEFT JOIN model_aliases a ON a.model_name = m.name AND a.version = m.version
"""


def _row(row: dict[str, Any]) -> ModelVersion:
    trusted = row["trusted_types"]
    return ModelVersion(**{**row, "aliases": tuple(row["aliases"]),
                           "feature_schema": FeatureSchema.from_json(row["feature_schema"]),
                           "trusted_types": None if trusted is None else tuple(trusted)})


def next_version(conn: psycopg.Connection, name: str) -> int:
    """The version number the next registration of ``name`` gets (locks the name until commit)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('predstore.model:' || %s))", [name])
    row = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM models WHERE name = %s", [name]).fetchone()
    assert row is not None
    return int(row[0])


def insert_model(
    conn: psycopg.Connection,
    *,
    name: str,
    version: int,
    artifact_uri: str,
    sha256: str,
    format: str,
    task: str,
    feature_schema: FeatureSchema,
    classes: list[Any] | None,
    training_metrics: dict[str, Any] | None,
    trusted_types: list[str] | None = None,
    mlflow_uri: str | None = None,
    mlflow_version: int | None = None,
) -> None:
    """Record a new model version (with ``trusted_types``, the reviewed types a skops one loads with,
    and for one fetched from MLflow its URI and registry version)."""
    conn.execute(
        """INSERT INTO models (name, version, artifact_uri, sha256, format, task, feature_schema, classes,
                               training_metrics, trusted_types, mlflow_uri, mlflow_version)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        [name, version, artifact_uri, sha256, format, task, Jsonb(feature_schema.to_json()),
         Jsonb(classes) if classes is not None else None,
         Jsonb(training_metrics) if training_metrics is not None else None, trusted_types, mlflow_uri,
         mlflow_version],
    )


def set_alias(conn: psycopg.Connection, name: str, alias: str, version: int) -> int | None:
    """Point ``alias`` of model ``name`` at ``version``; returns the version it pointed at before."""
    get_model(conn, name, version=version)
    row = conn.execute(
        "SELECT version FROM model_aliases WHERE model_name = %s AND alias = %s FOR UPDATE", [name, alias]
    ).fetchone()
    conn.execute(
        """INSERT INTO model_aliases (model_name, alias, version) VALUES (%s, %s, %s)
           ON CONFLICT (model_name, alias) DO UPDATE SET version = excluded.version, updated_at = now()""",
        [name, alias, version],
    )
    if alias == "current":
        serving.rank_current(conn, name, version)  # what every lookup answers follows, in this transaction
    return int(row[0]) if row else None


def get_model(
    conn: psycopg.Connection, name: str, *, version: int | None = None, alias: str = "current"
) -> ModelVersion:
    """A model version by number, or the one ``alias`` points at; `NotFound` says what exists."""
    cur = conn.cursor(row_factory=dict_row)
    if version is not None:
        row = cur.execute(_SELECT + " WHERE m.name = %s AND m.version = %s GROUP BY m.name, m.version",
                          [name, version]).fetchone()
    else:
        row = cur.execute(
            _SELECT + """ WHERE m.name = %s AND m.version =
                          (SELECT version FROM model_aliases WHERE model_name = %s AND alias = %s)
                          GROUP BY m.name, m.version""",
            [name, name, alias],
        ).fetchone()
    if row is not None:
        return _row(row)
    versions = [r[0] for r in conn.execute("SELECT version FROM models WHERE name = %s ORDER BY version", [name])]
    if not versions:
        home = embedded_home(conn)
        if home is not None:  # a command run from another folder opens (and makes) the store found there
            raise NotFound(f"no model named {name!r} is registered in the store at {home}; see `predstore models "
                           "list`, or set PREDSTORE_HOME to the folder of the store that has it (unset, it is "
                           ".predstore in the folder the command runs in)")
        raise NotFound(f"no model named {name!r} is registered; see `predstore models list`")
    if version is not None:
        raise NotFound(f"model {name!r} has no version {version} (versions: {', '.join(map(str, versions))})")
    if alias == "challenger":  # `promote VERSION` alone would move `current`
        raise NotFound(f"model {name!r} has no challenger; make one with "
                       f"`predstore models promote {name} VERSION --as challenger`")
    raise NotFound(
        f"model {name!r} has no {alias} version; promote one with `predstore models promote {name} VERSION`"
    )


def list_models(conn: psycopg.Connection, name: str | None = None) -> list[ModelVersion]:
    """Every registered version (of ``name``, if given), newest first within each name."""
    cur = conn.cursor(row_factory=dict_row)
    where = " WHERE m.name = %s" if name else ""
    rows = cur.execute(_SELECT + where + " GROUP BY m.name, m.version ORDER BY m.name, m.version DESC",
                       [name] if name else []).fetchall()
    return [_row(r) for r in rows]


def find_by_sha256(conn: psycopg.Connection, name: str, sha256: str) -> ModelVersion | None:
    """The version of ``name`` whose artifact has this hash, if one was registered."""
    return _first(conn, name, "sha256", sha256)


def find_by_mlflow_uri(conn: psycopg.Connection, name: str, mlflow_uri: str) -> ModelVersion | None:
    """The version of ``name`` registered from ``mlflow_uri`` (as resolved: models:/churn/3), if any."""
    return _first(conn, name, "mlflow_uri", mlflow_uri)


def _first(conn: psycopg.Connection, name: str, column: str, value: str) -> ModelVersion | None:
    """The oldest version of ``name`` whose ``column`` (a fixed name, never user input) is ``value``."""
    row = conn.cursor(row_factory=dict_row).execute(
        _SELECT + f" WHERE m.name = %s AND m.{column} = %s GROUP BY m.name, m.version ORDER BY m.version LIMIT 1",
        [name, value],
    ).fetchone()
    return _row(row) if row else None


def remove_alias(conn: psycopg.Connection, name: str, alias: str) -> int | None:
    """Remove ``alias`` of model ``name``; returns the version it pointed at, if any."""
    row = conn.execute("DELETE FROM model_aliases WHERE model_name = %s AND alias = %s RETURNING version",
                       [name, alias]).fetchone()
    return int(row[0]) if row else None


def aliases(conn: psycopg.Connection, name: str) -> dict[str, int]:
    """The aliases of model ``name`` and the versions they point at."""
    return {str(a): int(v) for a, v in conn.execute(
        "SELECT alias, version FROM model_aliases WHERE model_name = %s", [name])}
