"""The scheduler as users run it: real `predstore schedule` processes against a real PostgreSQL.

Partitions arrive as Parquet files written under a dot-name and renamed into place; the runs
ledger and ``job_firings`` say what ran. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from models.register import register_model
from predstore.cli import main
from scheduler.config import load_config
from scheduler.jobs import latest_due
from store import Settings

FEATURES = ("x1", "x2")


@pytest.fixture
def model(settings: Settings, tmp_path: Path) -> str:
    """A small registered classifier, "churn"."""
    x, y = _training(300)
    path = tmp_path / "churn.joblib"
    joblib.dump(LogisticRegression().fit(x, y), path)
    register_model(settings, path, name="churn")
    return "churn"


@pytest.fixture
def slow_model(settings: Settings, tmp_path: Path) -> str:
    """A registered classifier that takes a second or two per 100,000 rows: brute-force neighbours."""
    x, y = _training(10_000)
    path = tmp_path / "slow.joblib"
    joblib.dump(KNeighborsClassifier(algorithm="brute").fit(x, y), path)
    register_model(settings, path, name="slow")
    return "slow"


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def launch(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `predstore schedule` processes (logging to files); any still alive are killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path, *args: str, name: str = "scheduler") -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "store", "schedule", "--config", str(config), *args],
                                    env=cli_env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _training(rows: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({c: rng.normal(size=rows) for c in FEATURES})
    return x, (x["x1"] + x["x2"] > 0).astype(int)


def write_partition(folder: Path, name: str, rows: int = 200, *, seed: int = 0,
                    columns: tuple[str, ...] = FEATURES) -> Path:
    """Write a partition the way producers should: under a dot-name, then renamed into place."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"entity_id": [f"{name}-{i}" for i in range(rows)],
                          **{c: rng.normal(size=rows) for c in columns}})
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.parquet"
    frame.to_parquet(partial)
    return partial.rename(folder / f"{name}.parquet")


def write_config(folder: Path, text: str) -> Path:
    path = folder / "schedule.toml"
    path.write_text(text)
    return path


def arrival_job(folder: Path, model: str, **options: float) -> Path:
    """A config with one on-arrival score job, "arrive", over ``folder/incoming``."""
    settings = "".join(f"{key} = {value}\n" for key, value in {"poll_interval": 0.2, **options}.items())
    return write_config(folder, f"""
[jobs.arrive]
kind = "score"
model = "{model}"
input = "incoming/*.parquet"
on_arrival = true
{settings}""")


def schedule_once(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "store", "schedule", "--config", str(config), "--once", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            detail = f"\n--- scheduler log ---\n{log.read_text()}" if log and log.exists() else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], log: Path, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the scheduler did not stop on {sig!r}:\n{log.read_text()}") from None


def runs(db: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
    return db.execute("SELECT run_id, partition_key, status, error FROM runs ORDER BY run_id").fetchall()


def published(db: psycopg.Connection[dict[str, Any]]) -> set[str]:
    return {r["partition_key"] for r in runs(db) if r["status"] == "published"}


def firings(db: psycopg.Connection[dict[str, Any]], job_id: str | None = None) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM job_firings WHERE %s::text IS NULL OR job_id = %s ORDER BY firing_id",
                      [job_id, job_id]).fetchall()


def test_two_schedulers_score_each_arriving_partition_exactly_once(
        model: str, tmp_path: Path, db: psycopg.Connection[dict[str, Any]],
        launch: Callable[..., subprocess.Popen[bytes]]) -> None:
    incoming = tmp_path / "incoming"
    write_partition(incoming, "p00")
    (incoming / ".corrupt.parquet").write_bytes(b"not parquet" * 100)
    (incoming / ".corrupt.parquet").rename(incoming / "corrupt.parquet")
    # An on-arrival job and a cron job (every minute, so it catches up at start) of the same model
    # over the same folder: two replicas, two jobs, one scoring per partition; and one attempt in
    # all at the corrupt one, since neither job retries.
    config = write_config(tmp_path, f"""
[jobs.arrive]
kind = "score"
model = "{model}"
input = "incoming/*.parquet"
on_arrival = true
poll_interval = 0.2
retries = 0

[jobs.sweep]
kind = "score"
model = "{model}"
input = "incoming"
cron = "* * * * *"
timezone = "UTC"
retries = 0
""")
    replicas = [launch(config, name="a"), launch(config, name="b")]
    for name in "ab":
        log = tmp_path / f"{name}.log"
        wait_until(lambda log=log: "scheduler started" in log.read_text(), timeout=30, what=f"replica {name}", log=log)
    names = [f"p{i:02}" for i in range(8)]
    for i, name in enumerate(names[1:], start=1):
        write_partition(incoming, name, seed=i)
        time.sleep(0.25)
    wait_until(lambda: published(db) == set(names), timeout=60, what="every partition published",
               log=tmp_path / "a.log")
    time.sleep(1.0)  # several more polls by both replicas find nothing to do
    assert [stop(p, tmp_path / f"{n}.log") for p, n in zip(replicas, "ab", strict=True)] == [0, 0]

    assert Counter((r["partition_key"], r["status"]) for r in runs(db)) == \
        {**{(n, "published"): 1 for n in names}, ("corrupt", "failed"): 1}
    swept = firings(db, "sweep")
    assert swept and len({f["scheduled_for"] for f in swept}) == len(swept)  # each cron firing ran once
    assert Counter(f["status"] for f in firings(db))["failed"] == 1
    assert {f["status"] for f in firings(db)} == {"succeeded", "failed"}  # and none left running
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert "job arrive fired (new data: p0" in logs and "Traceback" not in logs


