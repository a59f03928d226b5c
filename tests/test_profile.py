"""Baselines and run profiles: bins fixed at registration, counted the same way for every run."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
from click.testing import CliRunner

from batch.runner import ScoreRequest, score_partition
from models import profile
from models.predict import Scores
from models.register import register_model
from predstore.cli import main
from store import Settings
from store.features import FeatureSchema
from store.profiles import get_baseline, get_run_profiles
from tests import factories


def test_numeric_bins_match_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=5000)
    base = profile._numeric_baseline("x", "feature", train)
    edges = np.asarray(base["edges"])
    assert len(edges) == profile.NUM_BINS + 1 and sum(base["counts"]) == 5000
    batch = np.concatenate([rng.normal(0.5, 1.2, size=3000), [np.nan] * 7, [edges[0] - 1, edges[-1] + 1]])
    counted = profile.count_numeric(batch, base["edges"])
    present = batch[~np.isnan(batch)]
    expected = [int((present < edges[0]).sum())]
    expected += [int(((present >= lo) & (present < hi)).sum()) for lo, hi in zip(edges[:-2], edges[1:-1], strict=True)]
    expected += [int(((present >= edges[-2]) & (present <= edges[-1])).sum()), int((present > edges[-1]).sum())]
    assert counted["counts"] == expected
    index = np.searchsorted(edges, present, side="right")
    index[present == edges[-1]] = len(edges) - 1
    assert np.allclose(counted["sums"], [present[index == i].sum() for i in range(len(edges) + 1)], rtol=1e-12)
    assert counted["null_count"] == 7 and counted["n"] == len(present)
    assert counted["sum"] == sum(present.tolist()) or np.isclose(counted["sum"], present.sum())


def test_constant_and_empty_columns_have_defined_bins() -> None:
    constant = profile._numeric_baseline("c", "feature", np.full(10, 3.0))
    assert constant["edges"] == [3.0, 3.0] and constant["counts"] == [0, 10, 0]
    assert profile.count_numeric(np.array([2.0, 3.0, 4.0]), constant["edges"])["counts"] == [1, 1, 1]
    empty = profile._numeric_baseline("e", "feature", np.full(4, np.nan))
    assert empty["edges"] == [] and empty["null_count"] == 4
    assert profile.count_numeric(np.array([1.0, np.nan]), empty["edges"])["counts"] == [1]


def test_categories_count_other_and_unseen() -> None:
    base = profile._categorical_baseline("color", "feature", pd.Series(["a"] * 5 + ["b"] * 3 + [None]))
    assert base["categories"] == ["a", "b"] and base["counts"] == [5, 3, 0] and base["null_count"] == 1
    counted = profile.count_categorical(np.array(["a", "z", None, "c"], dtype=object), ["a", "b"], ["a", "b", "c"])
    assert counted["counts"] == [1, 0, 2] and counted["unseen"] == 1 and counted["null_count"] == 1


def test_profiles_add_up_across_batches() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=1000), "k": rng.choice(["p", "q", "r"], size=1000)})
    schema = FeatureSchema.from_json(
        {"columns": [{"name": "x", "kind": "numeric"}, {"name": "k", "kind": "categorical"}]})
    scores = Scores(prediction=rng.random(1000))
    base = profile.baseline(frame, schema, scores)
    whole = profile.profile_features(frame, base, {"k": ["p", "q", "r"]})
    halves = profile.add(profile.profile_features(frame.iloc[:400], base, {"k": ["p", "q", "r"]}),
                         profile.profile_features(frame.iloc[400:], base, {"k": ["p", "q", "r"]}))
    for name in whole:
        for key, value in whole[name].items():
            close = isinstance(value, float) or (key == "sums" and value is not None)
            assert np.allclose(halves[name][key], value, rtol=1e-12) if close else halves[name][key] == value, \
                (name, key)


def test_registration_freezes_a_baseline_and_runs_are_profiled(settings: Settings, tmp_path: Path,
                                                               conn: psycopg.Connection) -> None:
    artifact, train = factories.pipeline_classifier(tmp_path / "m")
    register_model(settings, artifact, name="pipe", train_data=train, target="y")
    base = get_baseline(conn, "pipe", 1)
    assert [b["column_name"] for b in base] == [*factories.FEATURES, "color", profile.PREDICTION, profile.LABEL]
    assert all(sum(b["counts"]) + b["null_count"] == 500 for b in base)
    data = factories.frame(3000, seed=4, shift=0.5)
    path = factories.write_parquet(tmp_path / "p.parquet", data, row_group_size=1000)
    run = score_partition(settings, ScoreRequest(path=path, model_name="pipe"))
    summed = get_run_profiles(conn, [run.run_id])  # type: ignore[list-item]
    f0 = next(b for b in base if b["column_name"] == "f0")
    assert summed["f0"]["counts"] == profile.count_numeric(data["f0"].to_numpy(), f0["edges"])["counts"]
    assert sum(summed[profile.PREDICTION]["counts"]) == 3000
    assert sum(summed[profile.LABEL]["counts"]) == 3000
    assert summed["color"]["unseen"] == 0


def test_the_output_baseline_comes_from_held_out_rows(settings: Settings, tmp_path: Path, cli_env: dict[str, str],
                                                      conn: psycopg.Connection) -> None:
    """--validation-data profiles the outputs on the validation rows, --baseline-cv on out-of-fold
    predictions; without either they are in-sample, and the registration and `models show` say so."""
    artifact, train = factories.pipeline_classifier(tmp_path / "m")
    validation = factories.write_parquet(tmp_path / "v.parquet",
                                         factories.frame(700, seed=9)[[*factories.FEATURES, "color", "y"]])
    runner = CliRunner()
    said = {}
    for name, extra in (("held", ["--validation-data", str(validation)]), ("cv", ["--baseline-cv", "3"]),
                        ("own", [])):
        out = runner.invoke(main, ["models", "register", str(artifact), "--name", name, "--train-data", str(train),
                                   "--target", "y", "--trust-joblib", *extra], env=cli_env)
        assert out.exit_code == 0, out.output
        said[name] = out.output
    assert "output baseline: validation data" in said["held"] and "IN-SAMPLE" in said["own"]
    outputs = {name: {b["column_name"]: b for b in get_baseline(conn, name, 1) if b["role"] == "output"}
               for name in said}
    assert {b["source"] for b in outputs["held"].values()} == {"validation"}
    assert sum(outputs["held"][profile.PREDICTION]["counts"]) == 700
    assert {b["source"] for b in outputs["cv"].values()} == {"cross_validation"}
    assert outputs["cv"][profile.PREDICTION]["edges"] != outputs["own"][profile.PREDICTION]["edges"]
    assert {b["source"] for b in outputs["own"].values()} == {"in_sample"}
    shown = runner.invoke(main, ["models", "show", "own"], env=cli_env)
    assert json.loads(shown.output)[0]["output_baseline"] == "in_sample"
    refused = runner.invoke(main, ["models", "register", str(artifact), "--name", "x", "--train-data", str(train),
                                   "--target", "y", "--trust-joblib", "--baseline-cv", "1"], env=cli_env)
    assert refused.exit_code != 0 and "--baseline-cv" in refused.output and "Traceback" not in refused.output


def test_rows_rejected_for_a_missing_value_or_an_unseen_category_are_profiled(tmp_path: Path) -> None:
    """A schema that rejects missing f0 and unseen colors: those rows still count as f0's nulls
    and color's unseen categories, so a rise in either shows."""
    import pyarrow as pa

    from models.features import infer_schema
    from models.validate import validate

    artifact, train = factories.pipeline_classifier(tmp_path, handle_unknown="error")
    frame = pd.read_parquet(train).drop(columns=["y"])
    schema = infer_schema(joblib.load(artifact), frame)
    base = profile.baseline(frame, schema, Scores(prediction=np.zeros(len(frame))))
    known = {"color": ["blue", "green", "red"]}
    batch = pa.RecordBatch.from_pydict({
        "entity_id": [f"e{i}" for i in range(6)], "f0": [1.0, None, None, 0.5, 2.0, None],
        "f1": [0.0] * 6, "f2": [1.0] * 6, "color": ["red", "red", "purple", "pink", "blue", "red"],
    })
    checked = validate(batch, schema, entity_col="entity_id", first_row=0)
    assert len(checked.features) == 2  # rows 0 and 4
    counted = profile.add(profile.profile_features(checked.features, base, known),
                          profile.profile_rejects(checked.rejects, base, known))
    assert counted["f0"]["null_count"] == 3 and counted["f0"]["n"] == 2  # rows 1, 2 and 5 are missing f0
    assert counted["color"]["unseen"] == 1 and counted["color"]["n"] == 3  # 'pink' (row 2 is rejected for f0)
    assert counted["color"]["counts"][-1] == 1


