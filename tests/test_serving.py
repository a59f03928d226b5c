"""The serving directory and retention by age, against the definition they replace.

The current prediction of (model, entity, role) is defined as the row of the most recently
published run that holds the entity; `served_predictions` must always equal that scan, however
runs are published, superseded or expired, and a lookup must cost the same on a store of one run
as on one of hundreds.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from click.testing import CliRunner

from batch.retention import parse_duration, prune_runs, retain
from predstore.cli import main
from store import Settings, ledger, lookups, predictions, registry

MODEL = "m"
COLUMNS = ["entity_id", "row_number", "prediction"]

DEFINITION = """
    SELECT DISTINCT ON (model_name, entity_id, role) model_name, entity_id, role, run_id, prediction
    FROM published_predictions
    ORDER BY model_name, entity_id, role, published_at DESC, run_id DESC"""


def register(conn: psycopg.Connection, *versions: int, model: str = MODEL) -> None:
    for version in versions:
        registry.insert_model(conn, name=model, version=version, artifact_uri="test", sha256="0" * 64,
                              format="skops", task="regression", feature_schema={}, classes=None,
                              training_metrics=None)
    registry.set_alias(conn, model, "current", versions[0])
    conn.commit()


def publish(conn: psycopg.Connection, partition: str, values: dict[str, float], *, model: str = MODEL,
            version: int = 1, role: str = "current") -> int:
    """Publish one run of (model, partition, role) holding ``values`` (entity -> prediction), as the
    scoring job does: its own table, indexed, then attached with the ledger flip in one transaction."""
    run_id = ledger.start_run(conn, model_name=model, model_version=version, model_sha256="0" * 64,
                              partition_key=partition, input_uri="test://", code_version="test",
                              host=socket.gethostname(), pid=os.getpid(), role=role)
    ids = list(values)
    batch = pa.record_batch([pa.array(ids, pa.string()), pa.array(range(len(ids)), pa.int64()),
                             pa.array([values[i] for i in ids], pa.float64())],
                            schema=predictions.arrow_schema(COLUMNS))
    with conn.transaction():
        predictions.create_run_table(conn, run_id)
        with predictions.copy_predictions(conn, run_id, COLUMNS) as write:
            write(batch)
        predictions.index_run_table(conn, run_id)
        predictions.publish(conn, run_id, model_name=model, partition_key=partition, role=role)
        ledger.finish_run(conn, run_id, was="published", rows_in=len(ids), rows_scored=len(ids))
    ledger.release_run(conn, run_id)
    return run_id


def served(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT model_name, entity_id, role, run_id, prediction FROM served_predictions "
                        "ORDER BY 1, 2, 3").fetchall()


def defined(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(DEFINITION).fetchall()


def lookup(conn: psycopg.Connection, entity: str, *, version: int | None = None) -> float | None:
    found = lookups.current_prediction(conn, MODEL, entity, version=version)
    return None if found is None else found.prediction


def test_newest_run_serves_and_entities_fall_back_when_it_is_replaced(conn: psycopg.Connection) -> None:
    conn.autocommit = True
    register(conn, 1)
    publish(conn, "a", {"e1": 1.0, "e2": 1.0})
    publish(conn, "b", {"e2": 2.0, "e3": 2.0})
    assert (lookup(conn, "e1"), lookup(conn, "e2"), lookup(conn, "e3")) == (1.0, 2.0, 2.0)
    publish(conn, "b", {"e3": 3.0})  # b scored again without e2: a holds it still
    assert (lookup(conn, "e2"), lookup(conn, "e3")) == (1.0, 3.0)
    publish(conn, "a", {"e1": 4.0})  # and now nothing does
    assert lookup(conn, "e2") is None
    assert served(conn) == defined(conn)


def test_directory_equals_the_scan_after_any_sequence_of_publishes_and_expiries(settings: Settings) -> None:
    rng = random.Random(7)
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1, 2)
        register(conn, 1, 2, model="other")
        for step in range(40):
            partition, role = f"p{rng.randrange(5)}", rng.choice(["current", "current", "challenger"])
            values = {f"e{i}": float(step) for i in rng.sample(range(30), rng.randrange(1, 12))}
            publish(conn, partition, values, model=rng.choice([MODEL, MODEL, "other"]),
                    version=2 if role == "challenger" else 1, role=role)
            if step % 10 == 9:  # expire the oldest published runs, as a prune does
                cutoff = conn.execute("SELECT percentile_disc(0.3) WITHIN GROUP (ORDER BY published_at) "
                                      "FROM runs WHERE status = 'published'").fetchone()[0]  # type: ignore[index]
                prune_runs(settings, older_than=timedelta(seconds=1), now=cutoff + timedelta(seconds=1))
            assert served(conn) == defined(conn), f"after step {step}"


def test_a_lookup_costs_the_same_on_365_partitions_as_on_one(conn: psycopg.Connection) -> None:
    """The same entities published as one partition (model 'one') and as 365 daily partitions
    (model 'many'), in one store: a hit and a miss read the same pages of one relation."""
    conn.autocommit = True
    register(conn, 1, model="one")
    register(conn, 1, model="many")
    days = {day: {f"d{day}-{i}": float(day) for i in range(3)} for day in range(365)}
    publish(conn, "all", {e: v for values in days.values() for e, v in values.items()}, model="one")
    for day, values in days.items():
        publish(conn, f"day-{day}", values, model="many")

    def cost(model: str, entity: str) -> tuple[int, int]:
        """Buffers read and relations scanned by the API's own single lookup."""
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + lookups._ONE,
                            [model, entity]).fetchone()[0][0]["Plan"]  # type: ignore[index]
        relations = json.dumps(plan).count('"Relation Name"')
        return plan["Shared Hit Blocks"] + plan.get("Shared Read Blocks", 0), relations

    for entity in ("d0-0", "d200-1", "d364-2", "unknown"):
        assert cost("many", entity) == cost("one", entity)
        assert cost("many", entity)[1] == 1  # one relation: the directory
    assert lookups.current_prediction(conn, "many", "d200-1").prediction == 200.0  # type: ignore[union-attr]
    assert lookups.current_prediction(conn, "many", "unknown") is None


