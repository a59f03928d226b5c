"""Live scoring beside the precomputed store: rows scored by the lookup API the way a batch run scores
them, a batch lookup's misses scored from their rows, and every live prediction recorded. A real
PostgreSQL database per test, the app through Flask's test client (a real server in
test_live_scoring_server.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from batch.runner import ScoreRequest, score_partition
from lookup_api import close_app, create_app
from lookup_api.live import Recorder
from models.promotion import promote_model
from models.register import register_model
from store import apikeys, live, policies
from store.settings import Settings
from tests import factories
from tests.helpers import eventually

MODEL = "churn"
COLUMNS = [*factories.FEATURES, "color"]


@pytest.fixture
def published(settings: Settings, tmp_path: Path) -> pd.DataFrame:
    """A boosted pipeline registered as current, and e0..e99 scored and published by a batch run;
    returns the partition's rows."""
    artifact, train = factories.boosted_pipeline(tmp_path / "m")
    register_model(settings, artifact, name=MODEL, train_data=train, target="y")
    data = factories.frame(100)
    path = factories.write_parquet(tmp_path / "p.parquet", data)
    assert score_partition(settings, ScoreRequest(path=path, model_name=MODEL, partition_key="p")).status \
        == "published"
    return data


@pytest.fixture
def app(settings: Settings, published: pd.DataFrame) -> Iterator[Flask]:
    app = create_app(dataclasses.replace(settings, api_live_scoring=True))
    yield app
    close_app(app)


def rows(data: pd.DataFrame) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = data[["entity_id", *COLUMNS]].to_dict("records")
    return found


def stored(database_url: str) -> dict[str, float]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT entity_id, prediction FROM current_predictions").fetchall())


def test_a_live_prediction_equals_the_batch_runs_for_the_same_row(
        app: Flask, published: pd.DataFrame, database_url: str) -> None:
    answer = app.test_client().post(f"/v1/models/{MODEL}/score", json={"rows": rows(published)})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["rejected"] == []
    batch = stored(database_url)
    assert len(body["predictions"]) == 100
    assert {p["entity_id"]: p["prediction"] for p in body["predictions"]} == batch  # to the last bit
    first = body["predictions"][0]
    assert first["source"] == "live" and first["model_version"] == 1 and first["label"] in ("0", "1")
    one_by_one = [app.test_client().post(f"/v1/models/{MODEL}/score", json={"rows": [row]}).get_json()
                  for row in rows(published.iloc[:5])]
    assert [answer["predictions"][0]["prediction"] for answer in one_by_one] == [batch[f"e{i}"] for i in range(5)]


