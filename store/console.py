"""What the console (`predstore ui`) reads beyond the monitor's own queries: one row per model, the
ledger filtered, a model's audit trail, a run's drift check. Aggregates and the ledger only: no
query here reads a prediction or a label, so each costs the same on a year of partitions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

#: Days an alert counts as open on the models page.
OPEN_ALERT_DAYS = 7
#: Hours of lookups the models page's miss rate covers.
MISS_RATE_HOURS = 24
#: The ledger's columns the runs page shows.
RUN_COLUMNS = ("run_id, model_name, model_version, role, partition_key, status, rows_in, rows_scored, rows_rejected, "
               "rows_duplicate, started_at, finished_at, published_at, duration_s, error")


def overview(conn: psycopg.Connection, models: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Per model (of ``models``, if given): its task, versions, current and challenger, when its newest
    run was published, its held runs, failures and open alerts, and the lookup API's miss rate."""
    return conn.cursor(row_factory=dict_row).execute(
        """WITH names AS (SELECT name, max(version) AS versions FROM models
                          WHERE %(models)s::text[] IS NULL OR name = ANY(%(models)s::text[]) GROUP BY name)
           SELECT n.name, n.versions,
                  (SELECT task FROM models WHERE name = n.name ORDER BY version DESC LIMIT 1) AS task,
                  (SELECT version FROM model_aliases WHERE model_name = n.name AND alias = 'current') AS current,
                  (SELECT version FROM model_aliases WHERE model_name = n.name AND alias = 'challenger') AS challenger,
                  (SELECT max(published_at) FROM runs WHERE model_name = n.name) AS newest_run,
                  (SELECT count(*) FROM runs WHERE model_name = n.name AND status = 'held') AS held,
                  (SELECT count(*) FROM runs WHERE model_name = n.name AND status = 'failed'
                     AND started_at > now() - make_interval(days => %(days)s)) AS failed,
                  (SELECT count(*) FROM alerts WHERE model_name = n.name
                     AND raised_at > now() - make_interval(days => %(days)s)) AS open_alerts,
                  l.hits, l.misses, now() AS now
           FROM names n
           LEFT JOIN LATERAL (SELECT sum(hits) AS hits, sum(misses) AS misses FROM lookup_counts
                              WHERE model_name = n.name AND hour > now() - make_interval(hours => %(hours)s)) l ON true
           ORDER BY n.name""",
        {"models": sorted(models) if models is not None else None, "days": OPEN_ALERT_DAYS,
         "hours": MISS_RATE_HOURS}).fetchall()


def model_names(conn: psycopg.Connection, models: frozenset[str] | None = None) -> list[str]:
    """The registered models' names (of ``models``, if given), in order."""
    return [name for (name,) in conn.execute(
        "SELECT DISTINCT name FROM models WHERE %(models)s::text[] IS NULL OR name = ANY(%(models)s::text[]) "
        "ORDER BY name", {"models": sorted(models) if models is not None else None})]


def runs(conn: psycopg.Connection, *, model: str | None = None, status: str | None = None,
         since: datetime | None = None, until: datetime | None = None, before: int | None = None,
         models: frozenset[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest runs first, filtered by model, status, start time (``since`` inclusive, ``until``
    exclusive) and run id (``before``: older than that run); ``models`` limits what may be seen."""
    return conn.cursor(row_factory=dict_row).execute(
        f"""SELECT {RUN_COLUMNS} FROM runs
            WHERE (%(model)s::text IS NULL OR model_name = %(model)s)
              AND (%(models)s::text[] IS NULL OR model_name = ANY(%(models)s::text[]))
              AND (%(status)s::text IS NULL OR status = %(status)s)
              AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR started_at < %(until)s)
              AND (%(before)s::bigint IS NULL OR run_id < %(before)s)
            ORDER BY run_id DESC LIMIT %(limit)s""",
        {"model": model, "models": sorted(models) if models is not None else None, "status": status,
         "since": since, "until": until, "before": before, "limit": limit}).fetchall()


def run(conn: psycopg.Connection, run_id: int) -> dict[str, Any] | None:
    """One run of the ledger, with the drift check of it (``check_id``, None if unchecked)."""
    return conn.cursor(row_factory=dict_row).execute(
        f"""SELECT {RUN_COLUMNS}, input_uri, input_fingerprint, model_sha256, rows_per_s, peak_rss_bytes, details,
                   (SELECT check_id FROM drift_checks c WHERE c.run_id = r.run_id AND scope = 'run') AS check_id
            FROM runs r WHERE run_id = %s""", [run_id]).fetchone()


def model_audit(conn: psycopg.Connection, model: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest entries of the audit trail about ``model``: registrations, promotions, policies."""
    return conn.cursor(row_factory=dict_row).execute(
        """SELECT at, actor, action, target, details FROM audit
           WHERE action LIKE 'model.%%' AND (target = %(model)s OR target LIKE %(versions)s)
           ORDER BY audit_id DESC LIMIT %(limit)s""",
        {"model": model, "versions": model.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + " v%",
         "limit": limit}).fetchall()
