"""The database stops in the middle of each stage of a run (reading, COPY, the index build, the
publish): `predstore score` ends within seconds with one line, ``database unavailable: ...``,
exit 1; after a restart the next run marks it abandoned and publishes exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from store.db import stop_embedded
from store.settings import Settings
from tests import factories

if TYPE_CHECKING:
    from tests.conftest import PrivateServer

ROWS = 30_000

#: A point of each stage, where the run pauses while the test stops the database.
STAGES = ["read@2", "copy@2", "indexed", "published"]


def stop_the_database_when_paused(args: list[str], *, env: dict[str, str], pgdata: Path,
                                  resume: Path) -> tuple[int, str, float]:
    """Run ``predstore ARGS`` until its fault point pauses it, stop the database, let it go on (by
    creating ``resume``), and return its exit status, the rest of its stderr, and the seconds it
    took to end after the stop."""
    env = {**env, "PREDSTORE_FAULT_RESUME": str(resume)}
    with subprocess.Popen([sys.executable, "-m", "store", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("predstore fault: paused at"):
                break
        assert lines and lines[-1].startswith("predstore fault: paused"), "".join(lines)
        stop_embedded(pgdata)
        stopped = time.monotonic()
        resume.touch()
        rest = proc.stderr.read()
        proc.wait(timeout=60)
    return proc.returncode, rest, time.monotonic() - stopped


def churn_store(url: str, tmp_path: Path) -> Settings:
    """Settings on ``url`` with the churn model registered."""
    settings = Settings(home=tmp_path / "home", database_url=url)
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    return settings


@pytest.mark.parametrize("stage", STAGES)
def test_losing_the_database_mid_run_fails_fast_with_one_line(stage: str, tmp_path: Path,
                                                              private_server: PrivateServer,
                                                              private_database: str) -> None:
    url = private_database
    settings = churn_store(url, tmp_path)
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(ROWS), row_group_size=5_000)
    env = {"PATH": "/usr/bin:/bin", "PREDSTORE_HOME": str(settings.home), "PREDSTORE_DATABASE_URL": url,
           "PREDSTORE_FAULT_POINT": f"{stage}:pause"}
    returncode, rest, took = stop_the_database_when_paused(
        ["score", str(path), "--model", "churn", "--partition", "p"], env=env, pgdata=private_server.pgdata,
        resume=tmp_path / "resume")
    last = rest.strip().splitlines()[-1]
    assert returncode == 1, rest
    assert "Traceback" not in rest, rest
    assert last.startswith("predstore: error: run 1 did not finish: database unavailable: "), last
    assert took < 30, took

    private_server.restart()
    again = score_partition(settings, ScoreRequest(path=path, model_name="churn", partition_key="p"))
    assert again.status == "published", again.message
    with psycopg.connect(url) as conn:
        runs = conn.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
        assert runs == [(1, "abandoned"), (2, "published")]
        assert conn.execute("SELECT count(*) FROM published_predictions").fetchone() == (ROWS,)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'predstore_partitions'"
                            ).fetchone() == (1,)
