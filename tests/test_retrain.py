"""The retraining loop through the scheduler: drift appears, the retrain job fires on the monitor's
alert, a challenger fitted on the recent labeled predictions is registered, shadow-scored, compared
and promoted; a worse one is never promoted. Real passes of the scheduler on a real database."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from models.register import register_model
from monitor.labels import ingest_labels
from scheduler import load_config, run_once
from store import Settings, audit, registry
from store.errors import ConfigError
from tests import factories

MODEL = "churn"
SCHEDULE = """
[jobs.score]
kind = "score"
model = "churn"
input = "incoming/*.parquet"
on_arrival = true
retries = 0

[jobs.watch]
kind = "monitor"
model = "churn"
cron = "0 * * * *"
timezone = "UTC"
retries = 0

[jobs.retrain]
kind = "retrain"
model = "churn"
train = "{module}:fit"
on_alert = ["data_drift"]
min_labels = 50
"""
GOOD = """
from sklearn.linear_model import LogisticRegression

def fit(frame, target):
    return LogisticRegression().fit(frame.drop(columns=[target]), frame[target])
"""
WORSE = """
from sklearn.linear_model import LogisticRegression

def fit(frame, target):  # taught the outcomes the wrong way round
    flipped = frame[target].map({"0": "1", "1": "0"})
    return LogisticRegression().fit(frame.drop(columns=[target]), flipped)
"""


def shifted(n: int, *, start: int, seed: int) -> pd.DataFrame:
    """Rows after the world changed: the features moved and the outcome follows another rule."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(size=(n, 3)) + 1.0, columns=factories.FEATURES)
    data.insert(0, "entity_id", [f"e{i}" for i in range(start, start + n)])
    data["y"] = (data.f0 - data.f1 + 0.3 * rng.normal(size=n) > 0).astype(int)
    return data


def loop(settings: Settings, tmp_path: Path, fitting: str) -> list[dict[str, object]]:
    """Four scheduler passes, an hour apart, a shifted partition arriving before each and its labels
    after it; returns the retrain job's outcome of each pass."""
    artifact, train = factories.logistic(tmp_path / "v1")
    register_model(settings, artifact, name=MODEL, train_data=train, target="y")
    (tmp_path / f"{fitting}.py").write_text(textwrap.dedent(GOOD if fitting == "good" else WORSE))
    (tmp_path / "schedule.toml").write_text(SCHEDULE.format(module=fitting))
    (tmp_path / "incoming").mkdir()
    config = load_config(tmp_path / "schedule.toml")
    outcomes = []
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for hour in range(4):
        part = shifted(500, start=hour * 500, seed=hour)
        factories.write_parquet(tmp_path / "incoming" / f"p{hour}.parquet", part[["entity_id", *factories.FEATURES]])
        run_once(settings, config, now=start + timedelta(hours=hour, minutes=1))
        with psycopg.connect(settings.database_url or "") as conn:
            row = conn.execute("SELECT details FROM job_firings WHERE job_id = 'retrain' ORDER BY firing_id DESC "
                               "LIMIT 1").fetchone()
        outcomes.append(row[0]["outcomes"][MODEL] if row else {})
        labels = part[["entity_id", "y"]].assign(event_time=datetime.now(UTC) + timedelta(minutes=1))
        path = factories.write_parquet(tmp_path / "labels" / f"p{hour}.parquet", labels)
        ingest_labels(settings, path, model_name=MODEL, entity_col="entity_id", label_col="y", time_col="event_time")
    return outcomes


