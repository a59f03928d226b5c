"""Scale-out: the same run through worker processes and Dask publishes exactly the same rows."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import psycopg
import pytest

from batch.executors import ExecutorSpec
from batch.runner import RunResult, ScoreRequest, score_partition, verify_run
from models.register import register_model
from store import ConfigError, Settings
from tests import factories


def digest_of(conn: psycopg.Connection, run_id: int | None) -> str:
    row = conn.execute("SELECT predictions_digest FROM runs WHERE run_id = %s", [run_id]).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def partition(settings: Settings, tmp_path: Path) -> Path:
    artifact, train = factories.pipeline_classifier(tmp_path / "m")
    register_model(settings, artifact, name="pipe", train_data=train, target="y")
    data = factories.frame(12_000, seed=2)
    data.loc[7, "f0"] = float("inf")  # one rejected row, numbered the same by every executor
    return factories.write_parquet(tmp_path / "p.parquet", data, row_group_size=1000)


def test_worker_processes_and_dask_publish_the_same_run(settings: Settings, partition: Path,
                                                        conn: psycopg.Connection) -> None:
    request = ScoreRequest(path=partition, model_name="pipe")
    alone = score_partition(settings, request)
    pool = score_partition(settings, dataclasses.replace(
        request, force=True, executor=ExecutorSpec(kind="local", workers=2)))
    dask = score_partition(settings, dataclasses.replace(
        request, force=True, executor=ExecutorSpec(kind="dask", workers=2, dask_address="local")))
    for run in (alone, pool, dask):
        assert (run.status, run.rows_in, run.rows_scored, run.rows_rejected) == ("published", 12_000, 11_999, 1)
    assert digest_of(conn, alone.run_id) == digest_of(conn, pool.run_id) == digest_of(conn, dask.run_id)
    rejected = conn.execute("SELECT DISTINCT row_number FROM rejected_rows").fetchall()
    assert rejected == [(8,)]
    tasks = conn.execute("SELECT details->'tasks' FROM runs ORDER BY run_id").fetchall()
    assert tasks == [(1,), (6,), (6,)]
    profiles = conn.execute("SELECT run_id, counts FROM run_profiles WHERE column_name = 'f1' ORDER BY run_id")
    assert len({tuple(counts) for _, counts in profiles.fetchall()}) == 1  # summed from tasks, equal
    assert verify_run(settings, dask.run_id)["match"]  # type: ignore[arg-type]


def test_a_dask_worker_killed_mid_task_still_publishes_once(settings: Settings, tmp_path: Path,
                                                            conn: psycopg.Connection) -> None:
    from dask.distributed import Client, LocalCluster

    artifact, train = factories.slow_regressor(tmp_path / "m")
    register_model(settings, artifact, name="slow", train_data=train, target="amount")
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(4000), row_group_size=500)
    reference = score_partition(settings, ScoreRequest(path=path, model_name="slow"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome: list[RunResult | BaseException] = []

        def run() -> None:
            try:
                outcome.append(score_partition(settings, ScoreRequest(
                    path=path, model_name="slow", force=True,
                    executor=ExecutorSpec(kind="dask", workers=2, dask_address=cluster.scheduler_address))))
            except BaseException as exc:  # handed to the assertions below
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(client.processing().values()):
            time.sleep(0.05)
        busy = next(address for address, keys in client.processing().items() if keys)
        time.sleep(0.3)  # mid-task: its first batch is being predicted
        pids = client.run(os.getpid)
        os.kill(pids[busy], 9)
        thread.join(timeout=120)
    result = outcome[0]
    assert isinstance(result, RunResult), result
    assert result.status == "published" and result.rows_scored == 4000
    assert digest_of(conn, result.run_id) == digest_of(conn, reference.run_id)
    assert conn.execute("SELECT count(*) FROM published_predictions WHERE model_name = 'slow'").fetchone() == (4000,)


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "spark"}, "--executor 'spark': choose one of local, dask"),
    ({"kind": "dask"}, "--executor dask needs --dask-address"),
    ({"kind": "local", "dask_address": "local"}, "--dask-address goes with --executor dask"),
    ({"workers": 0}, "--workers 0: give at least 1"),
])
def test_executor_flags_are_checked(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ExecutorSpec(**spec)  # type: ignore[arg-type]


def test_an_unreachable_dask_scheduler_fails_the_run_cleanly(settings: Settings, partition: Path,
                                                            conn: psycopg.Connection) -> None:
    from store import RunFailed

    with pytest.raises(RunFailed, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        score_partition(settings, ScoreRequest(path=partition, model_name="pipe", executor=ExecutorSpec(
            kind="dask", dask_address="tcp://127.0.0.1:9")))
    assert conn.execute("SELECT status FROM runs").fetchall() == [("failed",)]
    assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'predstore_partitions'").fetchone() == (0,)
