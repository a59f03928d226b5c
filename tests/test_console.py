"""`predstore ui`: every page on a store with a year's story in small (the demo's weeks, a challenger,
a comparison, a held run), its errors, its keys off loopback and its read-only role. The pages in a
real browser are in tests/test_console_browser.py."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from demo.run import MODEL, NUMERIC
from monitor.console import close_app, create_app, is_loopback
from predstore.cli import main
from store import Settings, apikeys


@pytest.fixture
def client(console_store: tuple[Settings, dict[str, int]]) -> Iterator[object]:
    app = create_app(console_store[0], require_key=False)
    try:
        yield app.test_client()
    finally:
        close_app(app)


def text(response: object) -> str:
    """A page's text, tags dropped."""
    return html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))  # type: ignore[attr-defined]


def test_the_models_page_says_which_version_serves_and_what_is_held(
        client: object, console_store: tuple[Settings, dict[str, int]]) -> None:
    page = client.get("/")  # type: ignore[attr-defined]
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")  # no script can run
    body = page.get_data(as_text=True)
    assert '<a href="/models/bikes">bikes</a>' in body
    serving = re.search(r'class="l serving">v(\d+)<', body)
    assert serving is not None and serving.group(1) == "1"
    assert f"v{console_store[1]['challenger']}" in body
    assert '<a href="/runs?model=bikes&amp;status=held">' in body  # the held runs, one click away


def test_the_model_page_shows_versions_provenance_and_the_audit_trail(client: object) -> None:
    page = client.get("/models/bikes")  # type: ignore[attr-defined]
    assert page.status_code == 200
    words = text(page)
    assert "Serving v1" in " ".join(words.split())
    assert "challenger" in words and "model.promote" in words and "model.register" in words
    with psycopg.connect(client.application.extensions["predstore_pool"].conninfo) as conn:  # type: ignore[attr-defined]
        sha = conn.execute("SELECT sha256 FROM models WHERE name = 'bikes' AND version = 1").fetchone()
    assert sha is not None and sha[0][:12] in words and f'title="{sha[0]}"' in page.get_data(as_text=True)
    assert "mae" in words  # the training metrics


def test_the_runs_page_filters_by_model_status_and_date(client: object, console_store: tuple[Settings, dict[str, int]]
                                                        ) -> None:
    held = console_store[1]["held"]
    page = client.get("/runs?model=bikes&status=held")  # type: ignore[attr-defined]
    assert page.status_code == 200
    ids = re.findall(r'<a href="/runs/(\d+)">', page.get_data(as_text=True))
    assert ids and str(held) in ids
    assert "held by the publish gate" in text(page)
    every = client.get("/runs").get_data(as_text=True)  # type: ignore[attr-defined]
    assert len(re.findall(r'<a href="/runs/\d+">', every)) > len(ids)
    assert "No run matches" in text(client.get("/runs?until=2000-01-01"))  # type: ignore[attr-defined]
    assert "No run matches" not in text(client.get("/runs?since=2000-01-01"))  # type: ignore[attr-defined]


def test_a_held_run_says_why_and_shows_its_profile_against_the_baseline(
        client: object, console_store: tuple[Settings, dict[str, int]]) -> None:
    page = client.get(f"/runs/{console_store[1]['held']}")  # type: ignore[attr-defined]
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Held" in body and "temp" in body
    assert body.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart histogram"') >= len(NUMERIC)


def test_drift_and_performance_pages_draw_their_charts(client: object) -> None:
    drift = client.get("/models/bikes/drift").get_data(as_text=True)  # type: ignore[attr-defined]
    assert "Drift over time" in drift and 'class="chart trend"' in drift and "cusum_up" in drift
    performance = client.get("/models/bikes/performance").get_data(as_text=True)  # type: ignore[attr-defined]
    assert 'class="chart performance"' in performance
    assert "Champion against challenger" in performance and "anytime" in performance