def test_drift_fires_a_retrain_whose_better_challenger_is_promoted(settings: Settings, tmp_path: Path) -> None:
    outcomes = loop(settings, tmp_path, "good")
    assert outcomes[0]["status"] == "skipped"  # the alert came before any label: nothing to learn from
    assert outcomes[1]["status"] == "registered" and outcomes[1]["version"] == 2
    assert outcomes[1]["rows"] == 500 and outcomes[1]["validation_rows"] == 100
    assert outcomes[2]["status"] == "waiting"  # scored beside v1, no labels of the paired rows yet
    assert outcomes[3] == {**outcomes[3], "status": "promoted", "version": 2, "verdict": "challenger better"}
    with psycopg.connect(settings.database_url or "") as conn:
        assert registry.get_model(conn, MODEL).version == 2
        shadowed = conn.execute("SELECT count(*) FROM runs WHERE role = 'challenger' AND model_version = 2")
        assert shadowed.fetchone() == (2,)
        (retrained,) = audit.entries(conn, action="model.retrain")
        trigger = retrained["details"]["trigger"]
        assert [a["kind"] for a in trigger["alerts"]] == ["data_drift"]
        assert trigger["alerts"][0]["details"]["partitions"] == ["p1"]
        assert retrained["details"]["runs"] and retrained["actor"] == "job retrain"


def test_a_worse_retrained_model_is_never_promoted(settings: Settings, tmp_path: Path) -> None:
    outcomes = loop(settings, tmp_path, "worse")
    assert outcomes[1]["status"] == "registered"
    assert outcomes[3]["status"] == "waiting" and outcomes[3]["verdict"] == "challenger worse"
    with psycopg.connect(settings.database_url or "") as conn:
        assert registry.get_model(conn, MODEL).version == 1
        promotions = audit.entries(conn, action="model.promote")
        assert [e["details"].get("alias") for e in promotions] == ["challenger"]  # made challenger, never current


