"""Point-in-time training sets: each labeled prediction once, with the features its run read, equal
row for row to a join done by hand; a changed or missing partition is an error naming it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner

import predstore
from batch.runner import ScoreRequest, score_partition
from models.promotion import promote_model
from models.register import register_model
from monitor.labels import ingest_labels
from monitor.runner import run_monitor
from predstore.cli import main
from store import Settings
from store.errors import InputError, NotFound
from tests import factories

MODEL = "churn"


def published_at(url: str, run_id: int) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT published_at FROM runs WHERE run_id = %s", [run_id]).fetchone()
    assert row is not None
    return row[0]


def labels(settings: Settings, tmp: Path, name: str, frame: pd.DataFrame) -> None:
    path = factories.write_parquet(tmp / f"{name}.parquet", frame)
    ingest_labels(settings, path, model_name=MODEL, entity_col="entity_id", label_col="y", time_col="event_time")


@pytest.fixture
def scored(settings: Settings, database_url: str, tmp_path: Path) -> dict[str, object]:
    """Partition p scored twice with different content (e0..e59 re-scored; a duplicate id in the second),
    a challenger scoring beside the second run, and labels before and after the re-score, one of them
    corrected."""
    artifact, train = factories.boosted_pipeline(tmp_path / "m")
    register_model(settings, artifact, name=MODEL, train_data=train, target="y")
    first = factories.frame(80, seed=1)
    second = factories.frame(60, seed=2)
    second = pd.concat([second, second.iloc[[5]].assign(f0=99.0)], ignore_index=True)  # e5 twice: the last kept
    paths = {"a": factories.write_parquet(tmp_path / "a" / "p.parquet", first),
             "b": factories.write_parquet(tmp_path / "b" / "p.parquet", second)}
    run1 = score_partition(settings, ScoreRequest(path=paths["a"], model_name=MODEL, partition_key="p"))
    challenger, challenger_train = factories.logistic(tmp_path / "c")
    register_model(settings, challenger, name=MODEL, train_data=challenger_train, target="y")
    promote_model(settings, MODEL, 2, alias="challenger")
    run2 = score_partition(settings, ScoreRequest(path=paths["b"], model_name=MODEL, partition_key="p"))
    t1, t2 = (published_at(settings.database_url or "", r.run_id) for r in (run1, run2))
    between = t1 + (t2 - t1) / 2  # labels of e0..e39 at a time between the runs, ingested after both: run 1's
    early = first.iloc[:40][["entity_id", "y"]].assign(event_time=between)
    late = second.iloc[:60][["entity_id", "y"]].assign(event_time=t2 + timedelta(minutes=1))
    labels(settings, tmp_path, "early", early)
    labels(settings, tmp_path, "late", late)
    run_monitor(settings, MODEL)
    corrected = late.iloc[[3]].assign(y=1 - late.iloc[3]["y"])  # e3's late label corrected
    labels(settings, tmp_path, "corrected", corrected)
    run_monitor(settings, MODEL)
    return {"first": first, "second": second, "early": early, "late": late, "corrected": corrected,
            "runs": (run1.run_id, run2.run_id), "paths": paths}


def by_hand(scored: dict[str, object]) -> pd.DataFrame:
    """The expected set: each label with the features of the run in force at its time."""
    first, second = scored["first"], scored["second"]
    assert isinstance(first, pd.DataFrame) and isinstance(second, pd.DataFrame)
    run1, run2 = scored["runs"]  # type: ignore[misc]
    late = scored["late"].copy()  # type: ignore[attr-defined]
    fix = scored["corrected"]
    late.loc[late["entity_id"] == fix["entity_id"].iloc[0], "y"] = fix["y"].iloc[0]  # type: ignore[index]
    kept = second.drop_duplicates("entity_id", keep="last")
    parts = [scored["early"].merge(first.drop(columns=["y"]), on="entity_id").assign(run_id=run1),  # type: ignore[attr-defined]
             late.merge(kept.drop(columns=["y"]), on="entity_id").assign(run_id=run2)]
    return pd.concat(parts, ignore_index=True)


def test_the_training_set_equals_a_point_in_time_join_by_hand(settings: Settings, scored: dict[str, object]) -> None:
    store = predstore.Store(url=settings.database_url, home=settings.home)
    found = store.training_set(MODEL)
    expected = by_hand(scored)
    assert len(found) == len(expected) == 100  # 40 early labels, 60 late ones; challenger rows not in it
    assert found.duplicated(["entity_id", "event_time"]).sum() == 0
    key = ["entity_id", "event_time"]
    got = found.sort_values(key).reset_index(drop=True)
    want = expected.sort_values(key).reset_index(drop=True)
    assert list(got["run_id"]) == list(want["run_id"])
    for column in factories.FEATURES + ["color"]:
        assert list(got[column]) == list(want[column]), column
    assert list(got["label"]) == [str(v) for v in want["y"]]
    e5 = got[(got["entity_id"] == "e5") & (got["run_id"] == scored["runs"][1])]  # type: ignore[index]
    assert list(e5["f0"]) == [99.0]  # the duplicate the run kept
    assert set(got["model_version"]) == {1}
    assert set(got.columns[:2]) == {"entity_id", "f0"}  # the entity, then the features in the schema's order
    window = store.training_set(MODEL, since=scored["late"]["event_time"].iloc[0])  # type: ignore[index]
    assert len(window) == 60 and set(window["run_id"]) == {scored["runs"][1]}  # type: ignore[index]


def test_a_changed_or_missing_partition_is_an_error_naming_it(settings: Settings, scored: dict[str, object]) -> None:
    store = predstore.Store(url=settings.database_url, home=settings.home)
    path = scored["paths"]["a"]  # type: ignore[index]
    factories.write_parquet(path, factories.frame(80, seed=7))
    with pytest.raises(InputError, match=r"partition 'p' .* has changed since run \d+ scored it"):
        store.training_set(MODEL)
    path.unlink()
    with pytest.raises(NotFound, match=r"partition 'p' of run \d+ cannot be read back"):
        store.training_set(MODEL)


def test_the_command_writes_parquet(settings: Settings, scored: dict[str, object], cli_env: dict[str, str],
                                    tmp_path: Path) -> None:
    out = tmp_path / "set.parquet"
    result = CliRunner().invoke(main, ["training-set", MODEL, "--out", str(out)], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "wrote 100 labeled predictions of 2 runs of churn" in result.output
    assert len(pd.read_parquet(out)) == 100
    missing = CliRunner().invoke(main, ["training-set", "nope", "--out", str(out)], env=cli_env)
    assert missing.exit_code != 0 and "no model named 'nope'" in missing.output
