"""Smaller holes: deep JSON, made-up methods, key ids, one entity id limit, security-barrier
views, the embedded server's socket directory, and the alert webhook's scheme."""

from __future__ import annotations

import json
import os
import re
import stat
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from lookup_api import close_app, create_app, parse
from models.validate import MAX_ENTITY_ID_LENGTH
from monitor.config import MonitorConfig
from store import apikeys
from store.db import start_embedded, stop_embedded
from store.errors import ConfigError
from store.settings import Settings
from tests.helpers import publish_run


@pytest.fixture
def app(settings: Settings, conn: psycopg.Connection) -> Iterator[Flask]:
    publish_run(conn, "churn", "p", [("e1", 0.2), ("x" * MAX_ENTITY_ID_LENGTH, 0.9)])
    app = create_app(settings)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_deeply_nested_json_is_a_400(client: FlaskClient) -> None:
    for body in (b"[" * 50_000, b'{"entity_ids": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        response = client.post("/v1/models/churn/predictions:batch", data=body)
        assert response.status_code == 400, response.get_data(as_text=True)[:200]
        assert response.get_json()["error"]["code"] == "bad_request"


def test_made_up_methods_are_counted_as_other(client: FlaskClient) -> None:
    for i in range(5):
        assert client.open("/v1/models", method=f"BREW{i}").status_code == 405
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'method="other"' in metrics and "BREW" not in metrics


def test_every_id_scoring_stores_can_be_looked_up(client: FlaskClient) -> None:
    assert parse.MAX_ID_LENGTH == MAX_ENTITY_ID_LENGTH
    longest = "x" * MAX_ENTITY_ID_LENGTH
    assert client.get(f"/v1/models/churn/predictions/{longest}").status_code == 200
    batch = client.post("/v1/models/churn/predictions:batch", json={"entity_ids": [longest]})
    assert batch.status_code == 200 and batch.get_json()["missing"] == []
    assert client.get(f"/v1/models/churn/predictions/{longest}x").status_code == 400


def test_api_key_ids_carry_64_random_bits(conn: psycopg.Connection) -> None:
    ids = {apikeys.create_key(conn, f"k{i}")[0].key_id for i in range(20)}
    assert len(ids) == 20 and all(len(k) == 16 and int(k, 16) >= 0 for k in ids)


def test_the_views_the_reader_reads_are_security_barriers(conn: psycopg.Connection) -> None:
    views = ["published_predictions", "current_predictions", "published_runs"]
    options: dict[str, list[str]] = dict(
        conn.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [views]).fetchall())
    assert options == dict.fromkeys(options, ["security_barrier=true"]) and len(options) == 3


def test_the_embedded_socket_directory_is_private(tmp_path: Path) -> None:
    """A PREDSTORE_HOME too deep for a socket path: pgserver falls back to a runtime directory."""
    pgdata = tmp_path.joinpath(*["deep" * 8] * 4, "pgdata")
    url = start_embedded(pgdata)
    try:
        socket_dir = Path(str(conninfo_to_dict(url)["host"]))
        assert socket_dir != pgdata  # the fallback this test is about
        mode = socket_dir.stat().st_mode
        assert not mode & (stat.S_IWOTH | stat.S_IWGRP | stat.S_IROTH | stat.S_IXOTH), oct(mode)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        if os.geteuid() == 0:  # the server runs as another user: the directory is that user's
            assert socket_dir.stat().st_uid == pgdata.stat().st_uid
    finally:
        stop_embedded(pgdata)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
BODIES = st.one_of(
    JSON.map(lambda value: json.dumps(value).encode()),
    st.lists(st.text(max_size=600), max_size=5).map(lambda ids: json.dumps({"entity_ids": ids}).encode()),
    st.binary(max_size=300),
    st.integers(1, 60_000).map(lambda depth: b"[" * depth),
    st.integers(1, 60_000).map(lambda depth: b'{"entity_ids": ' + b"[" * depth + b"]" * depth + b"}"),
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]) | st.text(
    alphabet=string.ascii_uppercase, min_size=1, max_size=12)
PATHS = st.sampled_from(["/v1/models", "/v1/models/churn", "/v1/models/churn/predictions/e1",
                         "/v1/models/churn/predictions:batch", "/readyz", "/metrics"]) | st.text(max_size=40).map(
    lambda tail: "/v1/models/" + quote(tail, safe="/:?=&%"))


# The API's connection pool draws jitter from `random` in its own threads while an example is
# drawn; Hypothesis would take that for a strategy using `random`.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=METHODS, path=PATHS, body=BODIES)
def test_fuzzed_requests_get_an_answer_never_a_500(client: FlaskClient, method: str, path: str, body: bytes) -> None:
    response = client.open(path, method=method, data=body, content_type="application/json")
    assert response.status_code < 500, (method, path, body[:80], response.get_data(as_text=True)[:300])
    if response.status_code >= 400 and method != "HEAD":
        assert set(response.get_json()["error"]) == {"code", "message"}
    methods = {m for m in re.findall(r'method="([^"]*)"', client.get("/metrics").get_data(as_text=True))}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, methods


def test_the_alert_webhook_is_http_or_https(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """From the monitor's config file or the environment: one line, exit 2, before anything runs,
    for `predstore monitor` and a scheduler with a monitor job; the URL (often itself the
    webhook's secret) never echoed."""
    config = tmp_path / "monitor.toml"
    schedule = tmp_path / "schedule.toml"
    schedule.write_text('[jobs.watch]\nkind = "monitor"\nmodel = "churn"\ncron = "0 3 * * *"\ntimezone = "UTC"\n')
    for url in ("file:///etc/passwd", "ftp://hooks.example.com/x?token=s3cret", "data:,s3cret",
                "https:///s3cret-path", "hooks.example.com/s3cret", "http://h:99999/s3cret"):
        config.write_text(f"webhook_url = {json.dumps(url)}\n")
        for environ in ({"PREDSTORE_MONITOR_CONFIG": str(config)}, {"PREDSTORE_ALERT_WEBHOOK": url}):
            with pytest.raises(ConfigError, match="write an http:// or https:// URL") as caught:
                MonitorConfig.from_env(environ)
            assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)
    assert MonitorConfig.from_env({"PREDSTORE_ALERT_WEBHOOK": "HTTPS://h/x"}).webhook_url == "HTTPS://h/x"
    config.write_text('webhook_url = "file:///etc/passwd"\n')
    for env, command in (({**cli_env, "PREDSTORE_MONITOR_CONFIG": str(config)}, ["monitor", "--model", "churn"]),
                         ({**cli_env, "PREDSTORE_ALERT_WEBHOOK": "ftp://h/s3cret"},
                          ["schedule", "--config", str(schedule), "--once"])):
        done = subprocess.run(["predstore", *command], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "http:// or https://" in lines[0], done.stderr
        assert "s3cret" not in done.stderr + done.stdout and "passwd" not in done.stderr