def test_a_batch_lookup_scores_its_misses_from_their_rows_and_records_them(
        app: Flask, published: pd.DataFrame, database_url: str) -> None:
    more = factories.frame(50, start=100, seed=3)
    sent = [*rows(published.iloc[50:]), *rows(more)]
    client = app.test_client()
    answer = client.post(f"/v1/models/{MODEL}/predictions:batch", json={"rows": sent, "on_miss": "score"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    sources = {p["entity_id"]: p["source"] for p in body["predictions"]}
    assert sources == {**{f"e{i}": "precomputed" for i in range(50, 100)},
                       **{f"e{i}": "live" for i in range(100, 150)}}
    assert body["missing"] == [] and body["rejected"] == []
    # Without on_miss (the model's policy: 404), the misses stay missing.
    plain = client.post(f"/v1/models/{MODEL}/predictions:batch", json={"rows": sent}).get_json()
    assert len(plain["predictions"]) == 50 and plain["missing"] == [f"e{i}" for i in range(100, 150)]

    def recorded() -> list[tuple[Any, ...]]:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT entity_id, model_version, prediction FROM live_predictions "
                                "ORDER BY entity_id").fetchall()

    assert eventually(lambda: len(recorded()) == 50)
    live_values = {p["entity_id"]: p["prediction"] for p in body["predictions"] if p["source"] == "live"}
    assert {e: (v, p) for e, v, p in recorded()} == {e: (1, p) for e, p in live_values.items()}


def test_the_models_policy_scores_misses_without_asking(
        app: Flask, published: pd.DataFrame, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        policies.set_policy(conn, MODEL, on_miss="score")
    sent = rows(factories.frame(3, start=500, seed=4))
    body = app.test_client().post(f"/v1/models/{MODEL}/predictions:batch", json={"rows": sent}).get_json()
    assert [p["source"] for p in body["predictions"]] == ["live"] * 3
    refused = app.test_client().post(f"/v1/models/{MODEL}/predictions:batch", json={"rows": sent, "on_miss": "404"})
    assert refused.get_json()["missing"] == ["e500", "e501", "e502"]


def test_bad_rows_are_rejected_one_by_one_and_bad_bodies_refused(app: Flask, published: pd.DataFrame) -> None:
    client = app.test_client()
    good = rows(published.iloc[:1])[0]
    sent = [good, {k: v for k, v in good.items() if k != "f1"} | {"entity_id": "no-f1"},
            good | {"entity_id": "text", "f2": "lots"}, good | {"entity_id": "nested", "f0": [1, 2]},
            good | {"entity_id": "nan", "f0": None}, {k: v for k, v in good.items() if k != "entity_id"}]
    answer = client.post(f"/v1/models/{MODEL}/score", json={"rows": sent})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    # A null where the model takes missing values (a boosted model does), scored as a batch run would.
    assert [p["entity_id"] for p in body["predictions"]] == ["e0", "nan"]
    reasons = {r["entity_id"]: r["reason"] for r in body["rejected"]}
    assert reasons == {
        "no-f1": "the row lacks column 'f1'",
        "text": "column 'f2' is not a number",
        "nested": "column 'f0' holds a JSON list; send a number or a string",
        None: "entity id is missing",
    }
    assert client.post(f"/v1/models/{MODEL}/score", data=b"{not json").status_code == 400
    assert client.post(f"/v1/models/{MODEL}/score", json={"rows": [1]}).status_code == 400
    assert client.post(f"/v1/models/{MODEL}/score", json={"rows": [good], "extra": 1}).status_code == 400
    too_many = client.post(f"/v1/models/{MODEL}/score", json={"rows": [good] * 1001})
    assert too_many.status_code == 413 and "the limit is 1000" in too_many.get_json()["error"]["message"]
    assert client.post("/v1/models/nope/score", json={"rows": [good]}).status_code == 404
    assert client.post(f"/v1/models/{MODEL}/score?version=7", json={"rows": [good]}).status_code == 404
    on_miss = client.post(f"/v1/models/{MODEL}/predictions:batch", json={"rows": [good], "on_miss": "maybe"})
    assert on_miss.status_code == 400


def test_a_promotion_switches_the_live_model(
        app: Flask, published: pd.DataFrame, settings: Settings, tmp_path: Path) -> None:
    client = app.test_client()
    sent = rows(published.iloc[:5])
    before = client.post(f"/v1/models/{MODEL}/score", json={"rows": sent}).get_json()["predictions"]
    artifact, train = factories.boosted_pipeline(tmp_path / "m2", seed=9, name="v2.joblib")
    register_model(settings, artifact, name=MODEL, train_data=train, target="y")
    promote_model(settings, MODEL, 2)

    def versions() -> set[int]:
        return {p["model_version"] for p in client.post(f"/v1/models/{MODEL}/score",
                                                        json={"rows": sent}).get_json()["predictions"]}

    assert eventually(lambda: versions() == {2})
    after = client.post(f"/v1/models/{MODEL}/score", json={"rows": sent}).get_json()["predictions"]
    assert [p["prediction"] for p in after] != [p["prediction"] for p in before]
    pinned = client.post(f"/v1/models/{MODEL}/score?version=1", json={"rows": sent}).get_json()["predictions"]
    assert pinned == before


def test_scoring_needs_a_key_with_the_score_scope(settings: Settings, published: pd.DataFrame,
                                                  database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        _, lookup_only = apikeys.create_key(conn, "dashboard")
        _, scorer = apikeys.create_key(conn, "signup", scopes=["score"])
    app = create_app(dataclasses.replace(settings, api_live_scoring=True, api_require_key=True))
    try:
        client = app.test_client()
        sent = {"rows": rows(published.iloc[:1])}
        assert client.post(f"/v1/models/{MODEL}/score", json=sent).status_code == 401

        def post(key: str, path: str, body: dict[str, Any]) -> Any:
            return client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})

        refused = post(lookup_only, f"/v1/models/{MODEL}/score", sent)
        assert refused.status_code == 403 and "--scope score" in refused.get_json()["error"]["message"]
        assert post(scorer, f"/v1/models/{MODEL}/score", sent).status_code == 200
        miss = {"rows": rows(factories.frame(1, start=900)), "on_miss": "score"}
        assert post(lookup_only, f"/v1/models/{MODEL}/predictions:batch", miss).status_code == 403
        assert post(scorer, f"/v1/models/{MODEL}/predictions:batch", miss).status_code == 200
        hit = {"rows": sent["rows"], "on_miss": "score"}  # nothing to score: a lookup key is enough
        assert post(lookup_only, f"/v1/models/{MODEL}/predictions:batch", hit).status_code == 200
    finally:
        close_app(app)


def test_without_live_scoring_the_endpoints_are_404_and_no_model_code_loads(
        settings: Settings, published: pd.DataFrame) -> None:
    app = create_app(settings)
    try:
        client: FlaskClient = app.test_client()
        sent = rows(published.iloc[:1])
        off = client.post(f"/v1/models/{MODEL}/score", json={"rows": sent})
        assert off.status_code == 404 and "--live-scoring" in off.get_json()["error"]["message"]
        miss = client.post(f"/v1/models/{MODEL}/predictions:batch",
                           json={"rows": rows(factories.frame(1, start=900)), "on_miss": "score"})
        assert miss.status_code == 404
    finally:
        close_app(app)
    probe = ("import sys; from lookup_api import create_app, close_app; from store.settings import Settings; "
             f"app = create_app(Settings(database_url={settings.database_url!r}, api_require_key=False)); "
             "app.test_client().get('/v1/models'); close_app(app); "
             "print(sorted(m for m in ('sklearn', 'models', 'lookup_api.live') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_recorder_keeps_what_the_database_refused_and_drops_only_past_its_capacity(
        database_url: str) -> None:
    up = [False]
    dropped: list[int] = []

    def write(batch: list[live.LivePrediction]) -> None:
        if not up[0]:
            raise psycopg.OperationalError("the database is away")
        with psycopg.connect(database_url) as conn:
            live.add(conn, batch)

    recorder = Recorder(write, capacity=5, on_dropped=dropped.append)
    try:
        prediction = {"model": MODEL, "model_version": 1, "prediction": 0.5, "label": "1", "scores": None}
        recorder.add([prediction | {"entity_id": f"e{i}"} for i in range(3)])
        recorder.add([prediction | {"entity_id": f"e{i}"} for i in range(3, 7)])
        assert not recorder.flush() and recorder.waiting() == 5 and dropped == [2]
        up[0] = True
        assert recorder.flush() and recorder.waiting() == 0
    finally:
        recorder.stop()
    with psycopg.connect(database_url) as conn:
        assert [r[0] for r in conn.execute("SELECT entity_id FROM live_predictions ORDER BY entity_id")] == \
            [f"e{i}" for i in range(5)]


def test_no_request_to_a_live_scoring_service_gets_a_5xx(app: Flask, published: pd.DataFrame) -> None:
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st

    from tests.test_lookup_live import json_values

    scalars = st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=12) \
        | st.sampled_from(["red", "blue", "e1", "e500", "\x00", "NaN", ""])
    row = st.dictionaries(st.sampled_from(["entity_id", *COLUMNS, "other"]) | st.text(max_size=5),
                          scalars | json_values, max_size=7)
    bodies = st.one_of(
        st.fixed_dictionaries({"rows": st.lists(row, max_size=5)},
                              optional={"on_miss": st.sampled_from(["score", "404"]) | json_values}),
        json_values,
    )
    client = app.test_client()

    @hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=st.sampled_from([f"/v1/models/{MODEL}/score", f"/v1/models/{MODEL}/predictions:batch"]),
           body=bodies)
    def check(path: str, body: Any) -> None:
        response = client.post(path, data=json.dumps(body), content_type="application/json")
        assert response.status_code < 500, (path, body, response.get_data(as_text=True))

    check()


