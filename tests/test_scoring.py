"""The scoring job end to end against real PostgreSQL: publish, idempotency, supersede, retention,
bad input, atomicity under concurrent reads, and a process killed mid-COPY."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner

from batch.runner import ScoreRequest, score_partition, verify_run
from models.artifacts import read_model
from models.predict import score_frame
from models.register import register_model
from predstore.cli import main
from store import ModelError, RunFailed, Settings
from tests import factories


def published(conn: psycopg.Connection, partition: str) -> pd.DataFrame:
    rows = conn.execute(
        "SELECT entity_id, prediction, label, run_id, model_version FROM published_predictions "
        "WHERE partition_key = %s ORDER BY entity_id", [partition]).fetchall()
    return pd.DataFrame(rows, columns=["entity_id", "prediction", "label", "run_id", "model_version"])


def statuses(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return conn.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()


@pytest.fixture
def lr(settings: Settings, tmp_path: Path) -> Path:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    return artifact


def test_publishes_exactly_what_the_model_predicts(settings: Settings, lr: Path, tmp_path: Path,
                                                   conn: psycopg.Connection) -> None:
    data = factories.frame(3000, seed=1)
    path = factories.write_parquet(tmp_path / "day1.parquet", data, row_group_size=700)
    result = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert (result.status, result.partition, result.rows_in, result.rows_scored) == ("published", "day1", 3000, 3000)
    rows = published(conn, "day1")
    expected = score_frame(read_model(lr), data).set_index(data["entity_id"]).loc[rows["entity_id"]]
    assert np.allclose(rows["prediction"], expected["prediction"])
    assert rows["label"].tolist() == expected["label"].tolist()
    summary = conn.execute("SELECT status, rows_in, rows_scored, reject_fraction FROM run_summary").fetchone()
    assert summary == ("published", 3000, 3000, 0)
    assert conn.execute("SELECT count(*) FROM current_predictions WHERE model_name = 'churn'").fetchone() == (3000,)


def test_rerun_is_a_noop_force_and_new_versions_supersede(settings: Settings, lr: Path, tmp_path: Path,
                                                          conn: psycopg.Connection) -> None:
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(200))
    request = ScoreRequest(path=path, model_name="churn")
    first = score_partition(settings, request)
    again = score_partition(settings, request)
    assert again.status == "skipped" and "already published" in again.message
    forced = score_partition(settings, dataclasses.replace(request, force=True))
    assert forced.status == "published" and forced.superseded_run == first.run_id
    other, _ = factories.logistic(tmp_path / "v2", name="lr2.joblib", seed=7)
    register_model(settings, other, name="churn", current=True)
    newer = score_partition(settings, request)
    assert newer.status == "published" and newer.superseded_run == forced.run_id
    assert statuses(conn) == [(1, "superseded"), (2, "skipped"), (3, "superseded"), (4, "published")]
    rows = published(conn, "p")
    assert len(rows) == 200 and set(rows["run_id"]) == {4} and set(rows["model_version"]) == {2}


def test_old_runs_are_dropped_as_whole_tables(settings: Settings, lr: Path, tmp_path: Path,
                                              conn: psycopg.Connection) -> None:
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(100))
    keep_one = dataclasses.replace(settings, keep_runs=1)
    for _ in range(3):
        score_partition(keep_one, ScoreRequest(path=path, model_name="churn", force=True))
    assert statuses(conn) == [(1, "dropped"), (2, "dropped"), (3, "published")]
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'predstore_partitions'").fetchall()
    assert tables == [("run_3",)]


def test_duplicate_ids_keep_the_last_row_and_are_counted(settings: Settings, lr: Path, tmp_path: Path,
                                                         conn: psycopg.Connection) -> None:
    data = factories.frame(50)
    twin = data.iloc[[10]].assign(f0=9.0)  # e10 again, later, with another value
    path = factories.write_parquet(tmp_path / "d.parquet", pd.concat([data, twin]))
    result = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert result.rows_duplicate == 1 and result.rows_scored == 51
    rows = published(conn, "d").set_index("entity_id")
    assert len(rows) == 50
    later = score_frame(read_model(lr), twin)["prediction"].iloc[0]
    assert rows.loc["e10", "prediction"] == pytest.approx(later)
    moved = conn.execute("SELECT row_number, reason FROM rejected_rows").fetchall()
    assert moved == [(11, "duplicate entity_id: a later row of the partition has the same id and is the one kept")]


def test_bad_rows_are_quarantined_and_the_rest_published(settings: Settings, lr: Path, tmp_path: Path,
                                                        conn: psycopg.Connection) -> None:
    data = factories.frame(200).astype({"f1": object})
    data.loc[5, "f1"] = "not a number"
    data.loc[6, "entity_id"] = None
    path = tmp_path / "mixed.csv"
    data.to_csv(path, index=False)
    result = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert (result.status, result.rows_rejected, result.rows_scored) == ("published", 2, 198)
    assert len(published(conn, "mixed")) == 198
    reasons = conn.execute("SELECT row_number, reason, raw->>'f1', raw->>'entity_id' FROM rejected_rows "
                           "ORDER BY 1").fetchall()
    assert reasons[0] == (6, "column 'f1' is not a number", "not a number", "e5")
    assert reasons[1][::3] == (7, None) and reasons[1][1] == "entity id is missing"


def test_too_many_rejects_fail_the_run_and_publish_nothing(settings: Settings, lr: Path, tmp_path: Path,
                                                          conn: psycopg.Connection) -> None:
    good = factories.write_parquet(tmp_path / "p.parquet", factories.frame(100))
    score_partition(settings, ScoreRequest(path=good, model_name="churn", partition_key="p"))
    bad = factories.frame(100, seed=5)
    bad.loc[:9, "f0"] = np.inf  # 10% of rows
    path = factories.write_parquet(tmp_path / "bad" / "p.parquet", bad)
    with pytest.raises(RunFailed, match=r"rows read were rejected \(\d+\.\d%, more than --max-reject-fraction"):
        score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert statuses(conn) == [(1, "published"), (2, "failed")]
    rows = published(conn, "p")
    assert set(rows["run_id"]) == {1} and len(rows) == 100  # the previous run is untouched
    kept = conn.execute("SELECT count(*) FROM rejected_rows WHERE run_id = 2").fetchone()
    assert kept is not None and kept[0] >= 10  # kept for diagnosis
    ok = score_partition(settings, ScoreRequest(path=path, model_name="churn", max_reject_fraction=0.2, force=True))
    assert ok.status == "published" and ok.rows_rejected == 10


def test_missing_column_fails_before_writing(settings: Settings, lr: Path, tmp_path: Path,
                                            conn: psycopg.Connection) -> None:
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(10).drop(columns=["f2"]))
    with pytest.raises(RunFailed, match="lacks required column"):
        score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert statuses(conn) == [(1, "failed")]
    assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'predstore_partitions'").fetchone() == (0,)


def test_changed_artifact_is_refused(settings: Settings, lr: Path, tmp_path: Path, conn: psycopg.Connection) -> None:
    stored = next(settings.artifacts_dir.iterdir())
    stored.write_bytes(stored.read_bytes() + b"tampered")
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(10))
    with pytest.raises(RunFailed, match="has changed since it was registered") as info:
        score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert isinstance(info.value.__cause__, ModelError)


def test_hive_directory_csv_and_multiclass(settings: Settings, tmp_path: Path, conn: psycopg.Connection) -> None:
    artifact, train = factories.multiclass(tmp_path / "m")
    register_model(settings, artifact, name="kind", train_data=train, target="kind")
    day = tmp_path / "incoming" / "dt=2026-11-26"
    factories.write_parquet(day / "part-0.parquet", factories.frame(30))
    factories.write_parquet(day / "part-1.parquet", factories.frame(30, start=30))
    result = score_partition(settings, ScoreRequest(path=day, model_name="kind"))
    assert result.partition == "dt=2026-11-26" and result.rows_scored == 60
    row = conn.execute("SELECT label, scores, prediction FROM published_predictions WHERE entity_id = 'e0'").fetchone()
    assert row is not None and len(row[1]) == 3 and row[2] == pytest.approx(max(row[1]))
    models = conn.execute("SELECT classes FROM models").fetchone()
    assert models == (["high", "low", "mid"],)


def test_verify_replays_a_run(settings: Settings, lr: Path, tmp_path: Path) -> None:
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(500), row_group_size=128)
    run = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    outcome = verify_run(settings, run.run_id)  # type: ignore[arg-type]
    assert outcome["match"] and outcome["rows_in"] == 500


def test_readers_never_see_a_partial_or_mixed_run(settings: Settings, tmp_path: Path, database_url: str) -> None:
    """A reader polling during repeated publishes sees one whole run at a time."""
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(20_000))
    score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    seen: list[tuple[int, int, int]] = []
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not done.is_set():
                seen.extend(reader.execute(
                    "SELECT count(*), count(DISTINCT run_id), min(run_id) FROM published_predictions "
                    "WHERE model_name = 'churn' AND partition_key = 'p'").fetchall())

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for _ in range(4):
            score_partition(settings, ScoreRequest(path=path, model_name="churn", force=True))
    finally:
        done.set()
        thread.join()
    assert len(seen) > 10
    assert {(count, runs) for count, runs, _ in seen} == {(20_000, 1)}
    assert len({run for _, _, run in seen}) >= 2  # the reader did see publishes happen


def test_killed_mid_copy_leaves_nothing_and_next_run_succeeds(settings: Settings, lr: Path, tmp_path: Path,
                                                               cli_env: dict[str, str], database_url: str) -> None:
    path = factories.write_parquet(tmp_path / "big.parquet", factories.frame(600_000), row_group_size=50_000)
    proc = subprocess.Popen([sys.executable, "-m", "store", "score", str(path), "--model", "churn"],
                            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        copying = None
        while time.monotonic() < deadline and proc.poll() is None:
            copying = conn.execute(
                "SELECT c.tuples_processed FROM pg_stat_progress_copy c JOIN pg_stat_activity a USING (pid) "
                "WHERE a.application_name = 'predstore-score' AND c.tuples_processed > 0").fetchone()
            if copying:
                break
        assert copying, "the scoring process was never seen copying"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert conn.execute("SELECT count(*) FROM published_predictions").fetchone() == (0,)
        assert statuses(conn) == [(1, "running")]
        again = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
        assert again.status == "published" and again.rows_scored == 600_000
        assert statuses(conn) == [(1, "abandoned"), (2, "published")]
        assert conn.execute("SELECT count(*) FROM published_predictions").fetchone() == (600_000,)
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'predstore_partitions'").fetchall()
        assert tables == [("run_2",)]  # the dead run's unpublished table was dropped


@pytest.mark.parametrize(("args", "code", "message"), [
    (["score", "nowhere.parquet", "--model", "churn"], 2, "nowhere.parquet: no such file or directory"),
    (["score", "{p}", "--model", "nobody"], 2, "no model named 'nobody' is registered"),
    (["score", "{p}", "--model", "churn", "--version", "9"], 2, "model 'churn' has no version 9 (versions: 1)"),
    (["score", "{p}", "--model", "churn", "--max-reject-fraction", "2"], 2, "must be between 0 and 1"),
    (["score", "{bad}", "--model", "churn"], 1, "lacks required column(s) 'f0'"),
    (["models", "register", "{p}", "--name", "x"], 2, "unknown artifact type '.parquet'"),
])
def test_cli_errors_are_one_line_with_exit_codes(lr: Path, tmp_path: Path, cli_env: dict[str, str],
                                                 args: list[str], code: int, message: str) -> None:
    p = factories.write_parquet(tmp_path / "p.parquet", factories.frame(10))
    bad = factories.write_parquet(tmp_path / "bad.parquet", factories.frame(10).drop(columns=["f0"]))
    result = CliRunner().invoke(main, [a.format(p=p, bad=bad) for a in args], env=cli_env)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_score_json_and_runs_commands(lr: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    p = factories.write_parquet(tmp_path / "p.parquet", factories.frame(10))
    runner = CliRunner()
    result = runner.invoke(main, ["score", str(p), "--model", "churn", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert '"status": "published"' in result.output
    listed = runner.invoke(main, ["runs", "list"], env=cli_env)
    assert "published" in listed.output and "churn v1" in listed.output
    verified = runner.invoke(main, ["runs", "verify", "1"], env=cli_env)
    assert verified.exit_code == 0 and "verified" in verified.output
    shown = runner.invoke(main, ["models", "show", "churn"], env=cli_env)
    assert '"accuracy"' in shown.output and '"current"' in shown.output


def test_skops_artifacts_and_promotion(settings: Settings, tmp_path: Path, cli_env: dict[str, str],
                                       conn: psycopg.Connection) -> None:
    import skops.io as sio

    first, train = factories.logistic(tmp_path / "a")
    second, _ = factories.logistic(tmp_path / "b", seed=3)
    skops_path = tmp_path / "model.skops"
    sio.dump(read_model(second), skops_path)
    runner = CliRunner()
    first_args = ["models", "register", str(first), "--name", "m", "--train-data", str(train), "--trust-joblib"]
    assert runner.invoke(main, first_args, env=cli_env).exit_code == 0
    registered = runner.invoke(main, ["models", "register", str(skops_path), "--name", "m"], env=cli_env)
    assert registered.exit_code == 0 and "registered m version 2" in registered.output
    assert "(current)" not in registered.output  # only the first version becomes current by itself
    promoted = runner.invoke(main, ["models", "promote", "m", "2"], env=cli_env)
    assert promoted.output.strip() == "m: current version 1 -> 2"
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(20))
    result = score_partition(settings, ScoreRequest(path=path, model_name="m"))
    assert result.model_version == 2
    rows = published(conn, "p")
    expected = score_frame(read_model(second), factories.frame(20))
    assert np.allclose(rows.sort_values("entity_id")["prediction"].to_numpy(),
                       expected.set_index(factories.frame(20)["entity_id"]).loc[rows["entity_id"]]["prediction"])
    listed = runner.invoke(main, ["models", "list"], env=cli_env)
    assert "v2" in listed.output and "[current]" in listed.output
