"""Calibrated estimates before labels: isotonic calibration fitted at registration, CBPE with a
band for classifiers, expected absolute error for regressors."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
import pytest
from sklearn.naive_bayes import GaussianNB

from batch.runner import ScoreRequest, score_partition
from models import calibration
from models.register import register_model
from monitor.config import MonitorConfig
from monitor.runner import run_monitor
from store import Settings
from tests import factories


def correlated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated features that make naive Bayes far too sure of itself."""
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(4), np.full((4, 4), 0.8) + 0.2 * np.eye(4), size=n)
    return x, (rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] - x[:, 1])))).astype(int)


def test_calibration_brings_the_estimate_to_the_realized_accuracy() -> None:
    x, y = correlated(3000, 0)
    model = GaussianNB().fit(x, y)
    xv, yv = correlated(5000, 1)
    calib = calibration.fit(model.predict_proba(xv), yv, task="classification")
    again = calibration.Calibration.from_json(calib.to_json())
    xb, yb = correlated(4000, 2)
    proba = model.predict_proba(xb)
    realized = (proba.argmax(axis=1) == yb).mean()
    raw, _, _ = calibration.expected_accuracy(None, proba)
    value, low, high = calibration.expected_accuracy(again, proba)
    assert abs(raw - realized) > 0.03  # the raw probabilities are off
    assert abs(value - realized) < min(0.02, abs(raw - realized) / 2) and low <= realized <= high
    on_validation = calibration.expected_accuracy(calib, model.predict_proba(xv))[0]
    assert calib.reference["accuracy"] == pytest.approx(on_validation)


def test_registration_keeps_a_calibration_the_monitor_uses(settings: Settings, tmp_path: Path,
                                                           conn: psycopg.Connection) -> None:
    columns = ["f0", "f1", "f2", "f3"]
    frames = {}
    for name, (n, seed) in {"train": (2000, 0), "valid": (3000, 1), "batch": (1000, 2)}.items():
        x, y = correlated(n, seed)
        frames[name] = pd.DataFrame(x, columns=columns).assign(y=y)
    joblib.dump(GaussianNB().fit(frames["train"][columns], frames["train"]["y"]), tmp_path / "nb.joblib")
    for name in ("train", "valid"):
        frames[name].to_parquet(tmp_path / f"{name}.parquet", index=False)
    register_model(settings, tmp_path / "nb.joblib", name="nb", train_data=tmp_path / "train.parquet", target="y",
                   validation_data=tmp_path / "valid.parquet")
    batch = frames["batch"].assign(entity_id=[f"e{i}" for i in range(1000)])
    path = factories.write_parquet(tmp_path / "b.parquet", batch.drop(columns="y"))
    score_partition(settings, ScoreRequest(path=path, model_name="nb"))
    stored = conn.execute("SELECT calibration->>'task', (calibration->>'rows')::int FROM calibrations").fetchall()
    assert stored == [("classification", 3000)]
    result = run_monitor(settings, "nb", config=MonitorConfig(min_labels=20))
    accuracy = next(r for r in result.performance if r.estimated and r.metric == "accuracy")
    assert accuracy.reference == "validation data (estimated)"
    assert accuracy.low < accuracy.value < accuracy.high
    assert accuracy.status == "ok"  # the same distribution as the validation data: no alarm


def test_a_regressor_gets_an_expected_absolute_error(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.regressor(tmp_path / "m")
    valid = factories.frame(800, seed=7)
    valid[[*factories.FEATURES, "amount"]].to_parquet(tmp_path / "valid.parquet", index=False)
    register_model(settings, artifact, name="amount", train_data=train, target="amount",
                   validation_data=tmp_path / "valid.parquet")
    data = factories.frame(500, seed=8)
    score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                           model_name="amount"))
    result = run_monitor(settings, "amount", config=MonitorConfig(min_labels=20))
    (mae,) = [r for r in result.performance if r.estimated]
    realized = np.abs(joblib.load(artifact).predict(data[factories.FEATURES]) - data["amount"]).mean()
    assert mae.metric == "mae" and mae.low <= realized <= mae.high