def test_baselines_recorded_before_sources_and_bin_sums_still_work(database_url: str) -> None:
    """The migration marks an older baseline's outputs in-sample and leaves its bin sums NULL; the
    monitor still checks it, saying what it cannot compute."""
    from alembic import command

    from monitor import stats
    from store.migrate import alembic_config, upgrade

    command.downgrade(alembic_config(database_url), "0008")
    rng = np.random.default_rng(3)
    old = [profile._numeric_baseline("x", "feature", rng.normal(size=2000)),
           profile._numeric_baseline(profile.PREDICTION, "output", rng.random(2000))]
    columns = ("column_name", "role", "kind", "edges", "categories", "counts", "null_count", "n", "mean", "std")
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO models (name, version, artifact_uri, sha256, format, task, feature_schema) "
                     "VALUES ('old', 1, 'file:///m', 'abc', 'joblib', 'regression', '{}')")
        for b in old:
            conn.execute(f"INSERT INTO baselines (model_name, model_version, {', '.join(columns)}) "
                         f"VALUES ('old', 1, {', '.join(['%s'] * len(columns))})", [b[k] for k in columns])
    upgrade(database_url)
    with psycopg.connect(database_url) as conn:
        base = get_baseline(conn, "old", 1)
    assert [(b["source"], b["sums"]) for b in base] == [("training", None), ("in_sample", None)]
    batch = {"x": profile.count_numeric(rng.normal(size=500) + 1.0, base[0]["edges"]),
             profile.PREDICTION: profile.count_numeric(rng.random(500) * 0.5, base[1]["edges"])}
    checked = stats.check(base, batch, stats.DriftConfig())
    assert checked.drifted == ["x"] and checked.outputs_drifted == [] and checked.warnings == [profile.PREDICTION]
    assert any("in-sample" in n for n in checked.notes) and any("per-bin sums" in n for n in checked.notes)