def test_a_worker_keeps_scoring_with_what_it_knows_while_the_database_is_away() -> None:
    from lookup_api.live import TRUST_SECONDS, LiveModels
    from models.validate import Erasures
    from store.errors import StoreUnavailable

    now, answers = [0.0], [(1, Erasures(b"k"))]

    def read(query: Any) -> Any:
        if not answers:
            raise StoreUnavailable("the database is away")
        return answers.pop(0)

    models = LiveModels(read, clock=lambda: now[0])
    models._loaded[(MODEL, 1)] = "loaded"  # type: ignore[assignment]  # as if version 1 were loaded
    assert models.get(MODEL, None)[0] == "loaded"
    now[0] += TRUST_SECONDS + 1  # time to read again, and the database is away
    assert models.get(MODEL, None)[0] == "loaded"
    models.invalidate(MODEL)  # nothing known any more: nothing to score with
    with pytest.raises(StoreUnavailable):
        models.get(MODEL, None)


def test_live_traffic_is_checked_for_drift_apart_from_the_batch_runs(
        app: Flask, published: pd.DataFrame, settings: Settings, database_url: str, cli_env: dict[str, str]) -> None:
    from click.testing import CliRunner

    from monitor import report
    from monitor.runner import report_data, run_monitor
    from predstore.cli import main

    client = app.test_client()
    quiet = factories.frame(400, start=1000, seed=5)
    assert client.post(f"/v1/models/{MODEL}/score", json={"rows": rows(quiet)}).status_code == 200

    def recorded() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM live_predictions WHERE features IS NOT NULL").fetchone()
            return int(row[0]) if row else 0

    assert eventually(lambda: recorded() == 400)
    first = run_monitor(settings, MODEL)
    (day,) = [c for c in first.checks if c.run_role == "live"]
    assert day.scope == "window" and day.rows == 400 and day.drifted == ()
    assert [c for c in first.checks if c.run_role == "current"]  # the batch run, checked apart
    # The same day's traffic shifts: the day is checked again with its new rows, and alerts.
    shifted = factories.frame(400, start=2000, seed=6, shift=2.0)
    assert client.post(f"/v1/models/{MODEL}/score", json={"rows": rows(shifted)}).status_code == 200
    assert eventually(lambda: recorded() == 800)
    second = run_monitor(settings, MODEL)
    (again,) = [c for c in second.checks if c.run_role == "live"]
    assert again.rows == 800 and set(again.drifted) >= {"f0", "f1", "f2"}
    (alert,) = [a for a in second.alerts if a.kind == "data_drift"]
    assert alert.scope.startswith("live:") and "live traffic" in alert.message
    with psycopg.connect(database_url) as conn:  # one check per day and version, replaced, not added
        assert conn.execute("SELECT count(*) FROM drift_checks WHERE run_role = 'live'").fetchone() == (1,)
        features = conn.execute("SELECT features FROM live_predictions WHERE entity_id = 'e1000'").fetchone()
    assert features is not None and set(features[0]) == set(COLUMNS)
    assert features[0]["f0"] == pytest.approx(float(quiet.loc[0, "f0"]))
    page = report.render(report_data(settings, MODEL))
    assert "<h2>Live traffic</h2>" in page and ">800<" in page and "f0, f1, f2" in page
    printed = CliRunner().invoke(main, ["monitor", "--model", MODEL], env=cli_env)
    assert "live traffic of " in printed.output, printed.output


