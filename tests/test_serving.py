"""The serving directory and retention by age, against the definitions they keep.

A version's set is, per partition, the newest run of the version that was published, none before
the version's latest snapshot; its segment holds, per entity, the row of the newest run of the set
that holds it. The model serves, per entity, the row of the first segment of its serving order
(the current version, then the versions current before it, unless a snapshot of the current
version cut them off). The directory must always equal these definitions, however runs are
published, superseded, snapshot, expired, and versions promoted and rolled back; and a lookup must
cost the same on a store of one run as on one of hundreds.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from click.testing import CliRunner

from batch.retention import parse_duration, prune_runs
from predstore.cli import main
from store import Settings, ledger, lookups, predictions, registry, retention, serving
from store.features import FeatureSchema
from store.names import SEGMENT_SCHEMA

MODEL = "m"
COLUMNS = ["entity_id", "row_number", "prediction"]

#: Per (model, version, entity): the row of the newest run of the version's set that holds it.
SEGMENTS = """
    SELECT DISTINCT ON (r.model_name, r.model_version, p.entity_id)
           r.model_name, r.model_version, p.entity_id, p.run_id, p.prediction
    FROM runs r JOIN predictions p ON p.run_id = r.run_id
    WHERE r.status IN ('published', 'superseded')
      AND r.published_at >= coalesce((SELECT max(s.published_at) FROM runs s WHERE s.model_name = r.model_name
                                      AND s.model_version = r.model_version AND s.snapshot
                                      AND s.published_at IS NOT NULL), '-infinity')
      AND NOT EXISTS (SELECT FROM runs n WHERE n.model_name = r.model_name AND n.model_version = r.model_version
                      AND n.partition_key = r.partition_key AND n.published_at > r.published_at)
    ORDER BY r.model_name, r.model_version, p.entity_id, r.published_at DESC, r.run_id DESC"""


def register(conn: psycopg.Connection, *versions: int, model: str = MODEL) -> None:
    for version in versions:
        registry.insert_model(conn, name=model, version=version, artifact_uri="test", sha256="0" * 64,
                              format="skops", task="regression", feature_schema=FeatureSchema(()), classes=None,
                              training_metrics=None)
    registry.set_alias(conn, model, "current", versions[0])
    conn.commit()


def publish(conn: psycopg.Connection, partition: str, values: dict[str, float], *, model: str = MODEL,
            version: int = 1, role: str = "current", snapshot: bool = False) -> int:
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
        predictions.publish(conn, run_id, model_name=model, partition_key=partition, role=role, snapshot=snapshot)
        ledger.finish_run(conn, run_id, was="published", rows_in=len(ids), rows_scored=len(ids))
    ledger.release_run(conn, run_id)
    if not conn.info.transaction_status:  # idle: drop the segment tables the publish replaced
        was, conn.autocommit = conn.autocommit, True
        serving.drop_retired(conn, settle=serving.SETTLE)
        conn.autocommit = was
    return run_id


def retain(settings: Settings, model: str, keep_days: int) -> None:
    """Set ``model``'s retention policy, as `predstore models retain` does."""
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        retention.set_keep_days(conn, model, keep_days)


def segment_tables(conn: psycopg.Connection) -> int:
    """How many segment tables exist, attached or not."""
    return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename ~ '^segment_'",
                        [SEGMENT_SCHEMA]).fetchone()[0]  # type: ignore[index]


def promote(conn: psycopg.Connection, version: int, *, model: str = MODEL) -> None:
    with conn.transaction():
        registry.set_alias(conn, model, "current", version)


def segments(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        """SELECT s.model_name, s.model_version, d.entity_id, d.run_id, d.prediction
           FROM serving_segments s JOIN served_predictions d ON d.segment_id = s.segment_id
           ORDER BY 1, 2, 3""").fetchall()


def answers(conn: psycopg.Connection, model: str) -> dict[str, tuple[int, float, bool]]:
    """What ``current_predictions`` serves for ``model``: entity -> (version, prediction, version_current)."""
    return {e: (v, p, c) for e, v, p, c in conn.execute(
        "SELECT entity_id, model_version, prediction, version_current FROM current_predictions "
        "WHERE model_name = %s", [model]).fetchall()}


def expected_answers(conn: psycopg.Connection, model: str, order: list[int]) -> dict[str, tuple[int, float, bool]]:
    """The answers by definition: each entity's row in the first segment of ``order`` (by definition) holding it."""
    rows: dict[tuple[int, str], float] = {
        (v, e): p for m, v, e, _, p in conn.execute(SEGMENTS).fetchall() if m == model}
    found: dict[str, tuple[int, float, bool]] = {}
    for rank, version in enumerate(order):
        for (v, e), p in rows.items():
            if v == version and e not in found:
                found[e] = (v, p, rank == 0)
    return found


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
    assert segments(conn) == conn.execute(SEGMENTS + " ").fetchall()


