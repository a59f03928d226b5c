"""The ledger returns `Run` values, and one rule says whether a partition is already scored."""

from __future__ import annotations

import os
from dataclasses import asdict, fields

import psycopg

from store import ledger, registry
from store.features import FeatureSchema


def test_a_run_holds_every_column_of_its_row_in_order(conn: psycopg.Connection) -> None:
    columns = [name for (name,) in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs' ORDER BY ordinal_position")]
    assert [f.name for f in fields(ledger.Run)] == columns  # `runs show` prints them in this order


def test_the_ledger_returns_runs(conn: psycopg.Connection) -> None:
    registry.insert_model(conn, name="m", version=1, artifact_uri="/artifacts/m-1", sha256="0" * 64,
                          format="joblib", task="classification",
                          feature_schema=FeatureSchema(()), classes=["no", "yes"],
                          training_metrics=None)
    run_id = ledger.start_run(conn, model_name="m", model_version=1, model_sha256="0" * 64, partition_key="p",
                              input_uri="memory://p", code_version="test", host="test", pid=os.getpid())
    run = ledger.get_run(conn, run_id)
    assert isinstance(run, ledger.Run)
    assert (run.run_id, run.status, run.model_name, run.role, run.rows_in) == (run_id, "running", "m", "current", 0)
    assert ledger.list_runs(conn, model_name="m") == [run]
    assert ledger.find_published(conn, "m", "p") is None
    assert asdict(run)["partition_key"] == "p"
    ledger.release_run(conn, run_id)


def test_is_current_is_the_same_version_on_the_same_content() -> None:
    scored = ledger.Scored(model_version=2, input_fingerprint="abc")
    assert ledger.is_current(scored, 2, "abc")
    assert not ledger.is_current(scored, 3, "abc")  # a new model version scores it again
    assert not ledger.is_current(scored, 2, "abd")  # so does new content
    assert not ledger.is_current(None, 2, "abc")  # and a partition never published
    assert not ledger.is_current(ledger.Scored(2, None), 2, "abc")
