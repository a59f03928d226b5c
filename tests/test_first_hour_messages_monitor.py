"""The first hour with the monitor, said plainly: labels left out counted by what was wrong, a
model without a baseline, a monitor config naming a feature the model lacks, and `models
compare` printing numbers as numbers."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from models.register import register_model
from predstore.cli import main
from store import Settings
from tests import factories


def test_labels_left_out_are_counted_by_what_was_wrong(settings: Settings, tmp_path: Path, cli_env: dict[str, str],
                                                       conn: psycopg.Connection) -> None:
    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    truth = [str(float(i)) for i in range(10)]
    truth[3] = "many"
    at = ["2026-01-05T12:00:00"] * 10
    at[5], at[6], at[8] = "yesterday", "", "last week"
    path = tmp_path / "labels.csv"
    pd.DataFrame({"id": [f"e{i}" for i in range(10)], "truth": truth, "at": at}).to_csv(path, index=False)
    args = ["labels", "ingest", str(path), "--model", "amount", "--entity-col", "id", "--label-col", "truth",
            "--time-col", "at"]
    result = CliRunner().invoke(main, args, env=cli_env)
    assert result.exit_code == 0, result.output
    summary = result.stdout.strip().splitlines()[0]
    assert "3 skipped (missing time: 1 (row 7); unreadable time: 2, e.g. 'yesterday' (row 6)), " \
           "1 not a number (e.g. 'many', row 4): kept, but never compared with a prediction" in summary, summary
    # stored as text (a later version may classify), never as a value a regressor is judged on
    assert conn.execute("SELECT count(*), count(label_value) FROM labels").fetchone() == (7, 6)
    counts = json.loads(CliRunner().invoke(main, [*args, "--json"], env=cli_env).stdout)
    assert counts["skipped"] == 3
    assert counts["skipped_by"] == {"missing time": {"rows": 1, "example": None, "row": 7},
                                    "unreadable time": {"rows": 2, "example": "yesterday", "row": 6}}
    assert counts["not_a_number"] == {"rows": 1, "example": "many", "row": 4}


def test_the_monitor_says_a_model_without_a_baseline_cannot_be_checked_for_drift(
        settings: Settings, tmp_path: Path, cli_env: dict[str, str]) -> None:
    artifact, _ = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn")  # no --train-data: no baseline
    path = factories.write_parquet(tmp_path / "day.parquet", factories.frame(50))
    runner = CliRunner()
    assert runner.invoke(main, ["score", str(path), "--model", "churn"], env=cli_env).exit_code == 0
    result = runner.invoke(main, ["monitor", "--model", "churn"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "churn: v1 has no baseline (it was registered without --train-data), so drift cannot be checked" \
        in result.stdout, result.stdout
    assert "nothing new to check" not in result.stdout


def test_a_monitor_config_naming_a_feature_the_model_lacks_is_warned_of(
        settings: Settings, tmp_path: Path, cli_env: dict[str, str]) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    config = tmp_path / "monitor.toml"
    config.write_text("[features.f00]\npsi = [0.1, 0.25]\n\n[features.f1]\npsi = [0.1, 0.25]\n\n"
                      "[features.nosuch]\nks = [0.1, 0.2]\n")
    env = {**cli_env, "PREDSTORE_MONITOR_CONFIG": str(config), "PREDSTORE_ALERT_WEBHOOK": ""}
    result = CliRunner().invoke(main, ["monitor", "--model", "churn"], env=env)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: the monitor config's [features.f00] (did you mean 'f0'?), [features.nosuch] "
                        "name(s) no feature of churn, so their thresholds apply to none of its columns; its features: "
                        "f0, f1, f2"], result.stderr
    config.write_text("[features.f1]\npsi = [0.1, 0.25]\n")
    quiet = CliRunner().invoke(main, ["monitor", "--model", "churn"], env=env)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_models_compare_prints_plain_numbers(settings: Settings, tmp_path: Path, cli_env: dict[str, str]) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400, 3)), columns=factories.FEATURES)
    frame["y"] = (frame.f0 + rng.normal(scale=0.5, size=400) > 0).astype(int)
    for name, rows in (("a", 100), ("b", 400)):
        model = LogisticRegression().fit(frame[factories.FEATURES][:rows], frame["y"][:rows])
        artifact = tmp_path / f"{name}.joblib"
        joblib.dump(model, artifact)
        train = tmp_path / f"{name}-train.parquet"
        frame[:rows].to_parquet(train, index=False)
        register_model(settings, artifact, name="churn", train_data=train, target="y")
    runner = CliRunner()
    assert runner.invoke(main, ["models", "promote", "churn", "2", "--as", "challenger"], env=cli_env).exit_code == 0
    path = factories.write_parquet(tmp_path / "day.parquet", factories.frame(300, seed=7))
    assert runner.invoke(main, ["score", str(path), "--model", "churn"], env=cli_env).exit_code == 0
    result = runner.invoke(main, ["models", "compare", "churn"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "np." not in result.stdout and "float64" not in result.stdout, result.stdout
    shown = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in result.stdout.splitlines()[1:-1]}
    current, challenger = shown["output_psi_vs_baseline"].split(", ")
    assert current.startswith("current ") and float(current.split()[1]) >= 0
    assert challenger.startswith("challenger ") and float(challenger.split()[1]) >= 0
    assert shown["disagreement"].startswith("mean_abs_prediction_difference ")
    assert (shown["paired_runs"], shown["current_metric"], shown["interval"]) == ("1", "-", "-")
