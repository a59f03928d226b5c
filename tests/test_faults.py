"""SIGKILL a real `predstore score` at each fault point (store/faults.py) while a reader polls:
the reader sees the previous run or the new one, whole, never part of one; the ledger stays
consistent; scoring again publishes the partition exactly once. An exception (not a kill) at each
point runs the command in this process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from batch.runner import ScoreRequest, score_partition, verify_run
from models.register import register_model
from predstore.cli import main
from store import Settings, faults
from store.faults import POINTS
from store.lookups import READER_OPTIONS
from tests import factories

OLD_ROWS, NEW_ROWS, BAD_ROWS = 1500, 3000, 30

#: Where to kill the scoring process: every point, some at a later hit (the 2nd batch COPYed...).
KILLS = [*POINTS, "read@2", "validate@3", "copy@2"]


def whole_runs(conn: psycopg.Connection) -> set[tuple[int, int]]:
    """What a reader sees of partition p: (rows, distinct runs) of every published prediction."""
    return set(conn.execute("SELECT count(*), count(DISTINCT run_id) FROM published_predictions "
                            "WHERE partition_key = 'p'").fetchall())


def check_ledger(conn: psycopg.Connection) -> None:
    """Every run is finished; published and retained runs have their tables, the others none."""
    runs = conn.execute("SELECT run_id, status FROM runs WHERE partition_key = 'p' ORDER BY run_id").fetchall()
    tables = {int(t[0].removeprefix("run_")) for t in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'predstore_partitions'")}
    attached = {int(t[0]) for t in conn.execute(
        "SELECT replace(c.relname, 'run_', '') FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE c.relkind = 'r' AND i.inhparent = 'predictions'::regclass")}
    assert [s for _, s in runs].count("published") == 1, runs
    assert "running" not in {s for _, s in runs}, runs
    kept = {r for r, s in runs if s in ("published", "superseded")}
    assert tables == kept == attached, (runs, tables, attached)


@pytest.fixture
def scene(settings: Settings, tmp_path: Path) -> tuple[Path, int]:
    """A model, partition p published once (the run a reader sees), and new content for p with a few bad rows."""
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    old = factories.write_parquet(tmp_path / "old.parquet", factories.frame(OLD_ROWS))
    first = score_partition(settings, ScoreRequest(path=old, model_name="churn", partition_key="p"))
    new = factories.frame(NEW_ROWS, seed=9, start=10_000).astype({"f1": str})
    new.loc[: BAD_ROWS - 1, "f1"] = "n/a"
    path = factories.write_parquet(tmp_path / "new.parquet", new, row_group_size=1000)
    assert first.run_id is not None
    return path, first.run_id


@pytest.mark.parametrize("kill", KILLS)
def test_sigkill_at_each_point_publishes_exactly_once(kill: str, settings: Settings, scene: tuple[Path, int],
                                                     cli_env: dict[str, str], database_url: str) -> None:
    path, first = scene
    seen: set[tuple[int, int]] = set()
    done = threading.Event()

    def poll() -> None:
        # as an analyst's session reads (repeatable read, `store.roles`) and the lookup API's do
        with psycopg.connect(database_url, autocommit=True, options=READER_OPTIONS) as reader:
            while not done.is_set():
                seen.update(whole_runs(reader))

    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "store", "score", str(path), "--model", "churn", "--partition", "p"],
            env={**cli_env, "PREDSTORE_FAULT_POINT": kill}, capture_output=True, text=True, timeout=120)
    finally:
        done.set()
        watcher.join(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"{kill} was never reached:\n{proc.stderr}"
    new_rows = NEW_ROWS - BAD_ROWS
    assert seen <= {(OLD_ROWS, 1), (new_rows, 1)}, seen  # one whole run at a time, never part of one

    with psycopg.connect(database_url, autocommit=True) as conn:
        statuses: dict[int, str] = dict(
            conn.execute("SELECT run_id, status FROM runs WHERE run_id > %s", [first]).fetchall())
        committed = kill == "committed"
        assert set(statuses.values()) <= ({"published"} if committed else {"running"}), statuses
        served = conn.execute("SELECT count(*), min(run_id) FROM published_predictions").fetchone()
        assert served == ((new_rows, max(statuses)) if committed else (OLD_ROWS, first))

        again = score_partition(settings, ScoreRequest(path=path, model_name="churn", partition_key="p",
                                                       max_reject_fraction=0.05))
        assert again.status == ("skipped" if committed else "published"), again.message
        once_more = score_partition(settings, ScoreRequest(path=path, model_name="churn", partition_key="p"))
        assert once_more.status == "skipped"
        check_ledger(conn)
        [(run_id, rows, rejected)] = conn.execute("SELECT run_id, rows_scored - rows_duplicate, rows_rejected "
                                                  "FROM runs WHERE status = 'published'").fetchall()
        assert (rows, rejected) == (new_rows, BAD_ROWS)
        assert conn.execute("SELECT count(*) FROM published_predictions").fetchone() == (new_rows,)
        assert conn.execute("SELECT count(*) FROM rejected_rows WHERE run_id = %s", [run_id]).fetchone() == (BAD_ROWS,)
        abandoned = [r for r, s in conn.execute("SELECT run_id, status FROM runs") if s == "abandoned"]
        assert abandoned == ([] if committed else [r for r in statuses]), abandoned
    assert verify_run(settings, run_id)["match"]


# -- the scheduler killed mid-job ---------------------------------------------------------------

@pytest.mark.parametrize(("kill", "ledger_after"), [("copy", ["abandoned", "published"]),
                                                    ("committed", ["published"])])
def test_a_scheduler_killed_mid_job_scores_the_partition_exactly_once_after_restart(
        kill: str, ledger_after: list[str], settings: Settings, tmp_path: Path, cli_env: dict[str, str],
        database_url: str) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    incoming = tmp_path / "incoming"
    factories.write_parquet(incoming / ".p1.parquet", factories.frame(3000), row_group_size=1000).rename(
        incoming / "p1.parquet")
    config = tmp_path / "schedule.toml"
    config.write_text('[jobs.arrive]\nkind = "score"\nmodel = "churn"\ninput = "incoming/*.parquet"\n'
                      "on_arrival = true\npoll_interval = 0.2\n")
    command = [sys.executable, "-m", "store", "schedule", "--config", str(config)]
    killed = subprocess.run(command, env={**cli_env, "PREDSTORE_FAULT_POINT": kill}, capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    log = tmp_path / "restart.log"
    with log.open("wb") as out:
        again = subprocess.Popen(command, env=cli_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM runs WHERE status = 'published'").fetchone() != (1,) \
                    or "scheduler started" not in log.read_text():
                assert time.monotonic() < deadline and again.poll() is None, log.read_text()
                time.sleep(0.1)
            time.sleep(1.0)  # several more polls find nothing new to score
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=60) == 0, log.read_text()
            statuses = [s for (s,) in conn.execute("SELECT status FROM runs ORDER BY run_id")]
            assert statuses == ledger_after
            firings = [s for (s,) in conn.execute("SELECT status FROM job_firings ORDER BY firing_id")]
            assert firings == (["abandoned", "succeeded"] if kill == "copy" else ["abandoned"])
            assert conn.execute("SELECT count(*) FROM published_predictions").fetchone() == (3000,)
    finally:
        if again.poll() is None:
            again.kill()
            again.wait(10)
    assert "Traceback" not in log.read_text()


# -- an exception (not SIGKILL) at each point ----------------------------------------------------

#: Points reached in the run's own control flow; an error at any of them before the publish COMMIT
#: fails the run cleanly, after it leaves the run published.
RAISES = [f"{p}:raise" for p in POINTS if p != "fingerprint"] + ["published:interrupt", "committed:interrupt"]


@pytest.fixture
def armed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Arm a fault point in this process (an exception needs no process of its own to die)."""
    def arm(fault: str) -> None:
        monkeypatch.setenv(faults.ENV, fault)
        faults.armed.cache_clear()
        faults._hits.clear()

    yield arm
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.armed.cache_clear()
    faults._hits.clear()


