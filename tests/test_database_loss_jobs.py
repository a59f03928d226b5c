"""The database stops in the middle of `predstore monitor` and of `predstore labels ingest`: each
ends within seconds with one line, ``...: database unavailable: ...``, exit 1, and runs again
cleanly once the database is back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from store.db import start_embedded, stop_embedded
from store.migrate import upgrade
from store.settings import Settings
from tests import factories
from tests.test_database_loss_scoring import stop_the_database_when_paused

ROWS = 20_000


@pytest.mark.parametrize("job", ["monitor", "labels"])
def test_losing_the_database_mid_job_fails_fast_with_one_line(job: str, tmp_path: Path) -> None:
    # Not under pytest's basetemp (see tests/test_database_loss_scoring.py).
    server_home = Path(tempfile.mkdtemp(prefix="predstore-dbloss-"))
    pgdata = server_home / "pgdata"
    url = start_embedded(pgdata)
    try:
        upgrade(url)
        settings = Settings(home=tmp_path / "home", database_url=url)
        artifact, train = factories.logistic(tmp_path / "m")
        register_model(settings, artifact, name="churn", train_data=train, target="y")
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
        returncode, rest, took = stop_the_database_when_paused(command, env=env, pgdata=pgdata)
        what = "monitoring churn" if job == "monitor" else "ingesting labels from labels.parquet"
        assert returncode == (6 if job == "monitor" else 1), rest  # the monitor's failure has a code of its own
        assert len(rest.strip().splitlines()) == 1 and "Traceback" not in rest, rest
        assert rest.startswith(f"predstore: error: {what}: database unavailable: lost the connection"), rest
        assert took < 30, took

        restart = f"import pathlib, store.db; store.db.start_embedded(pathlib.Path({str(pgdata)!r}))"
        subprocess.run([sys.executable, "-c", restart], check=True, timeout=120, capture_output=True)
        del env["PREDSTORE_FAULT_POINT"]
        again = subprocess.run([sys.executable, "-m", "store", *command], env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode in (0, 1) and "error" not in again.stderr, again.stderr
        with psycopg.connect(url) as conn:
            if job == "monitor":
                assert conn.execute("SELECT count(*) FROM drift_checks").fetchone() == (1,)
            else:
                assert conn.execute("SELECT count(*) FROM labels").fetchone() == (ROWS,)
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(server_home, ignore_errors=True)
