"""What the lookup API found, per model: hits, misses and stale answers, exported to Prometheus,
added to the store per hour (from the API's read-only role), and the monitor's miss rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from lookup_api import create_app
from lookup_api.service import store_counts
from monitor.config import MonitorConfig
from monitor.runner import run_monitor
from store import Settings
from tests.test_security import as_role, roles  # noqa: F401  (a fixture)
from tests.test_serving import publish, register


@pytest.fixture
def served(settings: Settings, conn: psycopg.Connection) -> Settings:
    """Model m serving e0..e9."""
    conn.autocommit = True
    register(conn, 1)
    publish(conn, "p", {f"e{i}": float(i) for i in range(10)})
    return settings


def ask(app: Any, *, known: int, unknown: int) -> None:
    client = app.test_client()
    for i in range(known):
        assert client.get(f"/v1/models/m/predictions/e{i % 10}").status_code == 200
    for i in range(unknown):
        assert client.get(f"/v1/models/m/predictions/new-{i}").status_code == 404
    assert client.get("/v1/models/nope/predictions/e1").status_code == 404  # no such model: not counted
    batch = client.post("/v1/models/m/predictions:batch", json={"entity_ids": ["e1", "e2", "gone"]}).get_json()
    assert batch["missing"] == ["gone"]


def test_hits_and_misses_are_counted_per_model_exported_and_stored(
        served: Settings, roles: dict[str, str], database_url: str, tmp_path: Path) -> None:  # noqa: F811
    reader = Settings(home=tmp_path / "reader", database_url=served.database_url,
                      api_reader_url=as_role(database_url, roles["reader"]), api_require_key=False)
    app = create_app(reader)
    try:
        ask(app, known=5, unknown=3)
        exported = app.test_client().get("/metrics").get_data(as_text=True)
        assert 'predstore_api_answers_total{model="m",outcome="hit"} 7.0' in exported
        assert 'predstore_api_answers_total{model="m",outcome="miss"} 4.0' in exported
        assert 'model="nope"' not in exported
        store_counts(app.extensions["predstore"])  # as the service does every minute, through the reader role
        store_counts(app.extensions["predstore"])  # nothing new: nothing added twice
    finally:
        app.extensions["predstore"].close()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT model_name, hits, misses, stale FROM lookup_counts").fetchall() == [
            ("m", 7, 4, 0)]


def test_the_monitor_alerts_on_a_miss_rate_above_the_limit_and_stays_quiet_below(
        served: Settings, database_url: str) -> None:
    config = MonitorConfig(miss_rate=0.05, miss_min_lookups=10)
    app = create_app(served)
    try:
        ask(app, known=40, unknown=0)
        store_counts(app.extensions["predstore"])
        quiet = run_monitor(served, "m", config=config)
        assert quiet.lookups["miss_rate"] == pytest.approx(1 / 43) and not quiet.alerts
        ask(app, known=0, unknown=20)  # a client asking for entities that were never scored
        store_counts(app.extensions["predstore"])
    finally:
        app.extensions["predstore"].close()
    loud = run_monitor(served, "m", config=config)
    [alert] = loud.alerts
    assert alert.kind == "miss_rate" and "had no prediction served" in alert.message
    assert loud.lookups["lookups"] == 66 and loud.lookups["misses"] == 22
    assert not run_monitor(served, "m", config=config).alerts  # once a day


def test_the_guides_miss_rate_query_runs_as_written(conn: psycopg.Connection) -> None:
    import re

    guide = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    section = guide.split("## Hits, misses and what they tell", 1)[1]
    [query] = re.findall(r"```sql\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    conn.execute("INSERT INTO lookup_counts (model_name, hour, hits, misses, stale) "
                 "VALUES ('bikes', date_trunc('hour', now()), 90, 10, 0)")
    [(_, hits, misses, _, rate)] = conn.execute(query).fetchall()
    assert (hits, misses, float(rate)) == (90, 10, 0.1)
