"""Feature types without training data: read from the model's ColumnTransformer, else assumed
numeric and read as text where a partition holds text, so no row is rejected as "not a number"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import skops.io as sio
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from batch.runner import ScoreRequest, score_partition
from models.features import infer_schema
from models.validate import validate
from predstore.cli import main
from store import Settings
from store.features import FeatureSchema
from tests import factories


def data(n: int = 300, seed: int = 0) -> pd.DataFrame:
    frame = factories.frame(n, seed=seed)
    frame["note"] = "free text the model drops"
    frame["size"] = np.random.default_rng(seed).choice(["S", "M", "L"], size=n)
    frame["code"] = np.random.default_rng(seed + 1).choice([1, 2, 3], size=n)
    return frame


def pipeline() -> object:
    """Text to encoders, a numeric column coded as categories, one column dropped, one scaled, the rest passed."""
    train = data()
    columns = ColumnTransformer([
        ("color", OneHotEncoder(handle_unknown="ignore"), ["color"]),
        ("size", make_pipeline(SimpleImputer(strategy="most_frequent"), OrdinalEncoder()), ["size"]),
        ("code", OneHotEncoder(handle_unknown="ignore"), ["code"]),
        ("scaled", StandardScaler(), ["f0"]),
        ("note", "drop", ["note"]),
    ], remainder="passthrough")
    features = ["f0", "f1", "f2", "color", "size", "code", "note"]
    return make_pipeline(columns, LogisticRegression()).fit(train[features], train["y"])


def is_red(x: pd.DataFrame) -> pd.DataFrame:
    """A transformer that takes text, and that nothing at registration can see into."""
    return (x == "red").astype(float)


def test_kinds_come_from_the_column_transformer() -> None:
    schema = infer_schema(pipeline())
    columns = {c.name: c for c in schema.columns}
    assert list(columns) == ["f0", "f1", "f2", "color", "size", "code"]  # 'note' is dropped: not required
    assert columns["color"].kind == "categorical" and columns["color"].categories == ("blue", "green", "red")
    assert columns["color"].unseen_ok is True
    assert columns["size"].kind == "categorical"
    assert columns["code"].kind == "numeric"  # its categories are numbers
    assert columns["f0"].kind == "numeric" and not columns["f0"].assumed
    assert schema.assumed_numeric == ["f1", "f2"]  # passed through: nothing says what they hold
    assert schema.kinds_from == "model"


def test_an_assumed_column_holding_text_goes_to_the_model_as_text() -> None:
    schema = FeatureSchema.from_json({"columns": [{"name": "x", "kind": "numeric", "assumed": True,
                                                   "nulls_ok": False}]})

    def checked(values: list) -> tuple[list, list]:
        batch = pa.RecordBatch.from_pydict({"entity_id": [f"e{i}" for i in range(len(values))], "x": values})
        result = validate(batch, schema, entity_col="entity_id", first_row=0)
        return result.features["x"].tolist(), [reason for _, _, reason, _ in result.rejects]

    assert checked(["red", "blue", "2"]) == (["red", "blue", "2"], [])
    assert checked(["1.5", "2", "oops"]) == ([1.5, 2.0], ["column 'x' is not a number"])
    assert checked([1.0, 2.0, 3.0]) == ([1.0, 2.0, 3.0], [])


def test_a_pipeline_registered_without_training_data_scores_its_text_columns(
        settings: Settings, cli_env: dict[str, str], tmp_path: Path, conn: psycopg.Connection) -> None:
    train = data()
    text = FunctionTransformer(is_red, feature_names_out="one-to-one")
    columns = ColumnTransformer([("color", text, ["color"])], remainder="passthrough")
    opaque = make_pipeline(columns, LogisticRegression()).fit(train[["f0", "f1", "color"]], train["y"])
    for name, model, required in [("encoded", pipeline(), "f1, f2"), ("opaque", opaque, "f0, f1, color")]:
        artifact = tmp_path / f"{name}.skops"
        sio.dump(model, artifact)
        trusted = [arg for t in sio.get_untrusted_types(file=artifact) for arg in ("--trust-type", t)]
        result = CliRunner().invoke(main, ["models", "register", str(artifact), "--name", name, *trusted],
                                    env=cli_env)
        assert result.exit_code == 0, result.output
        assert f"assumed numeric, as nothing said otherwise (a partition's text in them goes to the model as " \
               f"text): {required}" in result.output
    partition = factories.write_parquet(tmp_path / "day.parquet", data(200, seed=5).drop(columns=["note"]))
    for name in ("encoded", "opaque"):
        run = score_partition(settings, ScoreRequest(path=partition, model_name=name))
        assert (run.status, run.rows_rejected, run.rows_scored) == ("published", 0, 200), run.message


def test_measuring_a_model_reads_and_writes_nothing(tmp_path: Path) -> None:
    import joblib

    from models.register import measure

    artifact, train_path = factories.logistic(tmp_path / "m")
    model, train = joblib.load(artifact), pd.read_parquet(train_path)
    in_sample = measure(model, train, None, target="y", entity_col="customer_id")
    assert in_sample.task == "classification" and in_sample.classes == [0, 1]
    assert in_sample.schema.entity_col == "customer_id"
    assert in_sample.scores is not None and in_sample.scores["evaluated_on"] == "training data (in-sample)"
    assert in_sample.base and in_sample.calibrated is None
    held_out = measure(model, train.iloc[:300], train.iloc[300:], target="y")
    assert held_out.scores is not None and held_out.scores["evaluated_on"] == "validation data"
    assert held_out.calibrated is not None
    assert measure(model, None, None, target=None).scores is None
