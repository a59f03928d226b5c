"""PostgreSQL stops and starts again while the lookup API is under load: 503 with Retry-After
while it is away, never a 500, and every answer a 200 again within 5 s of its return, without
restarting the API."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from werkzeug.serving import make_server

from lookup_api import close_app, create_app
from store.db import stop_embedded
from store.settings import Settings
from tests.helpers import publish_run

if TYPE_CHECKING:
    from tests.conftest import PrivateServer

ENTITIES = 2000
RECOVERY_S = 5.0

Answer = tuple[float, int, str | None]  # when, status, Retry-After


def load(port: int, answers: list[Answer], stop: threading.Event, offset: int) -> None:
    """Ask for predictions one after another (a new connection each time, as many clients do)."""
    i = offset
    while not stop.is_set():
        i += 7
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", f"/v1/models/churn/predictions/e{i % ENTITIES}")
            response = conn.getresponse()
            response.read()
            answers.append((time.monotonic(), response.status, response.getheader("Retry-After")))
        except OSError as exc:  # the API itself must never stop answering
            answers.append((time.monotonic(), -1, repr(exc)))
        finally:
            conn.close()


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        finally:
            conn.close()
        assert time.monotonic() < deadline, "the API did not become ready"
        time.sleep(0.05)


def test_outage_under_load_gives_503_then_recovers_within_5_s(tmp_path: Path, private_server: PrivateServer,
                                                              private_database: str) -> None:
    url = private_database
    app = server = None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        with psycopg.connect(url) as conn:
            publish_run(conn, "churn", "p", [(f"e{i}", 0.5) for i in range(ENTITIES)])
        # No cache: every request needs the database, as a request for an id not asked before does.
        app = create_app(Settings(home=tmp_path, database_url=url, api_pool_timeout=0.5, api_cache_size=0,
                                  api_require_key=False))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        port = server.server_port
        threading.Thread(target=server.serve_forever, daemon=True).start()
        wait_ready(port)  # the pool opens in the background: load starts once it answers
        answers: list[Answer] = []
        threads = [threading.Thread(target=load, args=(port, answers, stop, n)) for n in range(4)]
        for thread in threads:
            thread.start()

        time.sleep(1.0)
        stopping_at = time.monotonic()  # answers from here on may be 503s: the server is shutting down
        assert stop_embedded(private_server.pgdata)
        down_at = time.monotonic()
        time.sleep(1.5)
        restarting_at = time.monotonic()  # from here on answers may be 200s: the server is starting
        private_server.restart()
        back_at = time.monotonic()
        time.sleep(RECOVERY_S + 1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        if server is not None:
            server.shutdown()
        if app is not None:
            close_app(app)

    statuses = {status for _, status, _ in answers}
    assert statuses <= {200, 503}, sorted(statuses)  # never a 500, never a refused connection
    before = [s for t, s, _ in answers if t < stopping_at]
    during = [(s, retry) for t, s, retry in answers if down_at + 0.5 < t < restarting_at]
    after = [s for t, s, _ in answers if t > back_at + RECOVERY_S]
    assert before and set(before) == {200}
    assert during and {s for s, _ in during} == {503}, during[:5]
    assert {retry for _, retry in during} == {"1"}
    assert after and set(after) == {200}, after[:20]
    first_ok = min(t for t, s, _ in answers if t > back_at and s == 200)
    print(f"{len(answers)} answers; first 200 {first_ok - back_at:.2f} s after the database returned")
