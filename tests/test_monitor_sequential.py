"""Sequential detection: the CUSUM's threshold, its steps and reset, and through the monitor job, a
gradual_drift alert and a fresh start when a new model version becomes current."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import psycopg
import pytest

from batch.runner import ScoreRequest, score_partition
from models import profile
from models.register import register_model
from monitor import sequential
from monitor.config import MonitorConfig
from monitor.runner import run_monitor
from store import Settings
from tests import factories


def test_the_threshold_gives_the_asked_run_length() -> None:
    for k, arl in ((0.5, 365.0), (0.5, 16_000.0), (1.0, 1000.0)):
        h = sequential.threshold(k, arl)
        assert sequential.run_length(h, k) == pytest.approx(arl)
    assert sequential.threshold(0.5, 365 * 40) > sequential.threshold(0.5, 365)


def test_a_cusum_adds_what_passes_k_alarms_past_h_and_starts_again() -> None:
    config = sequential.CusumConfig(k=0.5, arl=365)
    h = sequential.threshold(0.5, 365 * 2)
    state: dict[str, tuple[float, float]] = {}
    ups = []
    for _ in range(30):
        state, alarms, got_h = sequential.step(state, {"x": sequential.Score(1.5, 0.0, True)}, config)
        assert got_h == pytest.approx(h)
        ups.append(state["x"][0])
        if alarms:
            break
    assert alarms and alarms["x"][0] > h and state["x"] == (0.0, 0.0)  # alarmed, then starts again
    assert ups[:3] == pytest.approx([1.0, 2.0, 3.0])  # z - k per run
    assert len(ups) == math.floor(h) + 1
    # The down side of a two-sided CUSUM; nothing below 0; the baseline's share raises k.
    state, _, _ = sequential.step({}, {"x": sequential.Score(-2.0, 0.0, True)}, config)
    assert state["x"] == pytest.approx((0.0, 1.5))
    state, _, _ = sequential.step({}, {"x": sequential.Score(2.0, 0.04, True)}, config)
    assert state["x"] == pytest.approx((2.0 - 0.5 - 2 * 0.2, 0.0))


def test_the_score_of_a_number_is_its_mean_in_standard_errors() -> None:
    rng = np.random.default_rng(2)
    base = profile._numeric_baseline("x", "feature", rng.normal(size=4000))
    batch = rng.normal(0.1, 1.0, size=1000)
    got = sequential.score(base, profile.count_numeric(batch, base["edges"]))
    assert got is not None and got.two_sided
    error = base["std"] * math.sqrt(1 / 1000 + 1 / 4000)
    assert got.z == pytest.approx((batch.mean() - base["mean"]) / error)
    assert got.rho == pytest.approx((1 / 4000) / (1 / 1000 + 1 / 4000))


def test_gradual_drift_is_alerted_and_a_new_current_version_starts_again(settings: Settings, tmp_path: Path,
                                                                         conn: psycopg.Connection) -> None:
    artifact, train = factories.pipeline_classifier(tmp_path / "m", handle_unknown="ignore")
    register_model(settings, artifact, name="g", train_data=train, target="y", baseline_cv=3)
    config = MonitorConfig(cusum=sequential.CusumConfig(arl=20))  # a low threshold, for a short test
    for i in range(3):  # f0 a little high, every run: a shift no single run's test flags
        data = factories.frame(300, seed=20 + i, start=1000 * i)
        data["f0"] += 0.15
        score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / f"{i}.parquet", data),
                                               model_name="g"))
    result = run_monitor(settings, "g", config=config)
    assert all(not c.drifted for c in result.checks)
    gradual = [a for a in result.alerts if a.kind == "gradual_drift"]
    assert gradual and "f0" in gradual[0].details["columns"]

    other, _ = factories.pipeline_classifier(tmp_path / "m2")
    register_model(settings, other, name="g", train_data=train, target="y", current=True)
    data = factories.frame(300, seed=40, start=9000)
    data["f0"] += 0.15
    run = score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "v2.parquet", data),
                                                 model_name="g"))
    after = run_monitor(settings, "g", config=config)
    rows = {r["metric"]: r["value"] for r in after.checks[0].results if r["column_name"] == "f0"}
    assert after.checks[0].run_id == run.run_id and after.checks[0].model_version == 2
    k = config.cusum.k + 2 * math.sqrt(300 / (300 + 500))  # rho with a 500-row baseline
    assert rows["cusum_up"] == pytest.approx(max(0.0, rows["cusum_z"] - k))  # from 0, not from version 1's
