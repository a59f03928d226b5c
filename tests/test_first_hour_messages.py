"""What a user meets in the first hour, said in one line that names what was wrong and what to do:
scoring (a mistyped --entity-col, a CSV's n/a, dt= folders read as one), registering an unfitted
model, promoting without a challenger, scoping an API key to a mistyped model, and a store made
by mistake in another folder. The monitor's and labels' messages are in
`tests/test_first_hour_messages_monitor.py`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import joblib
import psycopg
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from predstore.cli import main
from store import Settings
from tests import factories


@pytest.fixture
def churn(settings: Settings, tmp_path: Path) -> Path:
    """"churn": a LogisticRegression on f0, f1, f2, registered with its training data."""
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    return artifact


def one_error_line(result: object) -> str:
    """The single "predstore: error: ..." line a command wrote on stderr."""
    stderr = getattr(result, "stderr", "")
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("predstore: error: "), stderr
    return lines[0]


def test_a_mistyped_entity_col_is_refused_on_content_already_scored(
        churn: Path, tmp_path: Path, cli_env: dict[str, str], conn: psycopg.Connection) -> None:
    path = factories.write_parquet(tmp_path / "day.parquet", factories.frame(50))
    runner = CliRunner()
    first = runner.invoke(main, ["score", str(path), "--model", "churn"], env=cli_env)
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, ["score", str(path), "--model", "churn", "--entity-col", "entity_idd"], env=cli_env)
    assert again.exit_code == 1, again.output
    line = one_error_line(again)
    assert "no column 'entity_idd'" in line and "did you mean 'entity_id'?" in line, line
    assert "skipped" not in again.output
    assert conn.execute("SELECT status FROM runs ORDER BY run_id").fetchall() == [("published",)]
    # the right column, or none (the model's), still skips what is already published
    same = runner.invoke(main, ["score", str(path), "--model", "churn", "--entity-col", "entity_id"], env=cli_env)
    assert same.exit_code == 0 and "skipped: run 1 already published" in same.output, same.output


def test_a_mistyped_entity_col_on_new_content_suggests_the_nearest_column(
        churn: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    path = factories.write_parquet(tmp_path / "day.parquet", factories.frame(50))
    result = CliRunner().invoke(main, ["score", str(path), "--model", "churn", "--entity-col", "entityid"],
                                env=cli_env)
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    assert "no column 'entityid'" in line and "did you mean 'entity_id'?" in line, line
    assert "pass --entity-col" not in line  # the user did


def test_a_csv_value_na_is_a_missing_value_not_a_missing_column(
        churn: Path, tmp_path: Path, cli_env: dict[str, str], conn: psycopg.Connection) -> None:
    data = factories.frame(20).astype({"f0": object})
    data.loc[3, "f0"] = "n/a"
    path = tmp_path / "day.csv"
    data[["entity_id", *factories.FEATURES]].to_csv(path, index=False)
    result = CliRunner().invoke(main, ["score", str(path), "--model", "churn", "--max-reject-fraction", "0.5"],
                                env=cli_env)
    assert result.exit_code == 0, result.output
    reasons = conn.execute("SELECT reason FROM rejected_rows").fetchall()
    assert reasons == [("column 'f0' has no value (empty, null, NA or n/a)",)]


def test_scoring_the_parent_of_dt_folders_warns_that_the_days_are_one_partition(
        settings: Settings, churn: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "events"
    for day, seed in (("2026-01-01", 1), ("2026-01-02", 2)):
        factories.write_parquet(root / f"dt={day}" / "part-0.parquet", factories.frame(20, seed=seed, start=seed * 100))
    with caplog.at_level(logging.WARNING, logger="predstore.store.reader"):
        merged = score_partition(settings, ScoreRequest(path=root, model_name="churn"))
    assert merged.status == "published" and merged.rows_in == 40
    warned = [r.getMessage() for r in caplog.records if r.name == "predstore.store.reader"]
    assert len(warned) == 1, warned
    assert "2 Hive-style folders (dt=2026-01-01 ... dt=2026-01-02)" in warned[0]
    assert "read as one partition 'events'" in warned[0] and "--partition" in warned[0]
    assert f"{root}/dt=2026-01-01" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="predstore.store.reader"):  # meant: no warning
        score_partition(settings, ScoreRequest(path=root, model_name="churn", partition_key="events", force=True))
        score_partition(settings, ScoreRequest(path=root / "dt=2026-01-01", model_name="churn"))
    assert [r for r in caplog.records if r.name == "predstore.store.reader"] == []


def test_an_unfitted_estimator_is_said_to_be_unfitted(settings: Settings, tmp_path: Path,
                                                      cli_env: dict[str, str]) -> None:
    artifact = tmp_path / "raw.joblib"
    joblib.dump(LogisticRegression(), artifact)
    _, train = factories.logistic(tmp_path / "m")
    for extra in ([], ["--train-data", str(train), "--target", "y"]):
        result = CliRunner().invoke(main, ["models", "register", str(artifact), "--name", "churn", "--trust-joblib",
                                           *extra], env=cli_env)
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert "raw.joblib holds a LogisticRegression that is not fitted" in line, line
        assert "column names" not in line.split("; ")[0]


def test_promoting_a_missing_challenger_says_how_to_make_one(churn: Path, cli_env: dict[str, str],
                                                             conn: psycopg.Connection) -> None:
    result = CliRunner().invoke(main, ["models", "promote", "churn", "--challenger"], env=cli_env)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "model 'churn' has no challenger" in line
    assert "`predstore models promote churn VERSION --as challenger`" in line, line
    assert conn.execute("SELECT alias, version FROM model_aliases").fetchall() == [("current", 1)]


def test_an_api_key_for_a_mistyped_model_is_refused(churn: Path, cli_env: dict[str, str],
                                                    conn: psycopg.Connection) -> None:
    result = CliRunner().invoke(main, ["apikeys", "create", "checkout", "--model", "chrun"], env=cli_env)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "no model named 'chrun' is registered" in line and "did you mean 'churn'?" in line, line
    assert "registered: 'churn'" in line
    assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
    scoped = CliRunner().invoke(main, ["apikeys", "create", "checkout", "--model", "churn"], env=cli_env)
    assert scoped.exit_code == 0, scoped.output


def test_a_model_missing_from_the_embedded_store_names_its_folder(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Run from another folder, a command opens (and makes) the store there: the message says which."""
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    path = factories.write_parquet(elsewhere / "day.parquet", factories.frame(10))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    try:
        done = subprocess.run([sys.executable, "-m", "store", "score", str(path), "--model", "churn"], env=env,
                              cwd=elsewhere, capture_output=True, text=True, timeout=180)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert f"no model named 'churn' is registered in the store at {elsewhere / '.predstore'};" in line, line
        assert "PREDSTORE_HOME" in line
    finally:
        subprocess.run([sys.executable, "-m", "store", "db", "stop"], env=env, cwd=elsewhere, capture_output=True,
                       timeout=60)
    # A store the user named by URL is theirs to know: the message is as before.
    named = CliRunner().invoke(main, ["score", str(path), "--model", "churn"], env=cli_env)
    assert one_error_line(named) == ("predstore: error: no model named 'churn' is registered; "
                                     "see `predstore models list`")
