"""Champion and challenger: one pass scores both, they publish together, the labels decide."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
import pytest
import skops.io as sio
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from monitor.compare import (
    Verdict,
    compare_models,
    confidence_sequence,
    decide,
    entity_means,
    row_losses,
    t_interval,
)
from monitor.labels import ingest_labels
from predstore.cli import main
from store import RunFailed, Settings, lookups
from tests import factories

FEATURES = ["f0", "f1", "f2"]


def data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=FEATURES)
    frame["y"] = (frame.f0 + 0.5 * frame.f1 + rng.normal(scale=0.5, size=n) > 0).astype(int)
    frame.insert(0, "entity_id", [f"e{i}" for i in range(n)])
    return frame


def register(settings: Settings, tmp: Path, name: str, rows: int, *, fmt: str = "joblib") -> int:
    train = data(rows, seed=rows)
    model = LogisticRegression().fit(train[FEATURES], train["y"])
    artifact = tmp / f"{name}.{fmt}"
    if fmt == "skops":
        sio.dump(model, artifact)
    else:
        joblib.dump(model, artifact)
    train_path = tmp / f"{name}-train.parquet"
    train.drop(columns=["entity_id"]).to_parquet(train_path, index=False)
    return register_model(settings, artifact, name="churn", train_data=train_path, target="y").version


def labeled_partition(settings: Settings, tmp: Path, n: int = 4000) -> Path:
    frame = data(n, seed=99)
    factories.write_parquet(tmp / "labels.parquet", frame[["entity_id", "y"]])  # they arrive later
    return factories.write_parquet(tmp / "week.parquet", frame.drop(columns=["y"]))


def promote(settings_env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, ["models", "promote", "churn", *args], env=settings_env)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_better_challenger_is_found_better_and_promoted(settings: Settings, tmp_path: Path, cli_env: dict[str, str],
                                                          conn: psycopg.Connection) -> None:
    settings_env = cli_env
    register(settings, tmp_path, "small", rows=12)  # the current version: trained on little data
    better = register(settings, tmp_path, "large", rows=5000)
    promote(cli_env, str(better), "--as", "challenger")
    path = labeled_partition(settings, tmp_path)
    result = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert result.status == "published" and result.challenger is not None
    assert result.challenger.status == "published" and result.challenger.model_version == better
    runs = conn.execute("SELECT role, model_version, status FROM runs ORDER BY run_id").fetchall()
    assert runs == [("current", 1, "published"), ("challenger", 2, "published")]
    # served by default: the current version; asked by version: the challenger
    with psycopg.connect(settings.database_url or "", autocommit=True) as reader:
        served = lookups.current_prediction(reader, "churn", "e7")
        shadow = lookups.current_prediction(reader, "churn", "e7", version=better)
    assert served is not None and shadow is not None
    assert (served.model_version, shadow.model_version) == (1, better)
    assert conn.execute("SELECT count(*) FROM current_predictions").fetchone() == (4000,)

    before = compare_models(settings, "churn")
    assert before.labeled_rows == 0 and before.verdict is Verdict.NO_LABELS and not before.verdict.promotes
    assert before.disagreement is not None and 0 <= before.disagreement["flipped_labels_share"] < 1
    waiting = CliRunner().invoke(main, ["models", "promote", "churn", "--challenger", "--if-better"], env=settings_env)
    assert waiting.exit_code == 3, waiting.output
    assert "not promoted: not yet distinguishable (no labels)" in waiting.output
    as_json = CliRunner().invoke(main, ["models", "promote", "churn", "--challenger", "--if-better", "--json"],
                                 env=settings_env)
    assert as_json.exit_code == 3, as_json.output
    outcome = json.loads(as_json.output)
    assert {k: outcome[k] for k in ("name", "alias", "before", "version", "promoted")} == {
        "name": "churn", "alias": "current", "before": 1, "version": better, "promoted": False}
    assert outcome["verdict"] == str(before.verdict) and outcome["evidence"]["labeled_rows"] == 0
    again = score_partition(settings, ScoreRequest(path=path, model_name="churn", force=True))  # the next day
    assert again.challenger is not None and again.challenger.status == "published"
    ingest_labels(settings, tmp_path / "labels.parquet", model_name="churn", entity_col="entity_id", label_col="y")
    after = compare_models(settings, "churn")
    assert after.paired_runs == 2 and after.rows == 8000 and after.entities == 4000
    assert after.labeled_rows == 8000 and after.labeled_entities == 4000  # each entity counts once
    assert after.verdict is Verdict.BETTER
    assert after.interval is not None and after.anytime_interval is not None
    assert after.anytime_interval.high < 0 and after.interval.high < 0
    assert after.anytime_interval.low < after.interval.low  # wider: valid at every look
    assert after.challenger_metric is not None and after.current_metric is not None
    assert after.challenger_metric < after.current_metric
    as_json = after.to_dict()
    assert as_json["verdict"] == "challenger better" and as_json["interval"] == [after.interval.low,
                                                                                  after.interval.high]
    assert [p["labeled_entities"] for p in as_json["history"]] == [4000]  # both runs published the same day
    page = tmp_path / "compare.html"
    shown = CliRunner().invoke(main, ["models", "compare", "churn", "--report", str(page)], env=settings_env)
    assert shown.exit_code == 0 and "challenger better: log loss difference" in shown.output
    assert "<svg" in page.read_text() and "anytime interval" in page.read_text()
    output = promote(settings_env, "--challenger", "--if-better")
    assert f"churn: current version 1 -> {better} (was the challenger): challenger better" in output
    aliases = conn.execute("SELECT alias, version FROM model_aliases ORDER BY alias").fetchall()
    assert aliases == [("current", better)]


def test_an_identical_challenger_is_not_distinguishable(settings: Settings, tmp_path: Path,
                                                        cli_env: dict[str, str]) -> None:
    register(settings, tmp_path, "a", rows=300)
    twin = register(settings, tmp_path, "a", rows=300, fmt="skops")  # the same model, saved another way
    promote(cli_env, str(twin), "--as", "challenger")
    path = labeled_partition(settings, tmp_path, n=2000)
    score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    ingest_labels(settings, tmp_path / "labels.parquet", model_name="churn", entity_col="entity_id", label_col="y")
    comparison = compare_models(settings, "churn")
    assert comparison.verdict is Verdict.UNDECIDED
    assert comparison.disagreement is not None and comparison.disagreement["flipped_labels_share"] == 0
    refused = CliRunner().invoke(main, ["models", "promote", "churn", "--challenger", "--if-better"], env=cli_env)
    assert refused.exit_code == 3 and "not promoted: not yet distinguishable" in refused.output
    too_few = CliRunner().invoke(main, ["models", "promote", "churn", "--challenger", "--if-better",
                                        "--min-labels", "5000"], env=cli_env)
    assert too_few.exit_code == 3 and "not enough labels" in too_few.output
    # the same model is never worse: within any margin it is promotable
    margin = CliRunner().invoke(main, ["models", "promote", "churn", "--challenger", "--if-better",
                                       "--margin", "0.01"], env=cli_env)
    assert margin.exit_code == 0 and "challenger not worse" in margin.output


def test_a_failing_challenger_publishes_neither(settings: Settings, tmp_path: Path, cli_env: dict[str, str],
                                                conn: psycopg.Connection) -> None:
    register(settings, tmp_path, "a", rows=300)
    path = labeled_partition(settings, tmp_path, n=500)
    first = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    artifact, train = factories.pipeline_classifier(tmp_path / "strict")  # needs a `color` the partition lacks
    strict = register_model(settings, artifact, name="churn", train_data=train, target="y").version
    promote(cli_env, str(strict), "--as", "challenger")
    with pytest.raises(RunFailed, match="lacks required column"):
        score_partition(settings, ScoreRequest(path=path, model_name="churn", force=True))
    statuses = conn.execute("SELECT role, status FROM runs ORDER BY run_id").fetchall()
    assert statuses == [("current", "published"), ("current", "failed"), ("challenger", "failed")]
    published = conn.execute("SELECT DISTINCT run_id FROM published_predictions").fetchall()
    assert published == [(first.run_id,)]
    assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'predstore_partitions'").fetchone() \
        == (1,)
    retired = CliRunner().invoke(main, ["models", "retire", "churn", "--challenger"], env=cli_env)
    assert f"challenger v{strict} retired" in retired.output
    again = score_partition(settings, ScoreRequest(path=path, model_name="churn", force=True))
    assert again.status == "published" and again.challenger is None


def test_intervals_and_verdicts() -> None:
    rng = np.random.default_rng(3)
    better = rng.normal(-0.1, 1.0, size=50_000)
    fixed, anytime = t_interval(better, 0.95), confidence_sequence(better, 0.95)
    assert fixed is not None and anytime is not None
    assert anytime.low < fixed.low < fixed.difference < fixed.high < anytime.high < 0
    assert decide(anytime, labeled=50_000, min_labels=100) is Verdict.BETTER
    same = rng.normal(0.0, 1.0, size=5_000)
    interval = confidence_sequence(same, 0.95)
    assert interval is not None and interval.low < 0 < interval.high
    assert np.isclose(interval.difference, same.mean())
    assert decide(interval, labeled=5_000, min_labels=100) is Verdict.UNDECIDED
    assert decide(interval, labeled=5_000, min_labels=10_000) is Verdict.TOO_FEW_LABELS
    assert decide(interval, labeled=5_000, min_labels=100, margin=0.5) is Verdict.NOT_WORSE
    worse = confidence_sequence(rng.normal(0.2, 1.0, size=5_000), 0.95)
    assert decide(worse, labeled=5_000, min_labels=100) is Verdict.WORSE
    assert not Verdict.WORSE.promotes and Verdict.NOT_WORSE.promotes


def test_an_entity_scored_many_times_counts_once() -> None:
    entity = np.array([0, 0, 0, 1, 2, 2])
    assert entity_means(entity, np.array([1.0, 2.0, 3.0, 5.0, 0.0, 1.0])).tolist() == [2.0, 5.0, 0.5]


def test_promote_flags_are_checked(settings: Settings, tmp_path: Path, cli_env: dict[str, str]) -> None:
    register(settings, tmp_path, "a", rows=100)
    runner = CliRunner()
    both = runner.invoke(main, ["models", "promote", "churn", "1", "--challenger"], env=cli_env)
    assert both.exit_code == 2 and "give a VERSION, or --challenger (not both)" in both.output
    same = runner.invoke(main, ["models", "promote", "churn", "1", "--as", "challenger"], env=cli_env)
    assert same.exit_code == 2 and "already the current version" in same.output
    none = runner.invoke(main, ["models", "compare", "churn"], env=cli_env)
    assert none.exit_code == 2 and "has no challenger" in none.output


def test_float_target_classes_meet_integer_labels_in_comparisons() -> None:
    losses = row_losses("classification", [0.8, 0.3], [None, None], ["1", "0"], [None, None], ["0.0", "1.0"])
    assert np.allclose(losses, [-np.log(0.8), -np.log(0.7)])
    unknown = row_losses("classification", [0.8], [None], ["maybe"], [None], ["0", "1"])
    assert np.isnan(unknown).all()  # a label that is no class is left out, not counted as a loss
