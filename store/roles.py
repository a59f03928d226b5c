"""Database roles: a reader for the lookup API, an analyst for SQL, and the writer that owns the store.

- The **reader** may SELECT the published views, the registry and the API key hashes: no
  unpublished or superseded run, no write. The views run with their owner's rights.
- The **analyst** may SELECT every table and view of the store but ``api_keys`` and ``erasure_key``: runs of every
  status, rejected rows, labels, monitoring; not the run tables that are not yet published.
- The **console** (`predstore ui`) may SELECT the registry, the ledger, the monitor's results and
  baselines, the audit trail, the lookup counts and the API key hashes (it asks for a key off
  loopback): never a prediction, a label or the erasure key.
- The **writer** owns the store's tables and views (attaching a run's table to ``predictions``
  is allowed only to their owner) and may create tables in ``public`` for migrations; it is no
  superuser and cannot create roles or databases. Jobs, migrations and `predstore forget` run as it.

Each function creates the role, or resets it when it exists, and is run by a role that may
create roles and owns the store (or a superuser). Run them again after `predstore db upgrade`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from store.schema import PARTITION_SCHEMA, SEGMENT_SCHEMA

#: What the lookup API's role may read: published data, the registry, API key hashes, the revision.
READER_GRANTS = ("served_predictions", "serving_segments", "served_runs", "published_predictions",
                 "current_predictions", "published_runs", "models", "model_aliases", "api_keys", "alembic_version",
                 "notices", "lookup_counts", "model_policies", "erasures", "erasure_key")
#: What the lookup API's role may also write: its own counts of what lookups found, and what it scored live.
READER_WRITES = ("lookup_counts", "live_predictions")
#: Tables the analyst may not read (the erasure key would reverse the erasure list's HMACs).
ANALYST_DENIED = ("api_keys", "erasure_key")

#: What the console's role may read: aggregates, the ledger and the registry, never a prediction or a label.
CONSOLE_GRANTS = ("models", "model_aliases", "model_policies", "runs", "audit", "drift_checks", "drift_results",
                  "drift_over_time", "performance_results", "performance_over_time", "performance_tallies",
                  "alerts", "baselines", "run_profiles", "calibrations", "comparisons", "lookup_counts", "api_keys",
                  "alembic_version")

_LOGIN = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"


def grant_reader(conn: psycopg.Connection, role: str, *, password: str | None = None) -> bool:
    """Create (or reset) ``role`` as a login that can only SELECT `READER_GRANTS` (and add to
    `READER_WRITES`, in a transaction it makes read-write); True if created."""
    created = _login_role(conn, role, password)
    _reset(conn, role)
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, READER_GRANTS)), sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT INSERT, UPDATE ON {} TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, READER_WRITES)), sql.Identifier(role)))
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(sql.Identifier(role)))
    return created


def grant_analyst(conn: psycopg.Connection, role: str, *, password: str | None = None) -> bool:
    """Create (or reset) ``role`` as a read-only login on every table and view but `ANALYST_DENIED`."""
    created = _login_role(conn, role, password)
    _reset(conn, role)
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, ANALYST_DENIED)), sql.Identifier(role)))
    _whole_runs(conn, role)
    return created


def grant_console(conn: psycopg.Connection, role: str, *, password: str | None = None) -> bool:
    """Create (or reset) ``role`` as a read-only login on `CONSOLE_GRANTS` alone; True if created."""
    created = _login_role(conn, role, password)
    _reset(conn, role)
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, CONSOLE_GRANTS)), sql.Identifier(role)))
    _whole_runs(conn, role)
    return created


def grant_writer(conn: psycopg.Connection, role: str, *, password: str | None = None) -> bool:
    """Create (or reset) ``role`` and make it the owner of the store's tables, views and run tables."""
    created = _login_role(conn, role, password)
    ident = sql.Identifier(role)
    name = _database(conn)
    conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(name), ident))
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(ident))
    for schema in (PARTITION_SCHEMA, SEGMENT_SCHEMA):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), ident))
    owned = conn.execute(
        """SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                  n.nspname, c.relname
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname IN ('public', %s, %s) AND c.relkind IN ('r', 'p', 'v', 'm')
             AND pg_get_userbyid(c.relowner) <> %s
           ORDER BY c.relkind = 'v', c.oid""",
        [PARTITION_SCHEMA, SEGMENT_SCHEMA, role],
    ).fetchall()
    for kind, schema, table in owned:
        conn.execute(sql.SQL("ALTER {} {}.{} OWNER TO {}").format(
            sql.SQL(kind), sql.Identifier(schema), sql.Identifier(table), ident))
    conn.execute(sql.SQL("ALTER ROLE {} RESET default_transaction_read_only").format(ident))
    return created


def _whole_runs(conn: psycopg.Connection, role: str) -> None:
    """Make ``role``'s transactions read-only and repeatable read: a query's snapshot is then taken
    before it is planned, so a run published meanwhile is in its plan or not in its snapshot, and a
    partition's rows never vanish from a query that overlaps its publish (as lookups read)."""
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(sql.Identifier(role)))
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_isolation = 'repeatable read'").format(
        sql.Identifier(role)))


def _login_role(conn: psycopg.Connection, role: str, password: str | None) -> bool:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None
    secret = sql.SQL(" PASSWORD {}").format(sql.Literal(password)) if password else sql.SQL("")
    conn.execute(sql.SQL("{} ROLE {} " + _LOGIN + "{}").format(
        sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(role), secret))
    return not exists


def _reset(conn: psycopg.Connection, role: str) -> None:
    """Take away every right ``role`` has on the store, then let it connect and look up names."""
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(_database(conn)), ident))
    conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(ident))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))


def _database(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])