def test_lookup_of_a_version_reads_its_published_runs_when_newer_ones_hold_the_entity(
        conn: psycopg.Connection) -> None:
    conn.autocommit = True
    register(conn, 1, 2)
    publish(conn, "a", {"e1": 1.0, "e2": 1.0}, version=1)
    publish(conn, "b", {"e2": 1.5}, version=1)
    publish(conn, "a", {"e1": 2.0, "e2": 2.0}, version=2)  # a rescored by v2 after a promotion
    assert (lookup(conn, "e2"), lookup(conn, "e2", version=2)) == (2.0, 2.0)
    assert lookup(conn, "e2", version=1) == 1.5  # b's v1 run: a's v1 run is superseded
    assert lookup(conn, "e1", version=1) is None
    rows = lookups.current_predictions_json(conn, MODEL, ["e1", "e2", "nope"], version=1, now=0, max_age=None)
    assert {(e, json.loads(text)["prediction"]) for e, _, text in rows} == {("e2", 1.5)}
    rows = lookups.current_predictions_json(conn, MODEL, ["e1", "e2", "nope"], version=2, now=0, max_age=None)
    assert {(e, json.loads(text)["prediction"]) for e, _, text in rows} == {("e1", 2.0), ("e2", 2.0)}


def test_readers_see_a_run_whole_or_not_at_all_while_runs_publish(settings: Settings) -> None:
    url = settings.database_url or ""
    entities = [f"e{i}" for i in range(200)]
    with psycopg.connect(url, autocommit=True) as conn:
        register(conn, 1)
        for day in range(30):
            publish(conn, f"old-{day}", {f"old{day}": 0.0})
        publish(conn, "p", dict.fromkeys(entities, 0.0))
    stop, mixes, reads = threading.Event(), [], [0]

    def read() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                rows = lookups.current_predictions_json(conn, MODEL, entities, now=0, max_age=None)
                values = {json.loads(text)["prediction"] for _, _, text in rows}
                if len(values) != 1 or len(rows) != len(entities):
                    mixes.append(values)
                reads[0] += 1

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for k in range(1, 15):
                publish(conn, "p", dict.fromkeys(entities, float(k)))
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert reads[0] > 10 and not mixes


def test_prune_expires_old_runs_keeps_history_and_dry_run_changes_nothing(settings: Settings) -> None:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1)
        old = publish(conn, "2026-01-01", {"gone": 1.0, "both": 1.0})
        publish(conn, "2026-01-02", {"both": 2.0, "stays": 2.0})
        conn.execute("UPDATE runs SET published_at = published_at - interval '40 days' WHERE run_id = %s", [old])
        conn.execute("UPDATE served_predictions SET published_at = published_at - interval '40 days' "
                     "WHERE run_id = %s", [old])
        conn.execute("INSERT INTO run_profiles (run_id, column_name, counts, null_count, n, sum, sum_sq) "
                     "VALUES (%s, 'f', '{1}', 0, 1, 0, 0)", [old])
        before = served(conn)

        dry = prune_runs(settings, older_than=timedelta(days=30), dry_run=True)
        assert [r.run_id for r in dry.runs] == [old] and served(conn) == before
        assert conn.execute("SELECT status FROM runs WHERE run_id = %s", [old]).fetchone() == ("published",)

        assert prune_runs(settings).runs == ()  # no policy, no PREDSTORE_KEEP_DAYS: kept for ever
        retain(settings, MODEL, 30)
        done = prune_runs(settings)
        assert [r.run_id for r in done.runs] == [old] and done.entities_unserved == 1
        assert lookup(conn, "gone") is None and lookup(conn, "both") == 2.0 and lookup(conn, "stays") == 2.0
        assert conn.execute("SELECT status FROM runs WHERE run_id = %s", [old]).fetchone() == ("expired",)
        assert conn.execute("SELECT to_regclass(%s)", [f"predstore_partitions.run_{old}"]).fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM run_profiles WHERE run_id = %s", [old]).fetchone() == (1,)
        assert served(conn) == defined(conn)
        assert prune_runs(settings).runs == ()