def test_a_failing_fit_is_one_line_and_registers_nothing(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "v1")
    register_model(settings, artifact, name=MODEL, train_data=train, target="y")
    (tmp_path / "broken.py").write_text("def fit(frame, target):\n    raise ValueError('no good')\n")
    (tmp_path / "schedule.toml").write_text(SCHEDULE.format(module="broken").replace(
        'on_alert = ["data_drift"]', 'cron = "0 * * * *"\ntimezone = "UTC"'))
    (tmp_path / "incoming").mkdir()
    from scheduler.retrain import retrain

    config = load_config(tmp_path / "schedule.toml")
    job = config.job("retrain")
    part = shifted(200, start=0, seed=1)
    settings_home = tmp_path / "incoming"
    factories.write_parquet(settings_home / "p.parquet", part[["entity_id", *factories.FEATURES]])
    run_once(settings, config, now=datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    path = factories.write_parquet(tmp_path / "l.parquet", part[["entity_id", "y"]].assign(
        event_time=datetime.now(UTC) + timedelta(minutes=1)))
    ingest_labels(settings, path, model_name=MODEL, entity_col="entity_id", label_col="y", time_col="event_time")
    from monitor.runner import run_monitor

    run_monitor(settings, MODEL)
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        from store.errors import JobError

        with pytest.raises(JobError, match=r"broken:fit failed \(exit 1\): ValueError: no good"):
            retrain(settings, job, conn, cwd=tmp_path, trigger={"test": True})
        (tmp_path / "slow.py").write_text("import time\n\ndef fit(frame, target):\n    time.sleep(60)\n")
        slow = dataclasses.replace(job, train="slow:fit", timeout=2.0)
        with pytest.raises(JobError, match=r"slow:fit ran longer than 2s and was stopped"):
            retrain(settings, slow, conn, cwd=tmp_path, trigger={"test": True})
        assert [m.version for m in registry.list_models(conn, MODEL)] == [1]


@pytest.mark.parametrize("change, says", [
    ('train = "{module}:fit"', "jobs.retrain.train: give the fitting function"),
    ('on_alert = ["data_drift"]', "jobs.retrain.on_alert: a list of alert kinds"),
])
def test_a_bad_retrain_job_is_one_line(tmp_path: Path, change: str, says: str) -> None:
    bad = SCHEDULE.replace(change, {'train = "{module}:fit"': 'train = "fitting"',
                                    'on_alert = ["data_drift"]': 'on_alert = ["drift"]'}[change])
    (tmp_path / "schedule.toml").write_text(bad.format(module="x"))
    (tmp_path / "incoming").mkdir()
    with pytest.raises(ConfigError, match=says):
        load_config(tmp_path / "schedule.toml")


COMMAND = """
import os
import pandas as pd
import skops.io as sio
from sklearn.linear_model import LogisticRegression

frame = pd.read_parquet(os.environ["PREDSTORE_TRAINING_SET"])
target = os.environ["PREDSTORE_TARGET"]
sio.dump(LogisticRegression().fit(frame.drop(columns=[target]), frame[target]), "fitted.skops")
print("fitting done; the model is in")
print("fitted.skops")
"""


def test_labels_arriving_fire_a_command_that_fits(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "v1")
    register_model(settings, artifact, name=MODEL, train_data=train, target="y")
    (tmp_path / "fit_command.py").write_text(textwrap.dedent(COMMAND))
    (tmp_path / "schedule.toml").write_text(SCHEDULE.format(module="x").replace(
        'train = "x:fit"\non_alert = ["data_drift"]', 'command = "python fit_command.py"\nevery_labels = 100'))
    (tmp_path / "incoming").mkdir()
    config = load_config(tmp_path / "schedule.toml")
    assert config.job("retrain").describe() == "every 100 labels"  # the monitor job fires it; no cron of its own
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for hour in range(2):
        part = shifted(300, start=hour * 300, seed=hour)
        factories.write_parquet(tmp_path / "incoming" / f"p{hour}.parquet", part[["entity_id", *factories.FEATURES]])
        run_once(settings, config, now=start + timedelta(hours=hour, minutes=1))
        path = factories.write_parquet(tmp_path / "labels" / f"p{hour}.parquet", part[["entity_id", "y"]].assign(
            event_time=datetime.now(UTC) + timedelta(minutes=1)))
        ingest_labels(settings, path, model_name=MODEL, entity_col="entity_id", label_col="y", time_col="event_time")
    with psycopg.connect(settings.database_url or "") as conn:
        firings = conn.execute("SELECT reason, status, details FROM job_firings WHERE job_id = 'retrain' "
                               "ORDER BY firing_id").fetchall()
        assert [(r[0], r[1]) for r in firings] == [("arrival", "succeeded")]  # the first pass had no labels
        assert firings[0][2]["outcomes"][MODEL]["status"] == "registered"
        assert registry.aliases(conn, MODEL) == {"current": 1, "challenger": 2}


def test_after_asks_for_that_many_alerting_monitor_runs_in_a_row(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "v1")
    register_model(settings, artifact, name=MODEL, train_data=train, target="y")
    (tmp_path / "good.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "schedule.toml").write_text(SCHEDULE.format(module="good").replace("min_labels = 50",
                                                                                  "min_labels = 50\nafter = 2"))
    (tmp_path / "incoming").mkdir()
    config = load_config(tmp_path / "schedule.toml")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    reasons = []
    for hour in range(2):
        part = shifted(300, start=hour * 300, seed=hour)
        factories.write_parquet(tmp_path / "incoming" / f"p{hour}.parquet", part[["entity_id", *factories.FEATURES]])
        path = factories.write_parquet(tmp_path / "labels" / f"p{hour}.parquet", part[["entity_id", "y"]].assign(
            event_time=datetime.now(UTC) + timedelta(minutes=1)))
        run_once(settings, config, now=start + timedelta(hours=hour, minutes=1))
        ingest_labels(settings, path, model_name=MODEL, entity_col="entity_id", label_col="y", time_col="event_time")
        with psycopg.connect(settings.database_url or "") as conn:
            reasons.append([r[0] for r in conn.execute(
                "SELECT reason FROM job_firings WHERE job_id = 'retrain' ORDER BY firing_id")])
    assert reasons == [[], ["alert"]]  # one alerting monitor run is not enough; the second in a row is
