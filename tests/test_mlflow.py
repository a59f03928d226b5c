"""Models from MLflow, against a real local MLflow tracking store (SQLite) made here: register by
models:/ and runs:/ URIs, score, compare as challenger, follow the aliases, refuse other flavours."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import predstore
from batch.runner import ScoreRequest, score_partition
from models.predict import score_frame
from monitor.labels import ingest_labels
from predstore.cli import main
from store import Settings
from tests import factories

mlflow = pytest.importorskip("mlflow")

COLUMNS = [*factories.FEATURES, "color"]
# MLflow's SQLite store warns of its own deprecated SQLAlchemy options.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


@dataclass(frozen=True)
class Tracking:
    """A local MLflow tracking store with the models the tests fetch."""

    uri: str
    run_id: str  # the run that logged churn's version 1 (runs:/<id>/model)
    models: dict[int, Any]  # churn's MLflow versions, fitted


def wrapper() -> Any:
    """A custom pyfunc model: its own predict, which predstore cannot score in its place."""

    class Wrapper(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: pd.DataFrame) -> Any:
            return np.zeros(len(model_input))

    return Wrapper()


def classifier(seed: int, rows: int) -> Any:
    train = factories.frame(rows, seed=seed)
    columns = ColumnTransformer([("color", OneHotEncoder(handle_unknown="ignore"), ["color"])],
                                remainder="passthrough")
    return make_pipeline(columns, LogisticRegression()).fit(train[COLUMNS], train["y"]), train[COLUMNS]


#: Logged as is: MLflow would otherwise infer them in a subprocess per model (5 s each).
PIP = ["scikit-learn"]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    """churn v1 (champion) and v2 (challenger), a cloudpickled model and a custom pyfunc one."""
    from mlflow.models import infer_signature

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice to its own users as it logs
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        experiment = mlflow.create_experiment("predstore", artifact_location=(folder / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment)
        fitted, runs = {}, []
        for version, (seed, rows) in enumerate([(0, 60), (1, 3000)], 1):
            model, frame = classifier(seed, rows)
            with mlflow.start_run() as run:
                mlflow.sklearn.log_model(model, name="model", registered_model_name="churn",
                                         signature=infer_signature(frame, model.predict(frame)), pip_requirements=PIP)
            fitted[version] = model
            runs.append(run.info.run_id)
        with mlflow.start_run():
            mlflow.sklearn.log_model(fitted[1], name="model", registered_model_name="pickled",
                                     serialization_format="cloudpickle", pip_requirements=PIP)
            mlflow.pyfunc.log_model(name="wrapper", python_model=wrapper(), registered_model_name="wrapped",
                                    pip_requirements=PIP)
        client = mlflow.MlflowClient()
        client.set_registered_model_alias("churn", "champion", 1)
        client.set_registered_model_alias("churn", "challenger", 2)
        yield Tracking(uri=uri, run_id=runs[0], models=fitted)


@pytest.fixture
def env(tracking: Tracking, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The command's environment (and this process's) pointing at the tracking store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.uri)
    return {**cli_env, "MLFLOW_TRACKING_URI": tracking.uri}


def invoke(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


def partition(tmp: Path, seed: int = 3, n: int = 400) -> tuple[Path, pd.DataFrame]:
    data = factories.frame(n, seed=seed)
    return factories.write_parquet(tmp / f"day{seed}.parquet", data[["entity_id", *COLUMNS]]), data


def test_a_model_registered_by_alias_records_its_mlflow_version_and_scores(
        env: dict[str, str], settings: Settings, tracking: Tracking, tmp_path: Path, conn: psycopg.Connection) -> None:
    result = invoke(env, "models", "register", "models:/churn@champion", "--name", "churn")
    assert result.exit_code == 0, result.output
    assert "registered churn version 1 (current)" in result.output and "from models:/churn/1" in result.output
    assert "assumed numeric" not in result.output  # the signature gave every column's type
    row = conn.execute("SELECT mlflow_uri, mlflow_version, format, feature_schema FROM models").fetchone()
    assert row is not None and row[:3] == ("models:/churn/1", 1, "skops")
    kinds = {c["name"]: c["kind"] for c in row[3]["columns"]}
    assert kinds == {"f0": "numeric", "f1": "numeric", "f2": "numeric", "color": "categorical"}
    assert row[3]["kinds_from"] == "MLflow signature"
    assert next(c for c in row[3]["columns"] if c["name"] == "color")["categories"] == ["blue", "green", "red"]

    path, data = partition(tmp_path)
    run = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert (run.status, run.rows_scored, run.rows_rejected) == ("published", 400, 0)
    rows = conn.execute("SELECT entity_id, prediction FROM published_predictions ORDER BY entity_id").fetchall()
    expected = score_frame(tracking.models[1], data).set_index(data["entity_id"])
    assert np.allclose([p for _, p in rows], expected.loc[[e for e, _ in rows], "prediction"])

    again = invoke(env, "models", "register", "models:/churn/1", "--name", "churn")  # the same bytes: no new version
    assert again.exit_code == 0 and "registered churn version 1" in again.output
    shown = json.loads(invoke(env, "models", "show", "churn").output)
    assert shown[0]["mlflow_uri"] == "models:/churn/1" and shown[0]["mlflow_version"] == 1


def test_runs_and_version_uris_register_from_python_too(env: dict[str, str], settings: Settings,
                                                        tracking: Tracking) -> None:
    store = predstore.Store(url=settings.database_url, home=settings.home)
    by_run = store.register(f"runs:/{tracking.run_id}/model", name="by-run")
    assert (by_run.mlflow_uri, by_run.mlflow_version) == (f"runs:/{tracking.run_id}/model", None)
    by_version = store.register("models:/churn/2", name="by-version", entity_col="entity_id")
    assert (by_version.mlflow_uri, by_version.mlflow_version, by_version.version) == ("models:/churn/2", 2, 1)


def test_sync_follows_the_aliases_and_the_challenger_is_compared(
        env: dict[str, str], settings: Settings, tracking: Tracking, tmp_path: Path, conn: psycopg.Connection) -> None:
    synced = invoke(env, "models", "sync", "churn", "--from-mlflow")
    assert synced.exit_code == 0, synced.output
    assert "churn: current none -> v1 (registered, MLflow champion models:/churn/1)" in synced.output
    assert "churn: challenger none -> v2 (registered, MLflow challenger models:/churn/2)" in synced.output
    path, data = partition(tmp_path, n=600)
    run = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert run.status == "published" and run.challenger is not None and run.challenger.status == "published"
    labels = factories.write_parquet(tmp_path / "labels.parquet", data[["entity_id", "y"]])
    ingest_labels(settings, labels, model_name="churn", entity_col="entity_id", label_col="y")
    compared = invoke(env, "models", "compare", "churn", "--min-labels", "50")
    assert compared.exit_code == 0, compared.output
    assert "v1 (current) against v2 (challenger)" in compared.output

    client = mlflow.MlflowClient()
    client.set_registered_model_alias("churn", "champion", 2)
    client.delete_registered_model_alias("churn", "challenger")
    try:
        moved = invoke(env, "models", "sync", "churn", "--from-mlflow")
        assert moved.exit_code == 0, moved.output
        assert "churn: current v1 -> v2 (MLflow champion models:/churn/2)" in moved.output
        assert "churn: challenger v2 -> none" in moved.output
        aliases = conn.execute("SELECT alias, version FROM model_aliases WHERE model_name = 'churn'").fetchall()
        assert aliases == [("current", 2)]
        assert conn.execute("SELECT count(*) FROM models").fetchone() == (2,)  # nothing registered twice
        still = invoke(env, "models", "sync", "churn", "--from-mlflow")
        assert "churn: current stays v2" in still.output
        actions = conn.execute("SELECT details->>'from' FROM audit WHERE action = 'model.promote'").fetchall()
        assert {a for (a,) in actions} == {"mlflow"}
    finally:
        client.set_registered_model_alias("churn", "champion", 1)
        client.set_registered_model_alias("churn", "challenger", 2)


def test_a_flavour_predstore_cannot_score_is_refused_in_one_line(env: dict[str, str],
                                                                 conn: psycopg.Connection) -> None:
    result = invoke(env, "models", "register", "models:/wrapped/1", "--name", "wrapped")
    assert result.exit_code == 4, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "flavour python_function; predstore scores scikit-learn models only" in result.output
    assert conn.execute("SELECT count(*) FROM models").fetchone() == (0,)


def test_a_pickled_model_needs_trust_and_is_stored_with_skops(env: dict[str, str], conn: psycopg.Connection) -> None:
    refused = invoke(env, "models", "register", "models:/pickled/1", "--name", "pickled")
    assert refused.exit_code == 2 and "saved with cloudpickle, which runs any code" in refused.output
    trusted = invoke(env, "models", "register", "models:/pickled/1", "--name", "pickled", "--trust-joblib")
    assert trusted.exit_code == 0, trusted.output
    assert conn.execute("SELECT format, mlflow_version FROM models").fetchone() == ("skops", 1)


def test_unknown_uris_say_what_mlflow_has(env: dict[str, str]) -> None:
    missing = invoke(env, "models", "register", "models:/churn@nobody", "--name", "churn")
    assert missing.exit_code == 2 and missing.output.startswith("predstore: error: MLflow has no models:/churn@nobody")
    nothing = invoke(env, "models", "sync", "nothing", "--from-mlflow")
    assert nothing.exit_code == 2 and "nothing" in nothing.output and "Traceback" not in nothing.output
    assert os.environ["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]