@pytest.mark.parametrize("seed", [7, 11])
def test_directory_equals_its_definition_after_any_sequence_of_decisions(settings: Settings, seed: int) -> None:
    """Publishes (small and large, both roles, snapshots), promotions, rollbacks and expiries in
    random order, over two models: the segments and the answers equal their definitions throughout."""
    rng = random.Random(seed)
    orders = {MODEL: [1], "other": [1]}
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1, 2, 3)
        register(conn, 1, 2, 3, model="other")
        for step in range(60):
            model = rng.choice([MODEL, MODEL, "other"])
            action = rng.choices(["publish", "snapshot", "promote", "expire"], [10, 2, 2, 1])[0]
            current = orders[model][0]
            if action == "promote":
                version = rng.choice([v for v in (1, 2, 3) if v != current])
                promote(conn, version, model=model)
                orders[model] = [version, *(v for v in orders[model] if v != version)]
            elif action == "expire":
                cutoff = conn.execute("SELECT percentile_disc(0.3) WITHIN GROUP (ORDER BY published_at) "
                                      "FROM runs WHERE status IN ('published', 'superseded')").fetchone()[0]
                if cutoff is not None:
                    prune_runs(settings, older_than=timedelta(seconds=1), now=cutoff + timedelta(seconds=1))
            else:
                challenger = rng.random() < 0.3
                version = rng.choice([v for v in (1, 2, 3) if v != current]) if challenger else current
                size = rng.choice([2, 5, 30])  # against segments of up to 40: both the upsert and the rebuild
                values = {f"e{i}": float(step) for i in rng.sample(range(40), size)}
                partition = "all" if action == "snapshot" else f"p{rng.randrange(5)}"
                publish(conn, partition, values, model=model, version=version,
                        role="challenger" if challenger else "current", snapshot=action == "snapshot")
                if action == "snapshot" and not challenger:
                    orders[model] = orders[model][:1]
            assert segments(conn) == conn.execute(SEGMENTS).fetchall(), f"segments after step {step} ({action})"
            for name, order in orders.items():
                assert answers(conn, name) == expected_answers(conn, name, order), f"{name} after step {step}"
        assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'served_predictions'::regclass"
                            ).fetchone() == (6,)  # replaced segment tables are dropped


def test_promotion_and_rollback_switch_what_is_served_at_once(conn: psycopg.Connection) -> None:
    conn.autocommit = True
    register(conn, 1, 2)
    publish(conn, "a", {"e1": 1.0, "e2": 1.0, "e3": 1.0})
    publish(conn, "a", {"e1": 2.0, "e2": 2.0}, version=2, role="challenger")
    assert [lookups.current_prediction(conn, MODEL, e).model_version for e in ("e1", "e3")] == [1, 1]  # type: ignore[union-attr]
    promote(conn, 2)
    e1, e3 = (lookups.current_prediction(conn, MODEL, e) for e in ("e1", "e3"))
    assert (e1.prediction, e1.model_version, e1.version_current) == (2.0, 2, True)  # type: ignore[union-attr]
    # v2 never scored e3: its previous answer stays, and says so
    assert (e3.prediction, e3.model_version, e3.version_current) == (1.0, 1, False)  # type: ignore[union-attr]
    publish(conn, "a", {"e1": 3.0}, version=2)  # v2 re-scores a as the current version, without e2
    e2 = lookups.current_prediction(conn, MODEL, "e2")  # v2's newest run of a lacks it: v1's answer again
    assert (e2.prediction, e2.version_current) == (1.0, False)  # type: ignore[union-attr]
    promote(conn, 1)  # rollback: v1's run of a serves again, superseded though it is
    assert (lookup(conn, "e1"), lookup(conn, "e2"), lookup(conn, "e3")) == (1.0, 1.0, 1.0)
    rows = lookups.current_predictions_json(conn, MODEL, ["e1", "e3", "x"], now=0, max_age=None)
    assert [(e, json.loads(t)["model_version"], json.loads(t)["version_current"]) for e, _, t in sorted(rows)] == [
        ("e1", 1, True), ("e3", 1, True)]


