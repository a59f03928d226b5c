"""The lookup API needs a key by default: on the production path (gunicorn, settings from the
environment) and under `predstore serve`, unless local development opts out, and says so; and
`apikeys list --json` says each key's state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from predstore.cli import main
from store.settings import Settings
from tests.helpers import REPO, free_port, http, publish_run


@pytest.fixture
def seeded(conn: psycopg.Connection) -> int:
    return publish_run(conn, "churn", "p", [("e1", 0.1)])


def test_a_key_is_required_unless_turned_off(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).api_require_key
    assert Settings.from_env({}).api_require_key
    assert not Settings.from_env({"PREDSTORE_API_REQUIRE_KEY": "false"}).api_require_key


def answers(command: list[str], env: dict[str, str], port: int) -> tuple[int, int, str]:
    """(status of /readyz, status of a /v1 lookup without a key, the server's output)."""
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                ready = http("GET", base + "/readyz")[0]
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                time.sleep(0.1)
        lookup = http("GET", base + "/v1/models/churn/predictions/e1")[0]
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert "Traceback" not in output, output
    return ready, lookup, output


def test_gunicorn_refuses_lookups_without_a_key_by_default(cli_env: dict[str, str], seeded: int,
                                                          tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k != "PREDSTORE_API_REQUIRE_KEY"}  # as a deployment has it
    port = free_port()
    ready, lookup, _ = answers([sys.executable, "-m", "gunicorn", "lookup_api:create_app()", "-c",
                                "lookup_api/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                               {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}, port)
    assert (ready, lookup) == (200, 401)


@pytest.mark.parametrize(("flag", "lookup", "said"), [
    ([], 401, "every /v1 request needs an API key"),
    (["--no-key-required"], 200, "warning: /v1 answers without an API key until the first key is created"),
])
def test_serve_needs_a_key_unless_told_and_says_which(flag: list[str], lookup: int, said: str,
                                                     cli_env: dict[str, str], seeded: int) -> None:
    env = {k: v for k, v in cli_env.items() if k != "PREDSTORE_API_REQUIRE_KEY"}
    port = free_port()
    ready, got, output = answers([sys.executable, "-m", "store", "serve", "--port", str(port), *flag], env, port)
    assert (ready, got) == (200, lookup)
    assert said in output


def test_compose_runs_the_api_as_the_reader_with_keys_and_keeps_dask_private() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    env = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    api = services["lookup-api"]
    assert api["environment"]["PREDSTORE_API_REQUIRE_KEY"] == "true" and env["PREDSTORE_API_REQUIRE_KEY"] == "true"
    assert api["depends_on"]["grant"]["condition"] == "service_completed_successfully"
    assert services["grant"]["command"][:3] == ["predstore", "db", "grant"]
    role = services["grant"]["command"][services["grant"]["command"].index("--role") + 1]
    assert env["PREDSTORE_API_DATABASE_URL"].startswith(f"postgresql://{role}:{env['PREDSTORE_READER_PASSWORD']}@")
    grant = services["grant"]["command"]
    console = grant[grant.index("--console-role") + 1]
    assert env["PREDSTORE_UI_DATABASE_URL"].startswith(f"postgresql://{console}:{env['PREDSTORE_CONSOLE_PASSWORD']}@")
    assert services["ui"]["command"][:2] == ["predstore", "ui"] and "0.0.0.0" in services["ui"]["command"]  # keys
    assert "ports" not in services["dask-scheduler"] and "ports" not in services["dask-worker"]
    assert services["dask-worker"]["environment"]["PGPASSWORD"] == "${POSTGRES_PASSWORD}"


def test_apikeys_list_json_says_each_keys_state(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    for name in ("kept", "gone"):
        assert runner.invoke(main, ["apikeys", "create", name], env=cli_env).exit_code == 0
    listed = json.loads(runner.invoke(main, ["apikeys", "list", "--json"], env=cli_env).output)
    gone = next(k["key_id"] for k in listed if k["name"] == "gone")
    assert runner.invoke(main, ["apikeys", "revoke", gone], env=cli_env).exit_code == 0
    listed = json.loads(runner.invoke(main, ["apikeys", "list", "--json"], env=cli_env).output)
    assert {k["name"]: (k["state"], k["revoked_at"] is None) for k in listed} == {
        "kept": ("active", True), "gone": ("revoked", False)}
