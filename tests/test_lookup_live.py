"""The lookup API as it runs: under gunicorn, through a database outage, and against any request
its OpenAPI document allows."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_from_bytes

import psutil
import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from lookup_api import close_app, create_app
from store.db import stop_embedded
from store.settings import Settings
from tests.conftest import interruptible
from tests.helpers import REPO, free_port, http, publish_run

if TYPE_CHECKING:
    from tests.conftest import PrivateServer


@pytest.fixture
def seeded(conn: psycopg.Connection) -> int:
    return publish_run(conn, "churn", "2026-11-25", [(f"e{i}", i / 10) for i in range(10)])


def test_gunicorn_serves_lookups(cli_env: dict[str, str], seeded: int, tmp_path: Path) -> None:
    """With the settings of the installed package, run outside any source checkout; every line
    it writes, gunicorn's included, is a JSON object."""
    port = free_port()
    env = {**cli_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "PREDSTORE_LOG_FORMAT": "json"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "lookup_api:create_app()", "-c", "python:lookup_api.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if http("GET", base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            time.sleep(0.1)
        status, _, body = http("GET", base + "/v1/models/churn/predictions/e3")
        assert status == 200 and body["run_id"] == seeded and body["prediction"] == pytest.approx(0.3)
        status, _, body = http("POST", base + "/v1/models/churn/predictions:batch", {"entity_ids": ["e1", "x"]})
        assert status == 200 and body["missing"] == ["x"] and len(body["predictions"]) == 1
        status, _, body = http("GET", base + "/v1/models/churn/predictions/nobody")
        assert status == 404 and body["error"]["code"] == "not_found"
        for _ in range(8):
            http("GET", base + "/healthz")
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        # The sum over both workers: every /healthz counted, whichever worker answered it.
        assert 'predstore_api_requests_total{method="GET",route="/healthz",status="200"} 8.0' in text
        assert_connections_spread(server.pid, port)
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "Traceback" not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert {"gunicorn.error"} <= {line["logger"] for line in lines} and all(line["time"] for line in lines)


def assert_connections_spread(server_pid: int, port: int, clients: int = 16) -> None:
    """Keep-alive clients land on every worker (each has its own SO_REUSEPORT socket); on one
    shared socket the last worker to wait takes them all. All 16 on one of 2 workers by chance:
    a 1 in 32,768 event."""
    connections = [HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(clients)]
    try:
        for connection in connections:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and not response.will_close
        per_worker = {worker.pid: sum(1 for c in worker.net_connections("tcp")
                                      if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)
                      for worker in psutil.Process(server_pid).children()}
    finally:
        for connection in connections:
            connection.close()
    assert len(per_worker) == 2 and all(per_worker.values()), per_worker


@pytest.mark.parametrize("kind", ["granian", "dev"])
def test_predstore_serve_serves_lookups(cli_env: dict[str, str], seeded: int, kind: str) -> None:
    port = free_port()
    args = ["--workers", "2"] if kind == "granian" else ["--dev"]
    env = {**cli_env, "PREDSTORE_LOG_FORMAT": "json"} if kind == "granian" else cli_env
    server = subprocess.Popen([sys.executable, "-m", "store", "serve", "--port", str(port), *args], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=interruptible)
    try:
        for _ in range(150):
            try:
                status, _, body = http("GET", f"http://127.0.0.1:{port}/v1/models/churn/predictions/e2")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                time.sleep(0.1)
        assert status == 200 and body["run_id"] == seeded
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert "Traceback" not in output, output
    if kind == "granian":  # granian's lines and predstore's, all JSON objects
        loggers = {json.loads(line)["logger"] for line in output.splitlines()}
        assert {"_granian", "predstore.lookup_api"} <= loggers, output


def test_database_outage_gives_503_then_recovers(tmp_path: Path, private_server: PrivateServer,
                                                 private_database: str) -> None:
    url = private_database
    app: Flask | None = None
    try:
        with psycopg.connect(url) as conn:
            publish_run(conn, "churn", "p", [(f"e{i}", 0.5) for i in range(100)])
        app = create_app(Settings(home=tmp_path, database_url=url, api_pool_timeout=0.5, api_require_key=False))
        client = app.test_client()
        assert client.get("/v1/models/churn/predictions/e0").status_code == 200

        assert stop_embedded(private_server.pgdata)
        down = [client.get(f"/v1/models/churn/predictions/e{i}") for i in range(1, 4)]
        down.append(client.get("/readyz"))
        assert [r.status_code for r in down] == [503] * 4
        for response in down:
            assert response.headers["Retry-After"] == "1"
            assert response.get_json()["error"]["code"] == "store_unavailable"

        private_server.restart()
        statuses = []
        for i in range(200):  # each try waits at most the pool timeout
            statuses.append(client.get(f"/v1/models/churn/predictions/e{10 + i % 50}").status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.05)
        assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/models/churn/predictions/e0").status_code == 200
    finally:
        if app is not None:
            close_app(app)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(dataclasses.replace(settings, api_max_batch=20))
    yield app
    close_app(app)


IDS = ["e1", "e3", "nobody", "churn"]
NAMES = ["churn", "ghost"]

#: Path segments as a client could send them: known names, any text, any bytes percent-encoded.
segments = st.one_of(
    st.sampled_from(IDS + NAMES),
    st.text(st.characters(codec="utf-8"), max_size=300).map(lambda s: quote(s, safe="")),
    st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="")),
)
queries = st.one_of(st.just(""), st.integers(-3, 2**40).map(lambda v: f"version={v}"),
                    st.text(max_size=20).map(lambda s: "version=" + quote(s.encode("utf-8", "replace"))))
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
bodies = st.one_of(
    st.fixed_dictionaries({"entity_ids": st.lists(st.sampled_from(IDS) | st.text(max_size=300), max_size=25)})
    .map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


def test_no_request_the_openapi_document_allows_gets_a_5xx(app: Flask, seeded: int) -> None:
    client: FlaskClient = app.test_client()
    spec = client.get("/openapi.json").get_json()
    operations = [(path, method.upper(), op) for path, item in spec["paths"].items() for method, op in item.items()]

    @hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        path, method, op = data.draw(st.sampled_from(operations))
        params = op.get("parameters", [])
        for param in params:
            if param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", data.draw(segments))
        query = data.draw(queries) if any(p["in"] == "query" for p in params) else ""
        body = data.draw(bodies) if "requestBody" in op else None
        response = client.open(path, method=method, query_string=query, data=body,
                               content_type="application/json" if body is not None else None)
        assert response.status_code < 500, (path, query, body, response.get_data(as_text=True))
        if path == "/metrics" and response.status_code == 200:
            return
        document = response.get_json()
        if response.status_code >= 400:
            assert set(document["error"]) == {"code", "message"}

    check()