def test_two_once_passes_at_the_same_time_run_a_cron_firing_once(
        model: str, tmp_path: Path, cli_env: dict[str, str], db: psycopg.Connection[dict[str, Any]]) -> None:
    for i in range(3):
        write_partition(tmp_path / "daily", f"dt=2026-03-0{i + 1}", seed=i)
    config = write_config(tmp_path, f"""
[jobs.nightly]
kind = "score"
model = "{model}"
input = "daily/dt=*.parquet"
cron = "0 2 * * *"
timezone = "Europe/Paris"
""")
    command = [sys.executable, "-m", "store", "schedule", "--config", str(config), "--once",
               "--now", "2026-03-04T02:03+01:00"]
    both = [subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == ["nightly: idle", "nightly: succeeded"]
    [firing] = firings(db)
    assert firing["scheduled_for"] == datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
    assert firing["reason"] == "cron" and firing["status"] == "succeeded"
    assert firing["details"]["summary"] == "3 published"
    assert Counter(r["status"] for r in runs(db)) == {"published": 3}

    again = schedule_once(config, cli_env, "--now", "2026-03-04T23:00+01:00")  # same day: already run
    assert again.stdout.strip() == "nightly: idle"
    next_day = schedule_once(config, cli_env, "--now", "2026-03-05T02:00+01:00")
    assert next_day.stdout.strip() == "nightly: succeeded"
    assert len(firings(db)) == 2 and len(runs(db)) == 3  # nothing new to score on the second night


def test_a_restart_catches_up_what_arrived_while_down(
        model: str, tmp_path: Path, cli_env: dict[str, str], db: psycopg.Connection[dict[str, Any]],
        launch: Callable[..., subprocess.Popen[bytes]]) -> None:
    incoming, daily = tmp_path / "incoming", tmp_path / "daily"
    write_partition(incoming, "p1", seed=1)
    write_partition(daily, "d1", seed=11)
    # A long poll interval: only the start's own scan can score what arrived while down.
    config = write_config(tmp_path, f"""
[scheduler]
misfire_grace_time = 1

[jobs.arrive]
kind = "score"
model = "{model}"
input = "incoming/*.parquet"
on_arrival = true
poll_interval = 600

[jobs.daily]
kind = "score"
model = "{model}"
input = "daily"
cron = "15 4 * * *"
timezone = "UTC"
""")
    trigger = load_config(config).job("daily").trigger()
    now = datetime.now(UTC)
    yesterday = latest_due(trigger, now - timedelta(days=1))
    first = schedule_once(config, cli_env, "--now", (now - timedelta(days=1)).isoformat())
    assert first.returncode == 0, first.stderr
    assert published(db) == {"p1", "d1"}

    write_partition(incoming, "p2", seed=2)  # while no scheduler runs
    write_partition(incoming, "p3", seed=3)
    write_partition(daily, "d2", seed=12)
    proc = launch(config)
    wait_until(lambda: published(db) == {"p1", "p2", "p3", "d1", "d2"}, timeout=60,
               what="the partitions that arrived while down", log=tmp_path / "scheduler.log")
    assert stop(proc, tmp_path / "scheduler.log") == 0

    assert Counter(r["status"] for r in runs(db)) == {"published": 5}
    daily_firings = [(f["scheduled_for"], f["reason"], f["status"]) for f in firings(db, "daily")]
    assert daily_firings == [(yesterday, "catch-up", "succeeded"), (latest_due(trigger, now), "catch-up",
                                                                    "succeeded")]
    log = (tmp_path / "scheduler.log").read_text()
    assert "job daily fired (15 4 * * * UTC; missed firing of" in log
    assert "scheduler stopped" in log


def test_a_failing_partition_is_retried_with_backoff_and_each_attempt_recorded(
        model: str, tmp_path: Path, cli_env: dict[str, str], db: psycopg.Connection[dict[str, Any]]) -> None:
    write_partition(tmp_path / "incoming", "good", seed=1)
    write_partition(tmp_path / "incoming", "bad", seed=2, columns=("x1",))  # x2 is missing
    config = arrival_job(tmp_path, model, retries=2, backoff=0.1)
    done = schedule_once(config, cli_env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == ("predstore: error: 1 of 1 jobs failed: arrive; the log above "
                                                    "and `predstore jobs` say why")
    assert "bad attempt 1 of 3 failed (will retry)" in done.stderr
    assert "retrying bad in 0.1s (attempt 2 of 3)" in done.stderr
    assert "retrying bad in 0.2s (attempt 3 of 3)" in done.stderr  # the backoff doubles
    ledger = runs(db)
    assert [r["status"] for r in ledger if r["partition_key"] == "bad"] == ["failed"] * 3
    assert all("x2" in r["error"] for r in ledger if r["partition_key"] == "bad")
    assert [r["status"] for r in ledger if r["partition_key"] == "good"] == ["published"]
    [firing] = firings(db)
    assert (firing["reason"], firing["status"], firing["attempts"]) == ("arrival", "failed", 4)
    assert firing["details"]["outcomes"]["bad"]["attempts"] == 3

    # The retries are spent: later passes leave the partition alone until it changes.
    again = schedule_once(config, cli_env)
    assert again.returncode == 0 and "bad failed 3 times with churn v1; leaving it" in again.stderr
    assert len(runs(db)) == 4
    listing = CliRunner().invoke(main, ["jobs", "--config", str(config)], env=cli_env)
    assert listing.exit_code == 0, listing.output
    assert "failed (arrival): 1 failed, 1 published" in listing.output
    write_partition(tmp_path / "incoming", "bad", seed=2)  # fixed: now with x2
    fixed = schedule_once(config, cli_env)
    assert fixed.returncode == 0, fixed.stderr
    assert published(db) == {"good", "bad"}


def test_sigterm_during_a_run_lets_it_finish_and_leaves_the_ledger_consistent(
        slow_model: str, tmp_path: Path, db: psycopg.Connection[dict[str, Any]],
        launch: Callable[..., subprocess.Popen[bytes]]) -> None:
    write_partition(tmp_path / "incoming", "big", rows=100_000)
    write_partition(tmp_path / "incoming", "later", rows=100_000, seed=1)
    config = arrival_job(tmp_path, slow_model)
    proc, log = launch(config), tmp_path / "scheduler.log"
    wait_until(lambda: any(r["status"] == "running" for r in runs(db)), timeout=30, what="a running run", log=log)
    assert stop(proc, log) == 0

    ledger = runs(db)
    assert [(r["partition_key"], r["status"]) for r in ledger] == [("big", "published")]  # finished, then stopped
    [firing] = firings(db)
    assert firing["status"] == "succeeded"
    assert firing["details"]["outcomes"]["later"]["status"] == "not started"
    assert "SIGTERM: stopping" in log.read_text()


def test_a_killed_scheduler_leaves_a_run_that_the_next_start_marks_abandoned(
        slow_model: str, tmp_path: Path, cli_env: dict[str, str], db: psycopg.Connection[dict[str, Any]],
        launch: Callable[..., subprocess.Popen[bytes]]) -> None:
    write_partition(tmp_path / "incoming", "big", rows=100_000)
    config = arrival_job(tmp_path, slow_model)
    proc, log = launch(config), tmp_path / "scheduler.log"
    wait_until(lambda: any(r["status"] == "running" for r in runs(db)), timeout=30, what="a running run", log=log)
    stop(proc, log, signal.SIGKILL)
    assert [r["status"] for r in runs(db)] == ["running"]  # its process is gone: nothing could record more

    done = schedule_once(config, cli_env)
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in runs(db)] == ["abandoned", "published"]
    assert [f["status"] for f in firings(db)] == ["abandoned", "succeeded"]
    assert "was left running by a process that died; marked abandoned" in done.stderr
