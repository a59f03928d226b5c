"""The database stops in the middle of `predstore monitor` and of `predstore labels ingest`: each
ends within seconds with one line, ``...: database unavailable: ...``, exit 1, and runs again
cleanly once the database is back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import psycopg
import pytest

from batch.runner import ScoreRequest, score_partition
from tests import factories
from tests.test_database_loss_scoring import churn_store, stop_the_database_when_paused

if TYPE_CHECKING:
    from tests.conftest import PrivateServer

ROWS = 20_000


@pytest.mark.parametrize("job", ["monitor", "labels"])
def test_losing_the_database_mid_job_fails_fast_with_one_line(job: str, tmp_path: Path,
                                                              private_server: PrivateServer,
                                                              private_database: str) -> None:
    url = private_database
    settings = churn_store(url, tmp_path)
    data = factories.frame(ROWS)
    path = factories.write_parquet(tmp_path / "p.parquet", data)
    assert score_partition(settings, ScoreRequest(path=path, model_name="churn")).status == "published"
    labels = factories.write_parquet(tmp_path / "labels.parquet", pd.DataFrame(
        {"id": data["entity_id"], "y": data["y"], "at": pd.Timestamp("2026-01-05", tz="UTC")}),
        row_group_size=ROWS // 4)
    command = ["monitor", "--model", "churn"] if job == "monitor" else \
        ["labels", "ingest", str(labels), "--model", "churn", "--entity-col", "id", "--label-col", "y",
         "--time-col", "at"]
    env = {"PATH": "/usr/bin:/bin", "PREDSTORE_HOME": str(settings.home), "PREDSTORE_DATABASE_URL": url,
           "PREDSTORE_FAULT_POINT": f"{job}:pause"}
    returncode, rest, took = stop_the_database_when_paused(command, env=env, pgdata=private_server.pgdata,
                                                           resume=tmp_path / "resume")
    what = "monitoring churn" if job == "monitor" else "ingesting labels from labels.parquet"
    assert returncode == (6 if job == "monitor" else 1), rest  # the monitor's failure has a code of its own
    assert len(rest.strip().splitlines()) == 1 and "Traceback" not in rest, rest
    assert rest.startswith(f"predstore: error: {what}: database unavailable: lost the connection"), rest
    assert took < 30, took

    private_server.restart()
    del env["PREDSTORE_FAULT_POINT"]
    again = subprocess.run([sys.executable, "-m", "store", *command], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode in (0, 1) and "error" not in again.stderr, again.stderr
    with psycopg.connect(url) as conn:
        if job == "monitor":
            assert conn.execute("SELECT count(*) FROM drift_checks").fetchone() == (1,)
        else:
            assert conn.execute("SELECT count(*) FROM labels").fetchone() == (ROWS,)
