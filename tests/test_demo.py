"""`predstore demo` on the real data, cut to a few weeks so the suite stays fast."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from demo.run import MODEL, load_hours, run_demo
from demo.serve import KEY_NAME
from lookup_api import close_app, create_app
from predstore.cli import main
from store import Settings, apikeys
from tests.conftest import interruptible

#: Where the demo says its API answers: `curl [-H "Authorization: Bearer KEY"] URL`.
CURL = re.compile(r'curl (?:-H "Authorization: Bearer (?P<key>[^"]+)" )?http://127\.0\.0\.1:(?P<port>\d+)(?P<path>\S+)')


def test_the_shipped_data_is_whole() -> None:
    hours = load_hours()
    assert len(hours) == 17_379 and hours["entity_id"].is_unique
    assert str(hours["event_time"].min()) == "2011-01-01 00:00:00+00:00"
    assert hours["hour"].between(0, 23).all()


def test_demo_scores_labels_and_monitors_each_week(settings: Settings, conn: psycopg.Connection) -> None:
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    result = run_demo(settings, say=lambda line: None, weeks=4)
    assert result.weeks == 4
    # The scheduler's handlers stop its passes only: afterwards Ctrl-C and SIGTERM do what they did.
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    runs = conn.execute("SELECT partition_key, status, rows_rejected FROM runs ORDER BY run_id").fetchall()
    assert [r[0] for r in runs] == ["week-2011-02-28", "week-2011-03-07", "week-2011-03-14", "week-2011-03-21"]
    assert {r[1] for r in runs} == {"published"}
    labels = conn.execute("SELECT count(*) FROM labels WHERE model_name = 'bikes'").fetchone()
    assert labels is not None and labels[0] > 4 * 150  # four weeks of hourly counts arrived
    page = result.report.read_text()
    assert page.lower().startswith("<!doctype html>") and "bikes" in page
    again = run_demo(settings, say=lambda line: None, weeks=4)  # a second demo reuses what is there
    assert again.weeks == 4
    assert conn.execute("SELECT count(*) FROM runs WHERE status = 'published'").fetchone() == (4,)
    assert conn.execute("SELECT count(*) FROM models").fetchone() == (1,)


def test_the_summary_counts_what_the_store_holds(settings: Settings, conn: psycopg.Connection) -> None:
    summary = run_demo(settings, say=lambda line: None, weeks=9).summary
    kinds: dict[str, int] = dict(conn.execute("SELECT kind, count(*) FROM alerts GROUP BY kind").fetchall())
    assert len(kinds) >= 2 and dict(summary.alerts) == kinds  # not only the last pass's alerts
    assert summary.total == sum(kinds.values())
    first: dict[str, str] = dict(conn.execute("""SELECT DISTINCT ON (a.kind) a.kind, r.partition_key FROM alerts a
                                 JOIN runs r ON r.run_id = a.run_id ORDER BY a.kind, a.alert_id""").fetchall())
    assert dict(summary.first_alert) == first and first["data_drift"] == "week-2011-02-28"

    assert summary.checks == 9
    drifted: dict[str, int] = dict(conn.execute("""SELECT column_name, count(*) FROM drift_over_time
                                   WHERE scope = 'run' AND role = 'feature' AND drifted
                                   GROUP BY column_name""").fetchall())
    named = dict(summary.drifted)
    assert named and all(drifted[name] == count for name, count in named.items())
    assert min(named.values()) >= max((n for name, n in drifted.items() if name not in named), default=0)

    windows = conn.execute("""SELECT window_start, value, training_value FROM performance_over_time
                              WHERE scope = 'window' AND metric = 'mae' AND NOT estimated
                              ORDER BY window_start""").fetchall()
    assert [(w.start, w.value) for w in summary.windows] == [(start, value) for start, value, _ in windows]
    assert summary.training == windows[0][2]
    assert summary.worst is not None and summary.worst.value == max(value for _, value, _ in windows)


def test_demo_command_says_where_things_are(cli_env: dict[str, str], settings: Settings,
                                            conn: psycopg.Connection) -> None:
    level = logging.getLogger().level
    result = CliRunner().invoke(main, ["demo", "--weeks", "2"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == level  # quiet while it runs, not for the program that invoked it
    for where in ("report", "psql", "curl http://127.0.0.1:8000/v1/models/bikes/predictions/", "predstore runs"):
        assert where in result.output
    # How to reach the store, never its URL (a password could be in it).
    assert str(settings.database_url) not in result.output and 'psql "$(predstore db url)"' in result.output
    alerts = conn.execute("SELECT count(*) FROM alerts").fetchone()
    assert alerts is not None and alerts[0] > 0 and f"alerts     {alerts[0]} raised: " in result.output
    # The hint names the newest hour served, and the API answers it.
    [hint] = [line for line in result.output.splitlines() if line.lstrip().startswith("API ")]
    assert "--no-key-required" in hint
    found = CURL.search(hint)
    assert found is not None and found["key"] is None, hint
    newest = conn.execute("SELECT max(entity_id) FROM current_predictions WHERE model_name = 'bikes'").fetchone()
    assert newest is not None and found["path"] == f"/v1/models/bikes/predictions/{newest[0]}"
    with served(settings) as client:
        response = client.get(found["path"])
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["entity_id"] == newest[0]


def test_once_a_key_exists_the_hint_sends_one(cli_env: dict[str, str], settings: Settings,
                                              conn: psycopg.Connection) -> None:
    with conn.transaction():
        apikeys.create_key(conn, "someone")
    result = CliRunner().invoke(main, ["demo", "--weeks", "1"], env=cli_env)
    assert result.exit_code == 0, result.output
    [hint] = [line for line in result.output.splitlines() if line.lstrip().startswith("API ")]
    assert "--no-key-required" not in hint and f"KEY=$(predstore apikeys create demo --model {MODEL});" in hint
    found = CURL.search(hint)
    assert found is not None and found["key"] == "$KEY", hint
    with conn.transaction():  # what `predstore apikeys create demo --model bikes` prints
        _, key = apikeys.create_key(conn, "demo", models=[MODEL])
    with served(settings) as client:
        assert client.get(found["path"]).status_code == 401
        response = client.get(found["path"], headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize(("key_exists", "signum"), [(False, signal.SIGINT), (True, signal.SIGTERM)],
                         ids=["open-ctrl-c", "keys-sigterm"])
def test_demo_serve_answers_its_hint_and_stops_at_the_first_signal(
        cli_env: dict[str, str], conn: psycopg.Connection, tmp_path: Path, key_exists: bool, signum: int) -> None:
    if key_exists:
        with conn.transaction():
            apikeys.create_key(conn, "someone")
    port, out = free_port(), tmp_path / "demo.out"
    with out.open("w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "store", "demo", "--weeks", "1", "--serve", "--port", str(port)],
                                env=cli_env, stdout=stdout, stderr=subprocess.STDOUT, preexec_fn=interruptible)
    try:
        found = wait_for(lambda: CURL.search(out.read_text().split("serving the lookup API", 1)[-1]), proc, out)
        assert found["port"] == str(port) and (found["key"] is not None) == key_exists, out.read_text()
        headers = {"Authorization": f"Bearer {found['key']}"} if found["key"] else {}
        status, body = wait_for(lambda: get(f"http://127.0.0.1:{port}{found['path']}", headers), proc, out)
        assert status == 200 and found["path"].endswith(f"/{json.loads(body)['entity_id']}"), body
        proc.send_signal(signum)
        assert proc.wait(timeout=45) == 0, out.read_text()  # the first signal stops it (it waited for a second)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if key_exists:  # the demo's own key lived as long as the demo served
        [own] = [k for k in apikeys.list_keys(conn) if k.name == KEY_NAME]
        assert own.models == [MODEL] and own.revoked_at is not None


def test_ctrl_c_stops_the_replay(cli_env: dict[str, str], conn: psycopg.Connection, tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    with out.open("w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "store", "demo", "--weeks", "60"], env=cli_env, stdout=stdout,
                                stderr=subprocess.STDOUT, preexec_fn=interruptible)
    try:
        wait_for(lambda: published(conn) >= 2, proc, out)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, out.read_text()  # the pass in hand ended, then the demo
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert published(conn) < 60 and "stopped after" in out.read_text()


def published(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM runs WHERE status = 'published'").fetchone()
    conn.commit()  # the next look sees what committed since
    return int(row[0]) if row else 0


@contextmanager
def served(settings: Settings) -> Iterator[Any]:
    """A test client of the lookup API as the demo serves it (no key needed until one exists)."""
    app = create_app(settings)
    try:
        yield app.test_client()
    finally:
        close_app(app)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
    """(status, body) of a GET, None while nothing listens."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None


def wait_for(check: Any, proc: subprocess.Popen[bytes], out: Path, *, timeout: float = 120) -> Any:
    """The first true value of ``check()``, while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the demo exited ({proc.returncode}) or took over {timeout}s:\n{out.read_text()}")
        time.sleep(0.1)
    return value
