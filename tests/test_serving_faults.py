"""A real `predstore` killed at the flip of a promotion or of a snapshot: the old answers are served
until the decision commits, and running the command again finishes the work."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from batch.runner import ScoreRequest, score_partition
from models.promotion import promote_model
from models.register import register_model
from store import Settings, lookups
from tests import factories


def served(database_url: str, *entities: str) -> list[tuple[int, bool] | None]:
    """(version, version_current) of what the lookup API answers for each entity, None for a 404."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = [lookups.current_prediction(conn, "churn", e) for e in entities]
    return [None if p is None else (p.model_version, p.version_current) for p in found]


def predstore(cli_env: dict[str, str], *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**cli_env, **({"PREDSTORE_FAULT_POINT": fault} if fault else {})}
    return subprocess.run([sys.executable, "-m", "store", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def two_versions(settings: Settings, tmp_path: Path) -> Path:
    """churn v1 current and v2 challenger, both having scored partition p (e0..e299)."""
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    artifact, train = factories.logistic(tmp_path / "m2", seed=1)
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    promote_model(settings, "churn", 2, alias="challenger")
    path = factories.write_parquet(tmp_path / "p.parquet", factories.frame(300))
    first = score_partition(settings, ScoreRequest(path=path, model_name="churn", partition_key="p"))
    assert first.status == "published"
    return path


def test_a_promotion_killed_before_it_commits_changes_nothing_served(
        two_versions: Path, cli_env: dict[str, str], database_url: str) -> None:
    assert served(database_url, "e0", "e299") == [(1, True), (1, True)]
    killed = predstore(cli_env, "models", "promote", "churn", "--challenger", fault="promoted")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert served(database_url, "e0", "e299") == [(1, True), (1, True)]
    done = predstore(cli_env, "models", "promote", "churn", "--challenger")
    assert done.returncode == 0, done.stderr
    assert served(database_url, "e0", "e299") == [(2, True), (2, True)]
    rollback = predstore(cli_env, "models", "promote", "churn", "1", fault="promoted")
    assert rollback.returncode == -signal.SIGKILL
    assert served(database_url, "e0") == [(2, True)]
    assert predstore(cli_env, "models", "promote", "churn", "1").returncode == 0
    assert served(database_url, "e0") == [(1, True)]


@pytest.mark.parametrize("kill", ["published", "committed"])
def test_a_snapshot_killed_at_its_flip_serves_old_or_new_whole_and_the_next_command_finishes(
        kill: str, settings: Settings, tmp_path: Path, cli_env: dict[str, str], database_url: str) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    old = factories.write_parquet(tmp_path / "jan.parquet", factories.frame(300))
    first = score_partition(settings, ScoreRequest(path=old, model_name="churn", partition_key="jan"))
    assert first.status == "published"
    everyone = factories.write_parquet(tmp_path / "all.parquet", factories.frame(200))  # e200..e299 closed
    killed = predstore(cli_env, "score", str(everyone), "--model", "churn", "--partition", "all", "--snapshot",
                       fault=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = served(database_url, "e0", "e250")
    assert after == ([(1, True), (1, True)] if kill == "published" else [(1, True), None])
    again = predstore(cli_env, "score", str(everyone), "--model", "churn", "--partition", "all", "--snapshot")
    assert again.returncode == 0, again.stderr
    assert served(database_url, "e0", "e199", "e250") == [(1, True), (1, True), None]
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'predstore_serving'").fetchone()
        assert tables == (1,)  # the segment tables the snapshot replaced are gone
