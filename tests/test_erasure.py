"""`predstore forget` lasts: an erased entity's rows are rejected as 'erased' whenever a partition
is scored again (never counting toward --max-reject-fraction), its labels are left out of later
ingests, and the erasure list and the audit trail name it by a keyed HMAC only."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from batch.plan import RunResult
from batch.runner import ScoreRequest, score_partition, verify_run
from batch.stages import check_rejects
from models.register import register_model
from monitor.labels import ingest_labels
from store.errors import InputError
from store.forget import forget_entity
from store.settings import Settings
from tests import factories


def served(conn: psycopg.Connection, model: str) -> set[str]:
    rows = conn.execute("SELECT entity_id FROM current_predictions WHERE model_name = %s", [model]).fetchall()
    return {r[0] for r in rows}


def test_a_forgotten_entity_stays_forgotten_when_scored_again(settings: Settings, conn: psycopg.Connection,
                                                              tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    for model in ("churn", "fraud"):
        register_model(settings, artifact, name=model, train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(200, seed=1))
    for model in ("churn", "fraud"):
        assert score_partition(settings, ScoreRequest(path=path, model_name=model)).status == "published"
    forget_entity(settings, "e7", model="churn")  # from churn only
    done = forget_entity(settings, "e9")  # from every model
    assert {"e7", "e9"}.isdisjoint(served(conn, "churn")) and "e7" in served(conn, "fraud")

    # Scored again (as every partition is after a promotion): the erased stay out.
    for model in ("churn", "fraud"):
        rescored = score_partition(settings, ScoreRequest(path=path, model_name=model, force=True))
        assert rescored.status == "published"
        erased = conn.execute("SELECT row_number, entity_id, reason, raw FROM rejected_rows WHERE run_id = %s "
                              "ORDER BY row_number", [rescored.run_id]).fetchall()
        expected = [8, 10] if model == "churn" else [10]  # row numbers count from 1
        assert erased == [(n, None, "erased", {}) for n in expected], erased  # neither id nor values kept
        assert verify_run(settings, rescored.run_id)["match"]  # verified with the same list
    assert len(served(conn, "churn")) == 198 and {"e7", "e9"}.isdisjoint(served(conn, "churn"))
    assert "e7" in served(conn, "fraud") and "e9" not in served(conn, "fraud")

    # A labels file brings none of their labels back either.
    labels = factories.write_parquet(tmp_path / "labels.parquet", pd.DataFrame({"id": ["e1", "e7", "e9"], "y": 1}))
    counts = ingest_labels(settings, labels, model_name="churn", entity_col="id", label_col="y")
    assert (counts["rows"], counts["erased"]) == (1, 2)
    assert conn.execute("SELECT array_agg(entity_id) FROM labels").fetchone() == (["e1"],)

    # The list and the trail hold the HMAC under the store's key, never a plain sha256 of the id.
    key = conn.execute("SELECT key FROM erasure_key").fetchone()
    assert key is not None and len(key[0]) >= 30
    digest = hmac.new(bytes(key[0]), b"e9", hashlib.sha256).hexdigest()
    assert done["entity_hmac"] == digest
    trail = {r[0] for r in conn.execute("SELECT target FROM audit WHERE action = 'entity.forget'").fetchall()}
    assert digest in trail and hashlib.sha256(b"e9").hexdigest() not in trail and len(trail) == 2
    listed = conn.execute("SELECT encode(entity_hmac, 'hex'), model_name FROM erasures ORDER BY 2").fetchall()
    assert listed == [(digest, ""), (hmac.new(bytes(key[0]), b"e7", hashlib.sha256).hexdigest(), "churn")]


def test_erased_rows_do_not_count_toward_the_reject_fraction() -> None:
    result = RunResult(status="running", model="m", model_version=1, partition="p", rows_in=100, rows_rejected=12)
    check_rejects(result, 0.05, erased=10)  # 2 bad of the 90 judged
    with pytest.raises(InputError, match=r"7 of 95 rows read were rejected \(not counting 5 erased\)"):
        check_rejects(result, 0.05, erased=5)
    with pytest.raises(InputError, match="12 of 100 rows"):
        check_rejects(result, 0.05)
    check_rejects(RunResult(status="running", model="m", model_version=1, partition="p", rows_in=3,
                            rows_rejected=3), 0.05, erased=3)  # everyone erased: nothing wrong with the input


def test_an_erasure_list_does_not_fail_a_healthy_run(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(200, seed=1))
    assert score_partition(settings, ScoreRequest(path=path, model_name="churn")).status == "published"
    for i in range(20):  # 10% of the partition, twice the default limit
        forget_entity(settings, f"e{i}", model="churn")
    rescored = score_partition(settings, ScoreRequest(path=path, model_name="churn", force=True))
    assert rescored.status == "published", rescored.message
    assert (rescored.rows_in, rescored.rows_scored, rescored.rows_rejected) == (200, 180, 20)