def test_a_stopping_prune_ends_after_the_run_in_hand(settings: Settings) -> None:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1)
        runs = [publish(conn, f"p{i}", {f"e{i}": 1.0}) for i in range(3)]
    stop = threading.Event()
    stop.set()
    assert prune_runs(settings, older_than=timedelta(seconds=1), now=datetime.now(UTC) + timedelta(days=1),
                      stop=stop).runs == ()
    with psycopg.connect(settings.database_url or "") as conn:
        assert set(ledger.statuses(conn, runs).values()) == {"published"}


def test_prune_finishes_what_an_interrupted_prune_left(settings: Settings) -> None:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1)
        run_id = publish(conn, "p", {"e": 1.0})
        conn.execute("UPDATE runs SET status = 'expired' WHERE run_id = %s", [run_id])  # died before the drop
        assert [r.run_id for r in prune_runs(settings).runs] == [run_id]
        assert conn.execute("SELECT to_regclass(%s)", [f"predstore_partitions.run_{run_id}"]).fetchone() == (None,)


def test_prune_while_lookups_run(settings: Settings) -> None:
    url = settings.database_url or ""
    with psycopg.connect(url, autocommit=True) as conn:
        register(conn, 1)
        for day in range(20):
            publish(conn, f"d{day}", {f"e{day}-{i}": float(day) for i in range(50)} | {"kept": float(day)})
    stop, errors, answers = threading.Event(), [], []

    def read() -> None:
        rng = random.Random(1)
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    answers.append(lookup(conn, f"e{rng.randrange(20)}-{rng.randrange(50)}"))
                    assert lookup(conn, "kept") in (19.0, None)  # its newest run, until that expires too
                except Exception as exc:  # any error is the failure this test looks for
                    errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        pruned = prune_runs(settings, older_than=parse_duration("1s"), now=datetime.now(UTC) + timedelta(days=1))
    finally:
        stop.set()
        reader.join()
    assert len(pruned.runs) == 20 and not errors and answers
    with psycopg.connect(url) as conn:
        assert served(conn) == [] and lookup(conn, "kept") is None


def test_prune_and_retain_commands(settings: Settings) -> None:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1)
        publish(conn, "p", {"e": 1.0})
    runner = CliRunner()
    env = {"PREDSTORE_DATABASE_URL": settings.database_url or "", "PREDSTORE_HOME": str(settings.home)}
    bad = runner.invoke(main, ["runs", "prune", "--older-than", "soon"], env=env)
    assert bad.exit_code == 2 and "'soon' is not a duration" in bad.output
    dry = runner.invoke(main, ["runs", "prune", "--older-than", "1d", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output) == {"dry_run": True, "runs": [], "rows": 0, "bytes": 0, "entities_unserved": 0}
    assert runner.invoke(main, ["models", "retain", MODEL], env=env).exit_code == 2
    missing = runner.invoke(main, ["models", "retain", "nope", "--keep-days", "3"], env=env)
    assert missing.exit_code != 0 and "nope" in missing.output
    done = runner.invoke(main, ["models", "retain", MODEL, "--keep-days", "7"], env=env)
    assert done.exit_code == 0 and "kept 7 day(s)" in done.output
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("0d")


def test_the_scheduler_applies_each_models_policy(settings: Settings, cli_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    """`predstore schedule --once` ends with the retention pass: PREDSTORE_KEEP_DAYS for models without
    a policy of their own, the model's policy for the others."""
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1)
        register(conn, 1, model="kept")
        old = publish(conn, "old", {"e": 1.0})
        other = publish(conn, "old", {"e": 1.0}, model="kept")
        conn.execute("UPDATE runs SET published_at = now() - interval '10 days' WHERE run_id IN (%s, %s)",
                     [old, other])
        retain(settings, "kept", 30)
    config = tmp_path / "schedule.toml"
    config.write_text('[jobs.nightly]\nkind = "monitor"\nmodel = "m"\ncron = "0 3 * * *"\ntimezone = "UTC"\n')
    done = subprocess.run([sys.executable, "-m", "store", "schedule", "--config", str(config), "--once"],
                          env={**cli_env, "PREDSTORE_KEEP_DAYS": "7"}, capture_output=True, text=True, timeout=120)
    assert "retention dropped 1 run (1 rows); 1 entity no longer served" in done.stderr, done.stderr
    with psycopg.connect(settings.database_url or "") as conn:
        assert ledger.statuses(conn, [old, other]) == {old: "expired", other: "published"}