def test_a_snapshot_retires_the_entities_it_lacks(conn: psycopg.Connection) -> None:
    conn.autocommit = True
    register(conn, 1, 2)
    publish(conn, "jan", {"e1": 1.0, "e2": 1.0})
    publish(conn, "feb", {"e3": 1.0})
    publish(conn, "all", {"e1": 5.0, "e3": 5.0}, version=2, role="challenger", snapshot=True)
    assert lookup(conn, "e2") == 1.0  # a challenger's snapshot replaces the challenger's set alone
    assert lookup(conn, "e2", version=2) is None
    publish(conn, "all", {"e1": 2.0, "e3": 2.0}, snapshot=True)  # e2's account is closed
    assert (lookup(conn, "e1"), lookup(conn, "e2"), lookup(conn, "e3")) == (2.0, None, 2.0)
    statuses = conn.execute("SELECT partition_key, status FROM runs WHERE model_version = 1 ORDER BY run_id")
    assert statuses.fetchall() == [("jan", "superseded"), ("feb", "superseded"), ("all", "published")]  # kept
    assert lookups.snapshot_of(conn, MODEL) is not None
    publish(conn, "mar", {"e4": 3.0})  # later partitions add to the snapshot
    assert (lookup(conn, "e4"), lookup(conn, "e1")) == (3.0, 2.0)


def test_a_lookup_costs_the_same_on_365_partitions_as_on_one(conn: psycopg.Connection) -> None:
    """The same entities published as one partition (model 'one') and as 365 daily partitions
    (model 'many'), in one store: a hit and a miss read the same pages of the same relations."""
    conn.autocommit = True
    register(conn, 1, model="one")
    register(conn, 1, model="many")
    days = {day: {f"d{day}-{i}": float(day) for i in range(3)} for day in range(365)}
    publish(conn, "all", {e: v for values in days.values() for e, v in values.items()}, model="one")
    for day, values in days.items():
        publish(conn, f"day-{day}", values, model="many")

    def cost(model: str, entity: str) -> tuple[int, int]:
        """Buffers read by the API's own single lookup, and the segment tables it probed."""
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + lookups._ONE,
                            {"model": model, "id": entity}).fetchone()[0][0]["Plan"]  # type: ignore[index]
        return plan["Shared Hit Blocks"] + plan.get("Shared Read Blocks", 0), len(probed(plan))

    def probed(node: dict[str, Any]) -> list[str]:
        """The segment tables a plan's nodes actually scanned (not those pruned at run time)."""
        own = [node["Relation Name"]] if node.get("Relation Name", "").startswith("segment_") \
            and node.get("Actual Loops") else []
        return own + [name for child in node.get("Plans", []) for name in probed(child)]

    for entity in ("d0-0", "d200-1", "d364-2", "unknown"):
        assert cost("many", entity) == cost("one", entity)
        assert cost("many", entity)[1] == 1  # its model's one segment, not the other model's
    assert lookups.current_prediction(conn, "many", "d200-1").prediction == 200.0  # type: ignore[union-attr]
    assert lookups.current_prediction(conn, "many", "unknown") is None


def test_lookup_of_a_version_reads_its_segment(conn: psycopg.Connection) -> None:
    conn.autocommit = True
    register(conn, 1, 2)
    publish(conn, "a", {"e1": 1.0, "e2": 1.0}, version=1)
    publish(conn, "b", {"e2": 1.5}, version=1)
    publish(conn, "a", {"e1": 2.0, "e2": 2.0}, version=2)  # a rescored by v2 (not yet current)
    assert (lookup(conn, "e2"), lookup(conn, "e2", version=2)) == (1.5, 2.0)
    assert lookup(conn, "e2", version=1) == 1.5
    assert lookup(conn, "e1", version=1) == 1.0  # v1's run of a is v1's still
    rows = lookups.current_predictions_json(conn, MODEL, ["e1", "e2", "nope"], version=1, now=0, max_age=None)
    assert {(e, json.loads(text)["prediction"]) for e, _, text in rows} == {("e1", 1.0), ("e2", 1.5)}
    rows = lookups.current_predictions_json(conn, MODEL, ["e1", "e2", "nope"], version=2, now=0, max_age=None)
    assert {(e, json.loads(text)["prediction"]) for e, _, text in rows} == {("e1", 2.0), ("e2", 2.0)}


def batches_while(url: str, entities: list[str], field: str, act: Callable[[psycopg.Connection], None]
                  ) -> tuple[int, list[set[Any]]]:
    """Two readers ask for ``entities`` in batch lookups while ``act(conn)`` runs: how many batches
    they read, and those that were not whole or mixed values of ``field``."""
    stop, mixes, reads = threading.Event(), [], [0]

    def read() -> None:
        with psycopg.connect(url, autocommit=True, options=lookups.READER_OPTIONS) as conn:
            while not stop.is_set():
                rows = lookups.current_predictions_json(conn, MODEL, entities, now=0, max_age=None)
                values = {json.loads(text)[field] for _, _, text in rows}
                if len(values) != 1 or len(rows) != len(entities):
                    mixes.append(values)
                reads[0] += 1

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            act(conn)
    finally:
        stop.set()
        for r in readers:
            r.join()
    return reads[0], mixes


