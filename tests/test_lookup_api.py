"""The lookup API through Flask's test client, on a real PostgreSQL database per test."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from lookup_api import close_app, create_app
from lookup_api.cache import MISSING, PredictionCache
from predstore.cli import main
from store import ledger, predictions
from store.errors import ConfigError
from store.settings import Settings
from tests.helpers import eventually, publish_run

# conftest's Docker probe leaks a unix socket when no Docker engine answers; the garbage collector
# may report it during any later test. (Our own connections are psycopg's, not Python sockets.)


def make_app(settings: Settings, **overrides: object) -> Flask:
    app = create_app(dataclasses.replace(settings, **overrides))  # type: ignore[arg-type]
    assert app.extensions["predstore"].listener.connected.wait(10), "the cache listener did not connect"
    return app


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = make_app(settings)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def seeded(conn: psycopg.Connection) -> dict[str, int]:
    """Model churn: v1 over partitions a (e1, e2) and b (e3); v2 over partition c (e1 again)."""
    return {
        "a": publish_run(conn, "churn", "a", [("e1", 0.1), ("e2", 0.7)]),
        "b": publish_run(conn, "churn", "b", [("e3", 0.4), ("tricky/id with space", 0.6)]),
        "c": publish_run(conn, "churn", "c", [("e1", 0.9)], version=2),
    }


def error_of(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def test_lookup_returns_the_newest_published_prediction(client: FlaskClient, seeded: dict[str, int]) -> None:
    body = client.get("/v1/models/churn/predictions/e1").get_json()
    assert body["run_id"] == seeded["c"] and body["model_version"] == 2 and body["partition"] == "c"
    assert body["prediction"] == 0.9 and body["label"] == "yes" and body["scores"] == [pytest.approx(0.1), 0.9]
    assert set(body) == {"entity_id", "model", "model_version", "run_id", "partition", "scored_at", "age", "stale",
                         "prediction", "label", "scores", "version_current", "source"}
    assert body["version_current"] is True and body["source"] == "precomputed"
    assert body["stale"] is False and 0 <= body["age"] < 3600
    older = client.get("/v1/models/churn/predictions/e1?version=1").get_json()
    assert older["run_id"] == seeded["a"] and older["prediction"] == 0.1


def test_entity_ids_are_matched_exactly(client: FlaskClient, seeded: dict[str, int]) -> None:
    assert client.get("/v1/models/churn/predictions/" + quote("tricky/id with space")).status_code == 200
    assert client.get("/v1/models/churn/predictions/E1").status_code == 404


@pytest.mark.parametrize(("path", "message"), [
    ("/v1/models/churn/predictions/nobody", "model 'churn' has no published prediction for entity 'nobody'"),
    ("/v1/models/churn/predictions/e2?version=2", "model 'churn' version 2 has no published prediction"),
    ("/v1/models/churn/predictions/e1?version=7", "model 'churn' has no version 7 (versions: 1, 2)"),
    ("/v1/models/ghost/predictions/e1", "no model named 'ghost' is registered"),
    ("/v1/models/ghost", "no model named 'ghost' is registered"),
    ("/v2/anything", "The requested URL was not found"),
])
def test_missing_things_are_404_json(client: FlaskClient, seeded: dict[str, int], path: str, message: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found" and error["message"].startswith(message)


@pytest.mark.parametrize(("path", "message"), [
    ("/v1/models/churn/predictions/" + "x" * 513, "the entity id is 513 characters long; the limit is 512"),
    ("/v1/models/churn/predictions/e1?version=two", "version='two' is not a model version"),
    ("/v1/models/churn/predictions/e1?version=0", "version='0' is not a model version"),
    ("/v1/models/churn/predictions/a%00b", "the entity id contains a NUL character"),
    ("/v1/models/" + "m" * 129, "the model name is 129 characters long; the limit is 128"),
])
def test_malformed_lookups_are_400(client: FlaskClient, seeded: dict[str, int], path: str, message: str) -> None:
    response = client.get(path)
    assert response.status_code == 400
    assert error_of(response) == {"code": "bad_request", "message": error_of(response)["message"]}
    assert error_of(response)["message"].startswith(message)


def test_batch_returns_found_and_missing_in_request_order(client: FlaskClient, seeded: dict[str, int]) -> None:
    response = client.post("/v1/models/churn/predictions:batch", json={"entity_ids": ["e3", "zz", "e1", "e3"]})
    assert response.status_code == 200
    body = response.get_json()
    assert [p["entity_id"] for p in body["predictions"]] == ["e3", "e1"]
    assert [p["run_id"] for p in body["predictions"]] == [seeded["b"], seeded["c"]]
    assert body["missing"] == ["zz"]
    again = client.post("/v1/models/churn/predictions:batch?version=1", json={"entity_ids": ["e1", "e2"]})
    assert [p["prediction"] for p in again.get_json()["predictions"]] == [0.1, 0.7]
    unknown = client.post("/v1/models/ghost/predictions:batch", json={"entity_ids": ["e1"]})
    assert unknown.status_code == 404


def test_batch_and_single_lookups_answer_the_same_objects(client: FlaskClient, seeded: dict[str, int]) -> None:
    ids = ["e1", "e2", "e3", "tricky/id with space"]
    for query in ("", "?version=1"):
        batch = client.post(f"/v1/models/churn/predictions:batch{query}", json={"entity_ids": ids}).get_json()
        assert batch["missing"] == []
        for item in batch["predictions"]:
            single = client.get(f"/v1/models/churn/predictions/{quote(item['entity_id'])}{query}").get_json()
            assert item.pop("age") == pytest.approx(single.pop("age"), abs=5)
            assert json.dumps(item) == json.dumps(single)  # same fields, order and values


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "the body must be JSON"),
    (b"", "the body must be JSON"),
    (b'["e1"]', 'the body must be a JSON object with a list "entity_ids"'),
    (b'{"ids": ["e1"]}', 'the body must be a JSON object with a list "entity_ids"'),
    (b'{"entity_ids": "e1"}', '"entity_ids" must be a list, not str'),
    (b'{"entity_ids": [1, 2]}', "entity_ids[0] must be a string, not int"),
    (b'{"entity_ids": ["e1", null]}', "entity_ids[1] must be a string, not NoneType"),
    (b'{"entity_ids": [""]}', "entity_ids[0] is empty"),
    (b'{"entity_ids": ["e1"], "extra": 1}', "unknown field(s) in the body: 'extra'"),
    (b'{"entity_ids": ["a", "b", "c", "d"]}', "4 entity ids in one request; the limit is 3"),
    (('{"entity_ids": ["' + "x" * 600 + '"]}').encode(), "entity_ids[0] is 600 characters long"),
])
def test_malformed_batches_are_400(settings: Settings, seeded: dict[str, int], body: bytes, message: str) -> None:
    app = make_app(settings, api_max_batch=3)
    try:
        response = app.test_client().post("/v1/models/churn/predictions:batch", data=body,
                                          content_type="application/json")
    finally:
        close_app(app)
    assert response.status_code == 400
    assert error_of(response)["message"].startswith(message)


def test_a_body_too_large_is_413_json(client: FlaskClient) -> None:
    response = client.post("/v1/models/churn/predictions:batch", data=b"[" * 4_000_000,
                           content_type="application/json")
    assert response.status_code == 413 and error_of(response)["code"] == "request_entity_too_large"


def test_wrong_method_is_405_json(client: FlaskClient) -> None:
    response = client.get("/v1/models/churn/predictions:batch")
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"
    assert response.headers["Allow"]


def test_publishing_a_newer_run_invalidates_the_cache(app: Flask, client: FlaskClient, conn: psycopg.Connection,
                                                      seeded: dict[str, int]) -> None:
    service = app.extensions["predstore"]

    def answered_from_the_cache() -> bool:  # the seeding's own notifications may still drop an entry
        assert client.get("/v1/models/churn/predictions/e3").get_json()["prediction"] == 0.4
        return bool(service.metrics.cache.labels("hit")._value.get() >= 1)

    assert eventually(answered_from_the_cache)
    assert service.cache.get("churn", (None, "e3")) is not MISSING
    newer = publish_run(conn, "churn", "b", [("e3", 0.8)], version=2)
    assert eventually(lambda: service.cache.get("churn", (None, "e3")) is MISSING)
    body = client.get("/v1/models/churn/predictions/e3").get_json()
    assert body["run_id"] == newer and body["prediction"] == 0.8


def test_api_settings_are_read_and_checked() -> None:
    s = Settings.from_env({"PREDSTORE_API_MAX_AGE": "*=600, churn=60", "PREDSTORE_API_STALE_POLICY": "HIDE",
                           "PREDSTORE_API_REQUIRE_KEY": "yes", "PREDSTORE_API_DATABASE_URL": "postgresql://r@h/d"})
    assert (s.max_age("churn"), s.max_age("other"), s.api_stale_policy, s.api_require_key) == (60, 600, "hide", True)
    assert s.api_reader_url == "postgresql://r@h/d" and Settings.from_env({}).max_age("churn") is None
    assert Settings.from_env({"PREDSTORE_API_MAX_AGE": "3600"}).max_age("any") == 3600
    for name, value, message in [("PREDSTORE_API_MAX_AGE", "churn=soon", "'churn=soon' is not a positive age"),
                                 ("PREDSTORE_API_STALE_POLICY", "drop", "is not one of flag, hide"),
                                 ("PREDSTORE_API_REQUIRE_KEY", "maybe", "is not a boolean"),
                                 ("PREDSTORE_API_POOL_TIMEOUT", "0", "is out of range")]:
        with pytest.raises(ConfigError, match=message):
            Settings.from_env({name: value})


def test_cache_keeps_no_answer_read_before_an_invalidation() -> None:
    cache = PredictionCache(max_entries=2)
    assert cache.generation("m") is None  # off until the listener connects
    cache.clear(enabled=True)
    token = cache.generation("m")
    cache.invalidate("m")  # a publish lands while the answer is being read
    cache.put("m", "k", 1, token)
    assert cache.get("m", "k") is MISSING
    for key in ("a", "b", "c"):
        cache.put("m", key, key, cache.generation("m"))
    assert len(cache) == 2 and cache.get("m", "a") is MISSING and cache.get("m", "c") == "c"
    cache.clear(enabled=False)
    assert cache.get("m", "c") is MISSING


def test_losing_the_listener_connection_turns_the_cache_off_until_it_reconnects(
        app: Flask, client: FlaskClient, conn: psycopg.Connection, seeded: dict[str, int]) -> None:
    service = app.extensions["predstore"]
    client.get("/v1/models/churn/predictions/e3")
    assert service.cache.get("churn", (None, "e3")) is not MISSING
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'predstore-lookup-listener' AND datname = current_database()")
    conn.commit()
    assert eventually(lambda: service.cache.get("churn", (None, "e3")) is MISSING)
    assert eventually(lambda: service.listener.connected.is_set() and service.cache.enabled)
    client.get("/v1/models/churn/predictions/e3")
    assert service.cache.get("churn", (None, "e3")) is not MISSING


@pytest.mark.parametrize("policy", ["flag", "hide"])
def test_predictions_older_than_the_maximum_age_follow_the_policy(settings: Settings, seeded: dict[str, int],
                                                                  policy: str) -> None:
    app = create_app(dataclasses.replace(settings, api_max_age=(("*", 600), ("other", 99999)),
                                         api_stale_policy=policy), clock=lambda: time.time() + 3600)
    try:
        client = app.test_client()
        single = client.get("/v1/models/churn/predictions/e1")
        batch = client.post("/v1/models/churn/predictions:batch", json={"entity_ids": ["e1", "zz"]}).get_json()
        model = client.get("/v1/models/churn").get_json()
    finally:
        close_app(app)
    assert model["freshness"]["stale"] is True and model["freshness"]["max_age"] == 600
    assert all(p["stale"] for p in model["partitions"])
    if policy == "flag":
        assert single.status_code == 200 and single.get_json()["stale"] is True
        assert single.get_json()["age"] >= 3600
        assert [p["stale"] for p in batch["predictions"]] == [True] and batch["missing"] == ["zz"]
    else:
        assert single.status_code == 404 and error_of(single)["code"] == "stale"
        assert "older than the 600 s allowed" in error_of(single)["message"]
        assert batch == {"predictions": [], "missing": ["e1", "zz"]}


def test_models_show_versions_partitions_and_freshness(client: FlaskClient, seeded: dict[str, int]) -> None:
    listed = client.get("/v1/models").get_json()["models"]
    assert [m["name"] for m in listed] == ["churn"]
    model = client.get("/v1/models/churn").get_json()
    assert model["versions"] == listed[0]["versions"]
    assert model["current_version"] == 2
    assert [v["version"] for v in model["versions"]] == [2, 1]
    assert [(p["partition"], p["run_id"], p["rows"]) for p in model["partitions"]] == [
        ("a", seeded["a"], 2), ("b", seeded["b"], 2), ("c", seeded["c"], 1)]
    freshness = model["freshness"]
    assert freshness["stale"] is False and freshness["max_age"] is None and freshness["last_published_at"]


def test_health_readiness_metrics_and_openapi(client: FlaskClient, seeded: dict[str, int], app: Flask) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    client.get("/v1/models/churn/predictions/e1")
    client.get("/v1/models/churn/predictions/e1")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'predstore_api_requests_total{method="GET",route="/v1/models/<name>/predictions/<path:entity_id>",' \
           'status="200"} 2.0' in text
    assert "predstore_api_request_seconds_bucket" in text
    assert 'predstore_api_cache_requests_total{result="hit"} 1.0' in text
    assert eventually(lambda: all(series in client.get("/metrics").get_data(as_text=True) for series in (
        'predstore_api_pool_connections{state="in_use"}', 'predstore_api_pool_connections{state="idle"}',
        "predstore_api_pool_requests_waiting ")))
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {path for path in spec["paths"]}
    served = {rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}") for rule in app.url_map.iter_rules()
              if rule.endpoint != "static"}
    assert served == documented


def test_readiness_reports_an_outdated_schema(client: FlaskClient, conn: psycopg.Connection) -> None:
    conn.execute("UPDATE alembic_version SET version_num = '0001'")
    conn.commit()
    response = client.get("/readyz")
    assert response.status_code == 503 and error_of(response)["code"] == "schema_outdated"
    assert response.headers["Retry-After"] == "1"


def test_api_keys_are_required_once_one_exists(app: Flask, client: FlaskClient, cli_env: dict[str, str],
                                               seeded: dict[str, int]) -> None:
    path = "/v1/models/churn/predictions/e1"
    assert client.get(path).status_code == 200  # no key configured yet
    created = CliRunner().invoke(main, ["apikeys", "create", "checkout service"], env=cli_env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("psk_")
    assert eventually(lambda: client.get(path).status_code == 401)
    missing = client.get(path)
    assert error_of(missing)["code"] == "unauthorized" and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    wrong = client.get(path, headers={"Authorization": f"Bearer {key[:-2]}xx"})
    assert wrong.status_code == 403 and error_of(wrong)["code"] == "forbidden"
    assert client.get(path, headers={"Authorization": "Bearer nonsense"}).status_code == 403
    assert client.get("/healthz").status_code == 200  # operations endpoints need no key

    key_id = key.split("_")[1]
    listed = CliRunner().invoke(main, ["apikeys", "list"], env=cli_env)
    assert key_id in listed.output and "active" in listed.output and key not in listed.output
    revoked = CliRunner().invoke(main, ["apikeys", "revoke", key_id], env=cli_env)
    assert revoked.exit_code == 0 and f"revoked API key {key_id}" in revoked.output
    assert eventually(lambda: client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 403)
    assert client.get(path).status_code == 401  # revoking the last key does not open the API
    unknown = CliRunner().invoke(main, ["apikeys", "revoke", "nope"], env=cli_env)
    assert unknown.exit_code == 2
    assert unknown.output.strip() == "predstore: error: there is no API key 'nope'; see `predstore apikeys list`"


def test_require_key_closes_the_api_before_any_key_exists(settings: Settings, seeded: dict[str, int]) -> None:
    app = make_app(settings, api_require_key=True)
    try:
        assert app.test_client().get("/v1/models").status_code == 401
    finally:
        close_app(app)


def test_reader_role_reads_published_data_only(settings: Settings, cli_env: dict[str, str], database_url: str,
                                               conn: psycopg.Connection, seeded: dict[str, int]) -> None:
    role = f"reader_{os.getpid()}_{seeded['a']}_{time.monotonic_ns() % 100000}"
    granted = CliRunner().invoke(main, ["db", "grant", "--role", role], env=cli_env)
    assert granted.exit_code == 0, granted.output
    assert f"created role {role}" in granted.output
    unpublished = ledger.start_run(conn, model_name="churn", model_version=1, model_sha256="0" * 64,
                                   partition_key="d", input_uri="memory://d", code_version="test", host="test",
                                   pid=os.getpid())
    predictions.create_run_table(conn, unpublished)
    conn.commit()
    reader_url = database_url.replace("://postgres:", f"://{role}:", 1).replace("://postgres@", f"://{role}@", 1)
    assert role in reader_url
    try:
        with psycopg.connect(reader_url, autocommit=True) as reader:
            assert reader.execute("SELECT count(*) FROM published_predictions").fetchone() == (5,)
            for forbidden in ("SELECT * FROM predictions", "SELECT * FROM runs", "SELECT * FROM rejected_rows",
                              f"SELECT * FROM predstore_partitions.run_{unpublished}",
                              "INSERT INTO api_keys VALUES ('x', 'x', 'x')", "DELETE FROM models"):
                with pytest.raises(psycopg.Error):
                    reader.execute(forbidden)
        app = make_app(settings, api_reader_url=reader_url)
        try:
            client = app.test_client()
            assert client.get("/readyz").status_code == 200
            assert client.get("/v1/models/churn/predictions/e1").get_json()["run_id"] == seeded["c"]
            assert client.get("/v1/models/churn").status_code == 200
        finally:
            close_app(app)
    finally:
        ledger.release_run(conn, unpublished)
        conn.rollback()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')
