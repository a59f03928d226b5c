"""Connections: the embedded PostgreSQL, external URLs, and the translation of connection errors."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from store.errors import ConfigError, StoreUnavailable, describe_target, from_database
from store.settings import Settings

log = logging.getLogger("predstore.store.db")

__all__ = ["EMBEDDED_CONF", "HOME_SETTING", "LIVENESS", "ConnectionSlots", "connect", "connection_slots",
           "database_url", "describe_target", "embedded_home", "make_pool", "start_embedded", "stop_embedded",
           "with_database", "without_password"]

#: Settings the embedded server gets on first start. ``wal_level = minimal`` lets PostgreSQL skip
#: WAL for a run's table, which is created and filled in one transaction (no replicas to feed).
EMBEDDED_CONF = {
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_connections": "200",
    "maintenance_work_mem": "256MB",
}


#: A setting of the embedded store's database marking it as a PREDSTORE_HOME's store (`embedded_home`).
HOME_SETTING = "predstore.home_store"


#: Bounds on waiting for a server that went away without closing its connections (a crashed
#: host, a cut network): TCP keepalives, and a limit on unacknowledged sends. A server that shuts
#: down closes them itself; libpq ignores these on a Unix socket.
LIVENESS: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
            "tcp_user_timeout": 30_000}


def database_url(settings: Settings) -> str:
    """The URL to connect to: ``PREDSTORE_DATABASE_URL``, or the embedded server (started if needed)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.pgdata, home=True)


def start_embedded(pgdata: Path, *, home: bool = False) -> str:
    """Start (or find running) the embedded PostgreSQL in ``pgdata`` and return its URL.

    The server outlives this process so that later commands, and ``psql``, find it running;
    ``predstore db stop`` stops it. ``home``: it is the store of a PREDSTORE_HOME (not a server
    for tests or benchmarks), so that a model it lacks is said to be missing from that folder
    (`embedded_home`).
    """
    _ensure_writable_home(pgdata.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pgserver
    try:
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        url = server.get_uri()
        _make_private(Path(str(conninfo_to_dict(url)["host"])), owner=pgdata)
        if _configure_embedded(url, home=home):
            from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import

            pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user)
    except (OSError, subprocess.SubprocessError, AssertionError, RuntimeError, psycopg.Error) as exc:
        raise StoreUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata} ({exc}); "
            f"see {pgdata / 'log'}, or set PREDSTORE_DATABASE_URL to use another server"
        ) from exc
    return url


def _make_private(socket_dir: Path, *, owner: Path) -> None:
    """Let only the server's own user into its socket directory: the server trusts every local
    login, so a socket others can reach (or a directory they can write) would let them in.

    The socket lives in ``pgdata`` (mode 0700) unless that path is too long for a socket; then
    pgserver uses a runtime directory, which it makes world-writable when running as root.
    """
    st = owner.stat()
    if os.geteuid() == 0 and socket_dir.stat().st_uid != st.st_uid:
        os.chown(socket_dir, st.st_uid, st.st_gid)
    if socket_dir.stat().st_mode & 0o077:
        socket_dir.chmod(0o700)


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; True if it was running."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata.resolve(), user=user)
    except subprocess.CalledProcessError:
        return False
    return True


def _ensure_writable_home(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"PREDSTORE_HOME {home} is not a writable directory ({exc.strerror or exc}); "
            "set PREDSTORE_HOME to a directory you can write to"
        ) from exc


def _configure_embedded(url: str, *, home: bool = False) -> bool:
    """Apply EMBEDDED_CONF once (and with ``home`` the `HOME_SETTING` mark); True when the server
    must restart for it to take effect."""
    with psycopg.connect(url, autocommit=True) as conn:
        current: dict[str, str] = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                                    [list(EMBEDDED_CONF)]).fetchall())
        changed = [name for name, value in EMBEDDED_CONF.items() if _normal(current.get(name)) != _normal(value)]
        for name in changed:
            conn.execute(f"ALTER SYSTEM SET {name} = '{EMBEDDED_CONF[name]}'")
        marked = conn.execute("SELECT current_setting(%s, true)", [HOME_SETTING]).fetchone()
        if home and (marked is None or marked[0] != "on"):  # for the sessions to come; no restart needed
            conn.execute(sql.SQL("ALTER DATABASE {} SET {} = 'on'").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(*HOME_SETTING.split("."))))
        return bool(changed)


def embedded_home(conn: psycopg.Connection) -> Path | None:
    """The PREDSTORE_HOME folder of the embedded store ``conn`` is connected to (the parent of its
    data folder); None for any other server, or when the server does not say."""
    row = conn.execute("SELECT current_setting(%s, true), (SELECT setting FROM pg_settings "
                       "WHERE name = 'data_directory')", [HOME_SETTING]).fetchone()
    if row is None or row[0] != "on" or not row[1]:
        return None
    return Path(row[1]).parent


def _normal(value: str | None) -> str | None:
    # pg_settings reports memory in kB units: 262144 for 256MB.
    return {"256MB": "262144"}.get(value, value) if value else value


def without_password(conninfo: str) -> str:
    """``conninfo`` less its password, as a keyword DSN (libpq then takes the password from
    ``PGPASSWORD`` or ``~/.pgpass`` where it connects)."""
    params = conninfo_to_dict(conninfo)
    params.pop("password", None)
    return make_conninfo("", **params)


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def connect(url: str, *, autocommit: bool = False, application_name: str = "predstore") -> psycopg.Connection:
    """Open a connection, translating failure into `StoreUnavailable` (or `ConfigError`) that names the host."""
    try:
        return psycopg.connect(url, autocommit=autocommit, application_name=application_name, connect_timeout=5,
                               **LIVENESS)
    except psycopg.Error as exc:
        raise from_database(exc, conninfo=url) from exc


@dataclass(frozen=True)
class ConnectionSlots:
    """A server's connections as one client sees them."""

    max_connections: int
    #: Slots only superusers may take: superuser_reserved_connections, and reserved_connections (PostgreSQL 16).
    reserved: int
    #: Client connections open now, the asking one left out.
    in_use: int

    @property
    def free(self) -> int:
        return self.max_connections - self.reserved - self.in_use


def connection_slots(conn: psycopg.Connection) -> ConnectionSlots:
    """How many connections the server allows, keeps for superusers, and has open now."""
    row = conn.execute(
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int"
        " + coalesce(current_setting('reserved_connections', true)::int, 0),"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"
    ).fetchone()
    assert row is not None
    return ConnectionSlots(max_connections=row[0], reserved=row[1], in_use=row[2])


def make_pool(url: str, *, min_size: int = 1, max_size: int = 8, name: str = "predstore") -> ConnectionPool:
    """A connection pool that does not connect until opened; the caller opens and closes it."""
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=name,
        kwargs={"autocommit": True, "application_name": name, "connect_timeout": 5, **LIVENESS},
        check=ConnectionPool.check_connection,
    )