@pytest.mark.parametrize("path, status, says", [
    ("/models/nope", 404, "no model named 'nope'"),
    ("/models/nope/drift", 404, "no model named 'nope'"),
    ("/runs/999999", 404, "there is no run 999999"),
    ("/runs?since=yesterday", 400, "since must be a date as YYYY-MM-DD"),
    ("/runs?status=lost", 400, "unknown status 'lost'"),
    ("/runs?before=x", 400, "before must be a run id"),
    ("/no/such/page", 404, "not found"),
])
def test_a_bad_address_is_one_line_that_says_what_was_wrong(client: object, path: str, status: int, says: str) -> None:
    page = client.get(path)  # type: ignore[attr-defined]
    assert page.status_code == status
    assert says.lower() in text(page).lower()
    assert "Traceback" not in page.get_data(as_text=True)


def test_off_loopback_every_page_needs_a_key_with_the_ui_scope(console_store: tuple[Settings, dict[str, int]]) -> None:
    settings = console_store[0]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:  # type: ignore[arg-type]
        _, lookups_only = apikeys.create_key(conn, "lookups")
        _, console = apikeys.create_key(conn, "console", scopes=["ui"])
        _, other_model = apikeys.create_key(conn, "other", models=[MODEL], scopes=["ui"])
        conn.execute("INSERT INTO models (name, version, artifact_uri, sha256, format, flavor, task, feature_schema) "
                     "SELECT 'other', version, artifact_uri, sha256, format, flavor, task, feature_schema "
                     "FROM models WHERE name = 'bikes' AND version = 1")
    app = create_app(settings, require_key=True)
    try:
        client = app.test_client()
        asked = client.get("/")
        assert asked.status_code == 401 and asked.headers["WWW-Authenticate"].lower().startswith("basic")
        assert "--scope ui" in text(asked)

        def basic(key: str) -> dict[str, str]:
            return {"Authorization": "Basic " + base64.b64encode(f"me:{key}".encode()).decode()}

        assert client.get("/", headers=basic(lookups_only)).status_code == 403
        assert client.get("/", headers=basic(console[:-2] + "xx")).status_code == 401
        assert client.get("/", headers=basic(console)).status_code == 200
        assert client.get("/models/bikes", headers={"Authorization": f"Bearer {console}"}).status_code == 200
        scoped = client.get("/", headers=basic(other_model)).get_data(as_text=True)
        assert "/models/bikes" in scoped and "/models/other" not in scoped
        assert client.get("/models/other", headers=basic(other_model)).status_code == 403
        assert client.get("/healthz").status_code == 200
    finally:
        close_app(app)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute("DELETE FROM models WHERE name = 'other'")
            conn.execute("DELETE FROM api_keys")


def test_the_console_role_reads_every_page_and_no_prediction(console_store: tuple[Settings, dict[str, int]]) -> None:
    settings = console_store[0]
    env = {"PREDSTORE_DATABASE_URL": settings.database_url or "", "PREDSTORE_HOME": str(settings.home)}
    result = CliRunner().invoke(main, ["db", "grant", "--console-role", "predstore_console_test"], env=env)
    assert result.exit_code == 0, result.output
    url = settings.database_url
    assert url is not None
    as_console = re.sub(r"//[^@/]*@", "//predstore_console_test@", url) if "@" in url else \
        url.replace("postgresql://", "postgresql://predstore_console_test@")
    app = create_app(settings, require_key=False, url=as_console)
    try:
        client = app.test_client()
        run_id = console_store[1]["held"]
        for path in ("/", "/models/bikes", "/models/bikes/drift", "/models/bikes/performance", "/runs",
                     f"/runs/{run_id}"):
            assert client.get(path).status_code == 200, path
    finally:
        close_app(app)
    with psycopg.connect(as_console) as conn:
        for table in ("predictions", "labels", "label_matches", "erasure_key"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
            conn.rollback()


def test_loopback_is_told_apart_from_other_interfaces() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_a_port_in_use_is_one_line_and_exit_code_2(console_store: tuple[Settings, dict[str, int]],
                                                   tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = console_store[0]
        result = CliRunner().invoke(main, ["ui", "--port", str(port)],
                                    env={"PREDSTORE_DATABASE_URL": settings.database_url,
                                         "PREDSTORE_HOME": str(settings.home)})
    assert result.exit_code == 2
    assert f"port {port} on 127.0.0.1 is already in use: stop what listens there" in result.output
    assert "Traceback" not in result.output