def test_readers_see_a_run_whole_or_not_at_all_while_runs_publish(settings: Settings) -> None:
    url = settings.database_url or ""
    entities = [f"e{i}" for i in range(200)]
    with psycopg.connect(url, autocommit=True) as conn:
        register(conn, 1)
        for day in range(30):
            publish(conn, f"old-{day}", {f"old{day}": 0.0})
        publish(conn, "p", dict.fromkeys(entities, 0.0))

    def republish(conn: psycopg.Connection) -> None:
        for k in range(1, 15):
            publish(conn, "p", dict.fromkeys(entities, float(k)))  # each a rebuild: p is the whole segment

    reads, mixes = batches_while(url, entities, "prediction", republish)
    assert reads > 10 and not mixes
    with psycopg.connect(url, autocommit=True) as conn:  # replaced segments were dropped while readers read
        assert segment_tables(conn) < 15
        serving.drop_retired(conn)
        assert segment_tables(conn) == 1


def test_a_replaced_segment_stays_while_a_snapshot_older_than_its_replacement_is_open(settings: Settings) -> None:
    url = settings.database_url or ""
    with psycopg.connect(url, autocommit=True) as conn, \
            psycopg.connect(url, autocommit=True, options=lookups.READER_OPTIONS) as reader:
        register(conn, 1)
        publish(conn, "p", {"e1": 1.0})
        # A lookup's snapshot taken before the rebuild below, its plan not yet made (no lock held):
        # the lookup's moment between the two, stretched.
        reader.execute("BEGIN")
        reader.execute("SELECT 1")
        publish(conn, "p", {"e1": 2.0})  # a rebuild: waits for the reader a moment, then leaves its segment
        assert segment_tables(conn) == 2
        assert lookups.current_prediction(reader, MODEL, "e1").prediction == 1.0  # type: ignore[union-attr]
        reader.execute("COMMIT")
        assert serving.drop_retired(conn) == 1
        assert segment_tables(conn) == 1
        assert lookups.current_prediction(reader, MODEL, "e1").prediction == 2.0  # type: ignore[union-attr]


def test_a_batch_lookup_never_mixes_versions_while_promotions_switch(settings: Settings) -> None:
    url = settings.database_url or ""
    entities = [f"e{i}" for i in range(300)]
    with psycopg.connect(url, autocommit=True) as conn:
        register(conn, 1, 2)
        publish(conn, "p", dict.fromkeys(entities, 1.0))
        publish(conn, "p", dict.fromkeys(entities, 2.0), version=2, role="challenger")

    def switch(conn: psycopg.Connection) -> None:
        for k in range(40):
            promote(conn, 2 if k % 2 == 0 else 1)
            time.sleep(0.02)  # the readers read between switches too, however busy the machine

    reads, mixes = batches_while(url, entities, "model_version", switch)
    assert reads > 10 and not mixes


def test_prune_expires_old_runs_keeps_history_and_dry_run_changes_nothing(settings: Settings) -> None:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        register(conn, 1)
        old = publish(conn, "2026-01-01", {"gone": 1.0, "both": 1.0})
        publish(conn, "2026-01-02", {"both": 2.0, "stays": 2.0})
        conn.execute("UPDATE runs SET published_at = published_at - interval '40 days' WHERE run_id = %s", [old])
        conn.execute("INSERT INTO run_profiles (run_id, column_name, counts, null_count, n, sum, sum_sq) "
                     "VALUES (%s, 'f', '{1}', 0, 1, 0, 0)", [old])
        before = segments(conn)

        dry = prune_runs(settings, older_than=timedelta(days=30), dry_run=True)
        assert [r.run_id for r in dry.runs] == [old] and segments(conn) == before
        assert conn.execute("SELECT status FROM runs WHERE run_id = %s", [old]).fetchone() == ("published",)

        assert prune_runs(settings).runs == ()  # no policy, no PREDSTORE_KEEP_DAYS: kept for ever
        retain(settings, MODEL, 30)
        done = prune_runs(settings)
        assert [r.run_id for r in done.runs] == [old] and done.entities_unserved == 1
        assert lookup(conn, "gone") is None and lookup(conn, "both") == 2.0 and lookup(conn, "stays") == 2.0
        assert conn.execute("SELECT status FROM runs WHERE run_id = %s", [old]).fetchone() == ("expired",)
        assert conn.execute("SELECT to_regclass(%s)", [f"predstore_partitions.run_{old}"]).fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM run_profiles WHERE run_id = %s", [old]).fetchone() == (1,)
        assert segments(conn) == conn.execute(SEGMENTS).fetchall()
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
        assert segments(conn) == [] and lookup(conn, "kept") is None


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