@pytest.mark.parametrize("fault", RAISES)
def test_an_exception_at_each_point_fails_the_run_or_keeps_it_published(
        fault: str, settings: Settings, scene: tuple[Path, int], cli_env: dict[str, str], database_url: str,
        armed: Callable[[str], None], caplog: pytest.LogCaptureFixture) -> None:
    path, first = scene
    armed(fault)
    result = CliRunner().invoke(main, ["score", str(path), "--model", "churn", "--partition", "p"], env=cli_env)
    armed("")
    point, _, action = fault.partition(":")
    committed = point == "committed"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.stderr, result.stderr
    if action == "interrupt":
        assert result.exit_code == 130 and result.stderr.endswith("predstore: interrupted\n"), result.stderr
    elif committed:  # published, then the error: the data is served and the error logged
        assert result.exit_code == 0, result.stderr
        logged = caplog.text  # a warning logged, under pytest's logging
        assert f"was published; after that: unexpected Fault: fault injected at {point}" in logged
    else:
        assert result.exit_code == 1, result.stderr
        assert f"nothing was published: unexpected Fault: fault injected at {point}" in result.stderr

    new_rows = NEW_ROWS - BAD_ROWS
    with psycopg.connect(database_url, autocommit=True) as conn:
        statuses: dict[int, str] = dict(
            conn.execute("SELECT run_id, status FROM runs WHERE run_id > %s", [first]).fetchall())
        assert list(statuses.values()) == ["published" if committed else "failed"], statuses
        served = conn.execute("SELECT count(*), min(run_id) FROM published_predictions").fetchone()
        assert served == ((new_rows, max(statuses)) if committed else (OLD_ROWS, first))
        again = score_partition(settings, ScoreRequest(path=path, model_name="churn", partition_key="p"))
        assert again.status == ("skipped" if committed else "published"), again.message
        check_ledger(conn)
        assert conn.execute("SELECT count(*) FROM published_predictions").fetchone() == (new_rows,)


def test_a_partition_that_kills_its_scorer_is_not_retried_forever(
        settings: Settings, tmp_path: Path, cli_env: dict[str, str], database_url: str) -> None:
    """Each attempt dies (as under the OOM killer) and the scheduler restarts: the deaths count
    towards ``retries`` as failures do, so the partition is left alone once they are spent."""
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    factories.write_parquet(tmp_path / "incoming" / "p1.parquet", factories.frame(3000), row_group_size=1000)
    config = tmp_path / "schedule.toml"
    config.write_text('[jobs.arrive]\nkind = "score"\nmodel = "churn"\ninput = "incoming/*.parquet"\n'
                      "on_arrival = true\nretries = 1\nbackoff = 0.1\n")
    command = [sys.executable, "-m", "store", "schedule", "--config", str(config), "--once"]
    for _ in range(2):  # the first attempt and its one retry, each in a scheduler that dies with it
        killed = subprocess.run(command, env={**cli_env, "PREDSTORE_FAULT_POINT": "tasks_done"},
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120)
    assert after.returncode == 0, after.stderr
    assert "p1 failed 2 times with churn v1; leaving it" in after.stderr
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert [s for (s,) in conn.execute("SELECT status FROM runs ORDER BY run_id")] == ["abandoned"] * 2
