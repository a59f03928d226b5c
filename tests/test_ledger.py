"""The ledger never flips a finished run, and a table left detach-pending is still dropped."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from store import ledger, predictions, registry
from store.errors import RunNotRunning
from store.features import FeatureSchema
from store.settings import Settings
from tests import factories


def abandoned_run(conn: psycopg.Connection) -> int:
    """A run with its table, reaped as abandoned (its liveness lock given up, as if its process died)."""
    registry.insert_model(conn, name="m", version=1, artifact_uri="/artifacts/m-1", sha256="0" * 64,
                          format="joblib", task="classification",
                          feature_schema=FeatureSchema(()), classes=["no", "yes"],
                          training_metrics=None)
    run_id = ledger.start_run(conn, model_name="m", model_version=1, model_sha256="0" * 64, partition_key="p",
                              input_uri="memory://p", code_version="test", host="test", pid=os.getpid())
    predictions.create_run_table(conn, run_id)
    ledger.release_run(conn, run_id)
    assert ledger.reap_abandoned(conn) == [run_id]
    return run_id


def test_an_abandoned_run_is_never_published_or_finished(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        run_id = abandoned_run(conn)
        with pytest.raises(RunNotRunning, match=f"run {run_id} is no longer running"), conn.transaction():
            predictions.publish(conn, run_id, model_name="m", partition_key="p")
        with pytest.raises(RunNotRunning, match="it is abandoned"):
            ledger.finish_run(conn, run_id, status="failed", error="late")
        assert ledger.statuses(conn, [run_id]) == {run_id: "abandoned"}
        assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass(%s)",
                            [predictions.run_table(run_id).as_string(conn)]).fetchone() == (0,)


def detach_pending(database_url: str, run_id: int) -> None:
    """Leave ``run_id``'s table detach-pending: its DETACH ... CONCURRENTLY cancelled while a reader waits."""
    with psycopg.connect(database_url) as reader, psycopg.connect(database_url, autocommit=True) as conn:
        reader.execute("SELECT count(*) FROM predictions")  # an open transaction that can see the partition
        conn.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f"ALTER TABLE predictions DETACH PARTITION {predictions.run_table(run_id).as_string(conn)} "
                         "CONCURRENTLY")
        reader.rollback()
        assert conn.execute("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)",
                            [predictions.run_table(run_id).as_string(conn)]).fetchone() == (True,)


def test_retention_finalizes_an_interrupted_detach(settings: Settings, database_url: str, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    keep_one = Settings(home=settings.home, database_url=database_url, keep_runs=1)
    runs: list[int] = []
    for seed in range(3):
        path = factories.write_parquet(tmp_path / f"p{seed}.parquet", factories.frame(200, seed=seed))
        result = score_partition(keep_one, ScoreRequest(path=path, model_name="churn", partition_key="p"))
        assert result.status == "published", result.message
        assert result.run_id is not None
        runs.append(result.run_id)
        if seed == 0:  # the first run's table stays attached, superseded, until retention drops it
            keep_one = Settings(home=settings.home, database_url=database_url, keep_runs=2)
        if seed == 1:
            detach_pending(database_url, runs[0])
            keep_one = Settings(home=settings.home, database_url=database_url, keep_runs=1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert [s for _, s in sorted(ledger.statuses(conn, runs).items())] == ["dropped", "dropped", "published"]
        tables = {t for (t,) in conn.execute("SELECT tablename FROM pg_tables "
                                             "WHERE schemaname = 'predstore_partitions'")}
        assert tables == {f"run_{runs[2]}"}
        assert conn.execute("SELECT count(*) FROM published_predictions").fetchone() == (200,)
