"""A real streaming standby of the embedded PostgreSQL, for the tests and the standby benchmark.

`replicated` starts an embedded server (`store.db.start_embedded`) as a primary, which the
embedded settings do not allow (``wal_level = minimal``, no WAL senders): it switches it to
``wal_level = replica`` and restarts it, creates and migrates a database ``store``, copies it with
``pg_basebackup -R`` (the embedded server's own binaries, run as the server's OS user) and starts
the copy as a hot standby streaming from the primary, on its own port and socket directory. Both
are stopped and their folders removed on exit.

    with replicated(tmp_path) as (primary_url, standby_url):
        ...
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from store.db import start_embedded, stop_embedded, with_database
from store.migrate import upgrade

__all__ = ["replayed", "replicated"]

#: pg_ctl leaves the server it starts holding its output: pipes would never close.
_QUIET: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def _bin_dir() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _as_server_user(pgdata: Path) -> dict[str, Any]:
    """Run PostgreSQL's programs as the user that owns the primary's data (root cannot)."""
    return {"user": pwd.getpwuid(pgdata.stat().st_uid).pw_name} if os.geteuid() == 0 else {}


def _pg_ctl(pgdata: Path, log: Path, *args: str, run_as: dict[str, Any]) -> None:
    """``pg_ctl -D pgdata -w -l log args``, run inside ``pgdata`` (see `replicated`); on failure, an
    error that quotes the end of its log."""
    try:
        subprocess.run([str(_bin_dir() / "pg_ctl"), "-D", ".", "-w", "-l", log.name, *args], cwd=pgdata,
                       check=True, timeout=120, **_QUIET, **run_as)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise RuntimeError(f"pg_ctl {' '.join(args)} of {pgdata} failed ({exc}); its log ends:\n{tail}") from exc


@contextmanager
def replicated(home: Path, *, port: int = 54329) -> Iterator[tuple[str, str]]:
    """(primary URL, standby URL) of the database ``store``, migrated to head on the primary, the
    standby streaming from it. Their data lives in ``home``/primary and ``home``/standby, removed
    on exit; the standby listens on ``port`` of a Unix socket in its own data directory only."""
    home.mkdir(parents=True, exist_ok=True)
    primary, standby = home / "primary", home / "standby"
    standby_started = False
    try:
        server = start_embedded(primary)
        run_as = _as_server_user(primary)
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("CREATE DATABASE store")
            # The embedded server skips the WAL a replica needs (wal_level minimal): a primary must not.
            conn.execute("ALTER SYSTEM SET wal_level = 'replica'")
            conn.execute("ALTER SYSTEM SET max_wal_senders = '4'")
        _pg_ctl(primary, primary / "log", "restart", run_as=run_as)
        primary_url = with_database(server, "store")
        upgrade(primary_url)

        standby.mkdir(mode=0o700)
        os.chown(standby, primary.stat().st_uid, primary.stat().st_gid)  # the server's user writes it
        host = conninfo_to_dict(server)["host"]
        # A fast checkpoint to start from, and no fsync of a copy that is thrown away: seconds, not tens.
        # PostgreSQL's programs run inside the data folder they work on (a relative -D), so that a folder
        # above it that the server's user can no longer cross cannot fail them half-way (a concurrent
        # pytest takes the others' permissions off /tmp/pytest-of-<user>).
        copied = subprocess.run([str(_bin_dir() / "pg_basebackup"), "-D", ".", "-R", "-X", "stream", "-c", "fast",
                                 "--no-sync", "-h", str(host), "-U", "postgres"], cwd=standby, capture_output=True,
                                text=True, timeout=120, **run_as)
        if copied.returncode:
            raise RuntimeError(f"pg_basebackup of {primary} failed ({copied.returncode}): {copied.stderr.strip()}")
        with (standby / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"port = {port}\nunix_socket_directories = '{standby}'\nlisten_addresses = ''\n")
        standby_started = True  # even a failed start may leave a server behind
        _pg_ctl(standby, standby / "standby.log", "start", run_as=run_as)
        yield primary_url, f"postgresql://postgres@/store?host={standby}&port={port}"
    finally:
        if standby_started and (standby / "postmaster.pid").exists():
            subprocess.run([str(_bin_dir() / "pg_ctl"), "-D", ".", "-w", "-m", "fast", "stop"], cwd=standby,
                           timeout=120, **_QUIET, **_as_server_user(standby))
        stop_embedded(primary)
        shutil.rmtree(standby, ignore_errors=True)
        shutil.rmtree(primary, ignore_errors=True)


def replayed(standby_url: str, query: str, params: list[Any], expected: Any, *, timeout: float = 30.0,
             every: float = 0.02) -> float:
    """Wait until the standby answers ``query`` with ``expected`` (polling every ``every`` seconds);
    when it did (monotonic seconds). `TimeoutError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby_url, autocommit=True) as conn:
        while (found := conn.execute(query, params).fetchone()) != expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby never replayed {query} = {expected} (it answers {found})")
            time.sleep(every)
    return time.monotonic()
