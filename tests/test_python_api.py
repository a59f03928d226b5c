"""The `predstore` package: the notebook example in docs/python.md runs as written, against a real
store and a real lookup API; `python -m predstore` is the command; the client retries a 503."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from werkzeug.serving import make_server

import predstore
from lookup_api import close_app, create_app
from store import NotFound, Settings, StoreUnavailable, apikeys

ROOT = Path(__file__).resolve().parent.parent


def example_cells() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), flags=re.S)


@pytest.fixture
def default_store(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's database and home as the environment's: what the module functions use."""
    monkeypatch.setenv("PREDSTORE_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("PREDSTORE_HOME", str(settings.home))
    return settings


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The lookup API served over HTTP from a thread of this process; yields its URL."""
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        close_app(app)


@pytest.fixture
def api_url(default_store: Settings) -> Iterator[str]:
    """The lookup API, open until a key exists (as the test settings make it)."""
    with serving(default_store) as url:
        yield url


@pytest.fixture
def keyed_api_url(default_store: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The lookup API as `predstore serve` runs it by default, every /v1 request needing a key; the
    key docs/serving.md has the reader create (allowed to score live) is in ``PREDSTORE_API_KEY``, where
    docs/python.md keeps it; live scoring on."""
    with psycopg.connect(default_store.database_url or "") as conn, conn.transaction():
        _, secret = apikeys.create_key(conn, "notebook", scopes=["score"])
    monkeypatch.setenv("PREDSTORE_API_KEY", secret)
    with serving(replace(default_store, api_require_key=True, api_live_scoring=True)) as url:
        yield url


def test_the_notebook_example_runs(keyed_api_url: str) -> None:
    namespace: dict[str, Any] = {"api_url": keyed_api_url}
    for cell in example_cells():
        exec(compile(cell, "docs/python.md", "exec"), namespace)  # noqa: S102 (our own documentation)
    assert namespace["version"].version == 1 and namespace["version"].task == "classification"
    assert namespace["run"].status == "published" and namespace["run"].rows_scored == 1_000
    assert list(namespace["found"]["entity_id"]) == ["c1", "c2"]
    assert not namespace["drift"].empty
    assert namespace["many"]["missing"] == ["never-scored"]
    assert namespace["one"]["prediction"] == namespace["found"]["prediction"][0]
    assert [p["source"] for p in namespace["mixed"]["predictions"]] == ["precomputed"] * 2 + ["live"] * 2
    assert [p["entity_id"] for p in namespace["scored"]["predictions"]] == ["c-new-1", "c-new-2"]


def test_scoring_the_same_frame_again_is_skipped(default_store: Settings) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example_cells()[0], "docs/python.md", "exec"), namespace)  # noqa: S102
    frame = namespace["train"].drop(columns=["churned"]).assign(customer_id=lambda f: f.index.astype(str))
    first = predstore.score(frame, model="churn")
    again = predstore.Store(url=default_store.database_url, home=default_store.home).score(frame, model="churn")
    assert first.status == "published" and first.partition.startswith("frame-")
    assert again.status == "skipped" and again.partition == first.partition


def test_a_path_or_file_uri_is_scored_as_the_command_scores_it(default_store: Settings, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example_cells()[0], "docs/python.md", "exec"), namespace)  # noqa: S102
    path = tmp_path / "dt=2026-11-27.parquet"
    namespace["train"].drop(columns=["churned"]).assign(customer_id=lambda f: f.index.astype(str)).to_parquet(path)
    by_path = predstore.score(str(path), model="churn")
    by_uri = predstore.score(path.as_uri(), model="churn")
    assert by_path.status == "published" and by_path.partition == "dt=2026-11-27"
    assert by_uri.status == "skipped" and by_uri.partition == by_path.partition


def test_unknown_model_and_entity_are_not_found(default_store: Settings, api_url: str) -> None:
    with pytest.raises(NotFound, match="nope"):
        predstore.predictions("nope", ["c1"])
    with pytest.raises(NotFound, match="404"):
        predstore.Client(api_url).prediction("nope", "c1")


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 with Retry-After until ``failures`` run out, then a prediction."""

    failures = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).failures -= 1
        status, body = (503, {"error": {"code": "store_unavailable", "message": "the database is away"}}) \
            if type(self).failures >= 0 else (200, {"entity_id": "c1", "prediction": 1})
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "2")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_client_retries_a_503_as_retry_after_says(flaky_url: str) -> None:
    waits: list[float] = []
    Flaky.failures = 2
    assert predstore.Client(flaky_url, sleep=waits.append).prediction("m", "c1")["prediction"] == 1
    assert waits == [2.0, 2.0]
    Flaky.failures = 5
    with pytest.raises(StoreUnavailable, match="503 the database is away"):
        predstore.Client(flaky_url, retries=1, sleep=waits.append).prediction("m", "c1")


def test_python_m_predstore_is_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "predstore", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0 and "Usage: predstore" in done.stdout and "score" in done.stdout


def test_importing_predstore_loads_no_heavy_library() -> None:
    probe = "import sys, predstore; print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'sklearn', " \
            "'pyarrow', 'sqlalchemy', 'flask', 'scipy'}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
