"""Small real models and partitions for tests: trained here, in a second, on generated data."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

FEATURES = ["f0", "f1", "f2"]


def frame(n: int, *, seed: int = 0, start: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """``n`` rows: entity ids e<start>..., three numeric features and a color category."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(size=(n, 3)) + shift, columns=FEATURES)
    data.insert(0, "entity_id", [f"e{i}" for i in range(start, start + n)])
    data["color"] = rng.choice(["red", "green", "blue"], size=n)
    data["y"] = ((data.f0 + data.f1 > 0) ^ (data.color == "red")).astype(int)
    data["amount"] = 3 * data.f0 - data.f2 + (data.color == "blue") * 2.0
    return data


def logistic(tmp: Path, *, name: str = "lr.joblib", seed: int = 0) -> tuple[Path, Path]:
    """A LogisticRegression on the numeric features (no NaN allowed); returns (artifact, training data)."""
    train = frame(500, seed=seed)
    model = LogisticRegression().fit(train[FEATURES], train["y"])
    return _save(tmp, name, model, train[[*FEATURES, "y"]])


def pipeline_classifier(tmp: Path, *, handle_unknown: str = "error") -> tuple[Path, Path]:
    """A Pipeline: one-hot color + LogisticRegression; unseen colors raise unless told to ignore."""
    train = frame(500)
    columns = ColumnTransformer([("color", OneHotEncoder(handle_unknown=handle_unknown), ["color"])],
                                remainder="passthrough")
    model = make_pipeline(columns, LogisticRegression()).fit(train[[*FEATURES, "color"]], train["y"])
    return _save(tmp, "pipe.joblib", model, train[[*FEATURES, "color", "y"]])


def boosted_pipeline(tmp: Path, *, seed: int = 0, name: str = "hgb-pipe.joblib") -> tuple[Path, Path]:
    """A Pipeline: one-hot color (unseen ignored) + HistGradientBoostingClassifier on every feature."""
    train = frame(500, seed=seed)
    columns = ColumnTransformer([("color", OneHotEncoder(handle_unknown="ignore"), ["color"])],
                                remainder="passthrough")
    model = make_pipeline(columns, HistGradientBoostingClassifier(max_iter=30, random_state=seed))
    model.fit(train[[*FEATURES, "color"]], train["y"])
    return _save(tmp, name, model, train[[*FEATURES, "color", "y"]])


def regressor(tmp: Path) -> tuple[Path, Path]:
    """A HistGradientBoostingRegressor (accepts NaN) predicting ``amount``."""
    train = frame(500)
    model = HistGradientBoostingRegressor(max_iter=20).fit(train[FEATURES], train["amount"])
    return _save(tmp, "hgb.joblib", model, train[[*FEATURES, "amount"]])


def multiclass(tmp: Path) -> tuple[Path, Path]:
    train = frame(600)
    train["kind"] = np.select([train.f0 < -0.5, train.f0 > 0.5], ["low", "high"], "mid")
    model = LogisticRegression().fit(train[FEATURES], train["kind"])
    return _save(tmp, "multi.joblib", model, train[[*FEATURES, "kind"]])


def write_parquet(path: Path, data: pd.DataFrame, *, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_parquet(path, index=False, row_group_size=row_group_size)
    return path


def _save(tmp: Path, name: str, model: object, train: pd.DataFrame) -> tuple[Path, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    artifact = tmp / name
    joblib.dump(model, artifact)
    train_path = tmp / f"{artifact.stem}-train.parquet"
    train.to_parquet(train_path, index=False)
    return artifact, train_path


class SlowRegressor(HistGradientBoostingRegressor):
    """A regressor that takes its time over every batch, so a test can kill its worker mid-task."""

    def predict(self, X):  # type: ignore[no-untyped-def]
        import time

        time.sleep(0.4)
        return super().predict(X)


def slow_regressor(tmp: Path) -> tuple[Path, Path]:
    train = frame(500)
    model = SlowRegressor(max_iter=10).fit(train[FEATURES], train["amount"])
    return _save(tmp, "slow.joblib", model, train[[*FEATURES, "amount"]])
