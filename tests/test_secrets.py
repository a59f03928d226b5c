"""Passwords never reach a message: connection strings in both forms (URL and keyword DSN),
well-formed and malformed, through the CLI, the lookup API's 503 bodies and the demo."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from batch.executors import ExecutorSpec
from batch.runner import task_url
from lookup_api import close_app, create_app
from predstore.cli import main
from store.errors import describe_target, mask_secrets
from store.settings import Settings
from tests.helpers import bare_env

SECRET = "s3cr3t-pw"

#: Unreachable targets (nothing listens on port 1), in both forms.
UNREACHABLE = [f"postgresql://alice:{SECRET}@127.0.0.1:1/store",
               f"host=127.0.0.1 port=1 user=alice password={SECRET} dbname=store",
               f"host=127.0.0.1 port=1 user=alice password='{SECRET} x' dbname=store"]
#: Strings libpq refuses, quoting them back.
MALFORMED = [f"postgresql://alice:{SECRET}@[127.0.0.1/store", f"host=127.0.0.1 password={SECRET} dbname"]


@pytest.mark.parametrize("conninfo", UNREACHABLE)
def test_a_target_is_described_without_its_password(conninfo: str) -> None:
    assert describe_target(conninfo) == "alice@127.0.0.1:1/store"
    assert SECRET not in mask_secrets(f"libpq said: {conninfo}", conninfo)


@pytest.mark.parametrize("conninfo", UNREACHABLE + MALFORMED)
def test_cli_errors_never_show_the_password(conninfo: str, tmp_path: Path) -> None:
    env = {"PREDSTORE_HOME": str(tmp_path), "PREDSTORE_DATABASE_URL": conninfo}
    result = CliRunner().invoke(main, ["db", "status"], env=env)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("predstore: error: ") and SECRET not in line, line
    assert ("not a valid PostgreSQL URL" if conninfo in MALFORMED else "database unavailable: cannot connect to "
            "PostgreSQL at alice@127.0.0.1:1/store") in line


@pytest.fixture(params=UNREACHABLE, ids=["url", "dsn", "dsn-quoted"])
def unreachable_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(Settings(home=tmp_path, database_url=request.param, api_reader_url=request.param,
                              api_pool_timeout=0.2))
    yield app
    close_app(app)


def test_503_bodies_never_show_the_password(unreachable_app: Flask) -> None:
    client = unreachable_app.test_client()
    for path in ("/readyz", "/v1/models/churn/predictions/e1"):  # both reachable without a key
        response = client.get(path)
        assert response.status_code == 503, response.get_data(as_text=True)
        body = response.get_data(as_text=True)
        assert "alice@127.0.0.1:1/store" in body and SECRET not in body, body


@pytest.mark.parametrize("conninfo", UNREACHABLE)
def test_tasks_for_a_remote_dask_cluster_carry_no_password(conninfo: str) -> None:
    remote = task_url(conninfo, ExecutorSpec(kind="dask", dask_address="tcp://dask-scheduler:8786"))
    assert SECRET not in remote and describe_target(remote) == "alice@127.0.0.1:1/store"
    assert task_url(conninfo, ExecutorSpec(kind="local", workers=2)) == conninfo  # this machine's processes


ODD_SHAPES = ["postgresql:/user:secret@host/db", "postgresql:user:secret@host/db", "user:secret@host/db",
             "postgresql:///user:secret@host/db", "postgres://user:sec@ret@host/db", "host=h password=se cret"]


@pytest.mark.parametrize("url", ODD_SHAPES)
def test_a_malformed_url_is_masked_whatever_its_shape(url: str) -> None:
    quoted = f'missing "=" after "{url}" in connection info string'
    for text in (mask_secrets(quoted, url), describe_target(url)):
        assert "secret" not in text and "sec@" not in text, text
    if " " not in url:  # a URL, masked even where the message does not say which string it quotes
        assert "secret" not in mask_secrets(f"at {url}") and "sec@" not in mask_secrets(f"at {url}")
    # libpq quotes the piece of a keyword string it stopped at: the tail of a password with a space
    assert mask_secrets('missing "=" after "cret" in connection info string', "host=h password=se cret") == \
        'missing "=" after "***" in connection info string'


@pytest.mark.parametrize("url", ODD_SHAPES[:4])
def test_db_status_with_a_malformed_url_prints_no_password(url: str, tmp_path: Path) -> None:
    done = subprocess.run(["predstore", "db", "status"], env=bare_env(tmp_path, url), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "secret" not in done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("predstore: error: "), done.stderr
