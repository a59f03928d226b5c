"""The lookup API on a real hot standby: a streaming replica made with pg_basebackup from its own
primary (both the embedded PostgreSQL's binaries). Lookups answer from the standby, and a publish,
a promotion and a key's revocation reach them within a second of the standby replaying them."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from store import Settings, apikeys, registry
from store.features import FeatureSchema
from tests.replica import replayed, replicated
from tests.test_serving import publish


@pytest.fixture(scope="module", name="replicated")
def replicated_fixture() -> Iterator[tuple[str, str]]:
    """(primary URL, standby URL) of the store's database, the standby streaming from the primary.

    In a folder of its own, not under pytest's: a pytest starting meanwhile takes the others'
    permissions off /tmp/pytest-of-<user>, which the servers' user must cross."""
    with tempfile.TemporaryDirectory(prefix="predstore-standby-") as home, replicated(Path(home)) as urls:
        yield urls


def within(seconds: float, since: float, check: Callable[[], bool]) -> float:
    """How long after ``since`` ``check`` came true; fails past ``seconds``."""
    while not check():
        assert time.monotonic() - since < seconds, "not seen in time"
        time.sleep(0.02)
    return time.monotonic() - since


def test_lookups_from_a_hot_standby_follow_publishes_promotions_and_revocations(
        replicated: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lookup_api import create_app

    primary_url, standby_url = replicated
    with psycopg.connect(primary_url, autocommit=True) as conn:
        for version in (1, 2):
            registry.insert_model(conn, name="m", version=version, artifact_uri="test", sha256="0" * 64,
                                  format="skops", task="regression", feature_schema=FeatureSchema(()), classes=None,
                                  training_metrics=None)
        registry.set_alias(conn, "m", "current", 1)
        first = publish(conn, "p", {"e1": 1.0})
        _, key = apikeys.create_key(conn, "reader")
    replayed(standby_url, "SELECT status FROM runs WHERE run_id = %s", [first], ("published",))

    caplog.set_level(logging.INFO)
    settings = Settings(home=tmp_path / "home", database_url=primary_url, api_reader_url=standby_url)
    app = create_app(settings)
    service = app.extensions["predstore"]
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}

    def prediction() -> tuple[int, Any]:
        answer = client.get("/v1/models/m/predictions/e1", headers=auth)
        return answer.status_code, (answer.get_json() or {}).get("prediction")

    try:
        assert service.listener.connected.wait(10)
        assert prediction() == (200, 1.0) and prediction() == (200, 1.0)  # the second from the cache
        with psycopg.connect(primary_url, autocommit=True) as conn:
            second = publish(conn, "p", {"e1": 2.0})
        at = replayed(standby_url, "SELECT status FROM runs WHERE run_id = %s", [second], ("published",))
        assert within(1.0, at, lambda: prediction() == (200, 2.0)) < 1.0

        with psycopg.connect(primary_url, autocommit=True) as conn:
            publish(conn, "p", {"e1": 3.0}, version=2, role="challenger")
            with conn.transaction():
                registry.set_alias(conn, "m", "current", 2)
        at = replayed(standby_url, "SELECT version FROM model_aliases WHERE model_name = 'm' AND alias = 'current'",
                      [], (2,))
        assert within(1.0, at, lambda: prediction() == (200, 3.0)) < 1.0

        with psycopg.connect(primary_url, autocommit=True) as conn:
            key_id = apikeys.key_id_of(key)
            assert key_id is not None
            apikeys.revoke_key(conn, key_id)
        at = replayed(standby_url, "SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = %s", [key_id],
                      (True,))
        assert within(1.0, at, lambda: prediction()[0] in (401, 403)) < 1.0
        assert service.listener.thread is not None and service.listener.thread.is_alive()
    finally:
        service.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING], caplog.text