def test_labels_are_matched_to_live_predictions_and_judged_apart(
        app: Flask, published: pd.DataFrame, settings: Settings, database_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from monitor.labels import ingest_labels
    from monitor.runner import run_monitor

    fresh = factories.frame(300, start=5000, seed=9)
    answer = app.test_client().post(f"/v1/models/{MODEL}/score", json={"rows": rows(fresh)}).get_json()
    assert eventually(lambda: _count(database_url, "live_predictions") == 300)
    later = datetime.now(UTC) + timedelta(minutes=5)
    labels = fresh[["entity_id", "y"]].assign(event_time=later)
    ingest_labels(settings, factories.write_parquet(tmp_path / "labels.parquet", labels), model_name=MODEL,
                  entity_col="entity_id", label_col="y", time_col="event_time")
    # A label from before an entity was scored live judges nothing of it.
    early = fresh.iloc[:10][["entity_id", "y"]].assign(event_time=later - timedelta(days=2))
    ingest_labels(settings, factories.write_parquet(tmp_path / "early.parquet", early), model_name=MODEL,
                  entity_col="entity_id", label_col="y", time_col="event_time")
    result = run_monitor(settings, MODEL)
    judged = {r.metric: r for r in result.performance if r.run_role == "live" and r.scope == "window"}
    assert judged and {r.labels for r in judged.values()} == {300}
    predicted = {p["entity_id"]: p["label"] for p in answer["predictions"]}
    expected = sum(predicted[e] == str(y) for e, y in zip(fresh["entity_id"], fresh["y"], strict=True)) / 300
    assert judged["accuracy"].value == pytest.approx(expected)
    assert not [a for a in result.alerts if a.kind == "concept_drift"]  # live windows are reported, not alerted


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0
