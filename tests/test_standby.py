"""The lookup API on a real hot standby: a streaming replica made with pg_basebackup from its own
primary (both the embedded PostgreSQL's binaries). Lookups answer from the standby, and a publish,
a promotion and a key's revocation reach them within a second of the standby replaying them."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from store import Settings, apikeys, registry
from store.db import start_embedded, stop_embedded, with_database
from store.migrate import upgrade
from tests.test_serving import publish

PORT = 54329


def _as_server_user(pgdata: Path) -> dict[str, Any]:
    """Run PostgreSQL's programs as the user that owns the primary's data (root cannot)."""
    return {"user": pwd.getpwuid(pgdata.stat().st_uid).pw_name} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(primary URL, standby URL) of the store's database, the standby streaming from the primary."""
    import pgserver

    bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    home = tmp_path_factory.mktemp("replica")
    primary = home / "primary"
    server = start_embedded(primary)
    run_as = _as_server_user(primary)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("CREATE DATABASE store")
        # The embedded server skips the WAL a replica needs (wal_level minimal): a primary must not.
        conn.execute("ALTER SYSTEM SET wal_level = 'replica'")
        conn.execute("ALTER SYSTEM SET max_wal_senders = '4'")
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # pg_ctl's server keeps pipes
    subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(primary), "-w", "-l", str(primary / "log"),
                    "restart"], check=True, timeout=120, **quiet, **run_as)
    primary_url = with_database(server, "store")
    upgrade(primary_url)
    standby = home / "standby"
    standby.mkdir(mode=0o700)
    os.chown(standby, primary.stat().st_uid, primary.stat().st_gid)  # the server's user writes it
    host = conninfo_to_dict(server)["host"]
    subprocess.run([str(bin_dir / "pg_basebackup"), "-D", str(standby), "-R", "-X", "stream", "-h", str(host),
                    "-U", "postgres"], check=True, capture_output=True, timeout=120, **run_as)
    with (standby / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"port = {PORT}\nunix_socket_directories = '{standby}'\nlisten_addresses = ''\n")
    subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(standby), "-w", "-l", str(standby / "standby.log"), "start"],
                   check=True, timeout=120, **quiet, **run_as)
    try:
        yield primary_url, f"postgresql://postgres@/store?host={standby}&port={PORT}"
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(standby), "-w", "-m", "fast", "stop"],
                       timeout=120, **quiet, **run_as)
        stop_embedded(primary)
        shutil.rmtree(home, ignore_errors=True)


def replayed(standby_url: str, query: str, params: list[Any], expected: Any) -> float:
    """Wait until the standby answers ``query`` with ``expected``; when it did (monotonic seconds)."""
    deadline = time.monotonic() + 30
    with psycopg.connect(standby_url, autocommit=True) as conn:
        while conn.execute(query, params).fetchone() != expected:
            assert time.monotonic() < deadline, f"the standby never replayed {query} = {expected}"
            time.sleep(0.02)
    return time.monotonic()


def within(seconds: float, since: float, check: Callable[[], bool]) -> float:
    """How long after ``since`` ``check`` came true; fails past ``seconds``."""
    while not check():
        assert time.monotonic() - since < seconds, "not seen in time"
        time.sleep(0.02)
    return time.monotonic() - since


def test_lookups_from_a_hot_standby_follow_publishes_promotions_and_revocations(
        replicated: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lookup_api import create_app

    primary_url, standby_url = replicated
    with psycopg.connect(primary_url, autocommit=True) as conn:
        for version in (1, 2):
            registry.insert_model(conn, name="m", version=version, artifact_uri="test", sha256="0" * 64,
                                  format="skops", task="regression", feature_schema={}, classes=None,
                                  training_metrics=None)
        registry.set_alias(conn, "m", "current", 1)
        first = publish(conn, "p", {"e1": 1.0})
        _, key = apikeys.create_key(conn, "reader")
    replayed(standby_url, "SELECT status FROM runs WHERE run_id = %s", [first], ("published",))

    caplog.set_level(logging.INFO)
    settings = Settings(home=tmp_path / "home", database_url=primary_url, api_reader_url=standby_url)
    app = create_app(settings)
    service = app.extensions["predstore"]
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}

    def prediction() -> tuple[int, Any]:
        answer = client.get("/v1/models/m/predictions/e1", headers=auth)
        return answer.status_code, (answer.get_json() or {}).get("prediction")

    try:
        assert service.listener.connected.wait(10)
        assert prediction() == (200, 1.0) and prediction() == (200, 1.0)  # the second from the cache
        with psycopg.connect(primary_url, autocommit=True) as conn:
            second = publish(conn, "p", {"e1": 2.0})
        at = replayed(standby_url, "SELECT status FROM runs WHERE run_id = %s", [second], ("published",))
        assert within(1.0, at, lambda: prediction() == (200, 2.0)) < 1.0

        with psycopg.connect(primary_url, autocommit=True) as conn:
            publish(conn, "p", {"e1": 3.0}, version=2, role="challenger")
            with conn.transaction():
                registry.set_alias(conn, "m", "current", 2)
        at = replayed(standby_url, "SELECT version FROM model_aliases WHERE model_name = 'm' AND alias = 'current'",
                      [], (2,))
        assert within(1.0, at, lambda: prediction() == (200, 3.0)) < 1.0

        with psycopg.connect(primary_url, autocommit=True) as conn:
            key_id = apikeys.key_id_of(key)
            assert key_id is not None
            apikeys.revoke_key(conn, key_id)
        at = replayed(standby_url, "SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = %s", [key_id],
                      (True,))
        assert within(1.0, at, lambda: prediction()[0] in (401, 403)) < 1.0
        assert service.listener.thread is not None and service.listener.thread.is_alive()
    finally:
        service.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING], caplog.text
