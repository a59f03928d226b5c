"""Fixtures: one real PostgreSQL per test session, a fresh database per test.

The server is, in order of preference: ``PREDSTORE_TEST_DATABASE_URL``; a testcontainers
PostgreSQL when a Docker engine answers; the embedded server (pgserver) in a temporary folder.
Each test gets its own database cloned from a template migrated once, so tests that use several
connections or processes see real commits and never each other's rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from store import Settings
from store.db import start_embedded, stop_embedded, with_database
from store.migrate import upgrade


def _docker_answers() -> bool:
    """True when a Docker engine answers (not merely when the client is installed)."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach an engine means: use another server
        return False


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the test PostgreSQL server's maintenance database."""
    if url := os.environ.get("PREDSTORE_TEST_DATABASE_URL"):
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    home = tmp_path_factory.mktemp("pg")
    try:
        yield start_embedded(home / "pgdata")
    finally:
        stop_embedded(home / "pgdata")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    """A database migrated to head once per session, cloned by every test."""
    name = f"predstore_template_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    upgrade(url)
    return url


@contextmanager
def cloned_database(server_url: str, template_url: str, *, prefix: str = "predstore_test") -> Iterator[str]:
    """A new database cloned from the migrated template, dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    template = urlsplit(template_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh database at head, dropped after the test."""
    with cloned_database(server_url, template_url) as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: its own database and its own PREDSTORE_HOME; the lookup API open until
    a key exists (tests of keys ask for them)."""
    return Settings(home=tmp_path / "home", database_url=database_url, api_require_key=False)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for running `predstore` as a subprocess against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    env["PREDSTORE_HOME"] = str(settings.home)
    env["PREDSTORE_DATABASE_URL"] = settings.database_url or ""
    env["PREDSTORE_API_REQUIRE_KEY"] = "true" if settings.api_require_key else "false"
    return env


def interruptible() -> None:
    """A child process's SIGINT as a terminal's Ctrl-C would deliver it: a process started in the
    background of a shell (a CI runner's, say) inherits SIGINT ignored, and so would its servers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def console_store(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[Settings, dict[str, int]]]:
    """Settings of a store built by `tests.console_store.build_store` (once per module), and the
    challenger's version and the held run's id."""
    from tests.console_store import build_store

    with cloned_database(server_url, template_url, prefix="predstore_console") as url:
        settings = Settings(home=tmp_path_factory.mktemp("console") / "home", database_url=url,
                            api_require_key=False)
        yield settings, build_store(settings)


@dataclass(frozen=True)
class PrivateServer:
    """A PostgreSQL of one test module's own, for tests that stop it; each test clones a database
    from its migrated template (`private_database`)."""

    pgdata: Path
    url: str
    template: str

    def restart(self) -> None:
        """Start it again from another process, as an operator would (pgserver remembers, per
        process, the servers it started)."""
        code = f"import pathlib, store.db; store.db.start_embedded(pathlib.Path({str(self.pgdata)!r}))"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True)

    def running(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    # Not under pytest's basetemp: a concurrent pytest session makes that 0700, and the server's
    # user could no longer reach its own directory to stop.
    server_home = Path(tempfile.mkdtemp(prefix="predstore-private-"))
    pgdata = server_home / "pgdata"
    try:
        url = start_embedded(pgdata)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "predstore_template"')
        template = with_database(url, "predstore_template")
        upgrade(template)
        yield PrivateServer(pgdata, url, template)
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(server_home, ignore_errors=True)


@pytest.fixture
def private_database(private_server: PrivateServer) -> Iterator[str]:
    """A fresh database at head on the module's own server (started again first if a test left it
    stopped)."""
    if not private_server.running():
        private_server.restart()
    with cloned_database(private_server.url, private_server.template) as url:
        yield url
        if not private_server.running():
            private_server.restart()
