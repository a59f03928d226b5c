"""The foundation: settings, migrations, the embedded server and `predstore db`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic import command
from click.testing import CliRunner

from predstore.cli import main
from store import ConfigError, SchemaOutdated, Settings
from store.migrate import alembic_config, check_current, current_revision, head_revision, upgrade

TABLES = {"models", "model_aliases", "runs", "predictions", "rejected_rows", "labels"}
VIEWS = {"published_predictions", "current_predictions", "run_summary"}


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "store", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_settings_from_env_reads_and_validates() -> None:
    s = Settings.from_env({"PREDSTORE_HOME": "/x/y", "PREDSTORE_DATABASE_URL": " ", "PREDSTORE_KEEP_RUNS": "5"})
    assert s.home == Path("/x/y") and s.database_url is None and s.keep_runs == 5
    with pytest.raises(ConfigError, match="PREDSTORE_KEEP_RUNS='many' is not a whole number"):
        Settings.from_env({"PREDSTORE_KEEP_RUNS": "many"})


def test_migrated_database_has_tables_and_views(conn: psycopg.Connection) -> None:
    names = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = 'public'")}
    assert TABLES | VIEWS <= names
    kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'predictions'").fetchone()
    assert kind == ("p",)  # declaratively partitioned
    assert current_revision(conn) == head_revision()


def test_models_and_migrations_agree(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises if autogenerate would change anything


def test_downgrade_and_upgrade_round_trip(database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    with psycopg.connect(database_url) as conn:
        assert current_revision(conn) is None
        with pytest.raises(SchemaOutdated, match="run `predstore db upgrade`"):
            check_current(conn)
    upgrade(database_url)
    with psycopg.connect(database_url) as conn:
        check_current(conn)


def test_db_status_reports_revision_and_counts(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["db", "status", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert f'"revision": "{head_revision()}"' in result.output
    assert '"published_runs": 0' in result.output


def test_db_status_says_which_folder_the_store_is_in(cli_env: dict[str, str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["db", "status", "--json"], env={**cli_env, "PREDSTORE_HOME": "store"})
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["home"] == str(tmp_path.resolve() / "store")
    assert status["pgdata"] is None  # an external server: no data folder of its own
    text = CliRunner().invoke(main, ["db", "status"], env={**cli_env, "PREDSTORE_HOME": "store"}).output
    assert f"home                   {tmp_path.resolve() / 'store'}" in text.splitlines()


def test_outdated_external_database_says_to_upgrade(cli_env: dict[str, str], database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
    result = run_cli("db", "status", env=cli_env)
    assert result.returncode == 2
    assert result.stderr.strip() == "predstore: error: the database has no predstore tables yet; " \
                                    "run `predstore db upgrade`"
    assert run_cli("db", "upgrade", env=cli_env).returncode == 0
    assert run_cli("db", "status", env=cli_env).returncode == 0


def test_unreachable_database_is_one_line_exit_2(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PREDSTORE_DATABASE_URL": "postgresql://someone:secret@127.0.0.1:9/nowhere"}
    result = run_cli("db", "status", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0] and "Traceback" not in result.stderr
    assert "secret" not in result.stderr


def test_unwritable_home_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    env["PREDSTORE_HOME"] = str(blocker / "home")
    result = run_cli("db", "status", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"predstore: error: PREDSTORE_HOME {blocker / 'home'} is not a writable directory (Not a directory); "
        "set PREDSTORE_HOME to a directory you can write to"
    ]


def test_embedded_default_starts_once_and_is_reused(tmp_path: Path) -> None:
    """With no URL set, commands share one embedded server under PREDSTORE_HOME, migrated on first use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    try:
        first = run_cli("db", "url", env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        url = first.stdout.strip()
        assert str(tmp_path / ".predstore" / "pgdata") in url
        second = run_cli("db", "url", env=env, cwd=tmp_path)
        assert second.stdout.strip() == url
        with psycopg.connect(url) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            assert TABLES <= tables
            postmasters = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE backend_type = 'checkpointer'").fetchone()
            assert postmasters == (1,)
    finally:
        stopped = run_cli("db", "stop", env=env, cwd=tmp_path)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
