"""The demo: train on January–February 2011, then replay 2011–2012 week by week.

Each simulated week a partition of that week's hours arrives and the scheduler scores it; the
week's labels (the hourly counts) arrive a week later; the monitor runs after each scoring. The
temperature and the seasons drift away from the training months, and the error grows with them.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from importlib.resources import files
from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import predstore
from demo.summary import Summary, read_summary
from monitor.labels import ingest_labels
from monitor.runner import run_monitor, write_report
from scheduler import JobsFailed, load_config, run_once
from store.db import connect
from store.migrate import prepare
from store.settings import Settings

MODEL = "bikes"
CATEGORICAL = ["season", "holiday", "weekday", "workingday", "weathersit"]
NUMERIC = ["hour", "temp", "atemp", "hum", "windspeed"]
TRAIN_UNTIL = pd.Timestamp("2011-03-01", tz="UTC")

SCHEDULE = """\
# Written by `predstore demo`: score each weekly partition as it arrives, monitor every Monday.
[jobs.score-weekly]
kind = "score"
model = "bikes"
input = "incoming/*.parquet"
on_arrival = true
poll_interval = 60
retries = 0

[jobs.monitor-weekly]
kind = "monitor"
model = "bikes"
cron = "0 0 * * 1"
timezone = "UTC"
"""


@dataclass(frozen=True)
class DemoResult:
    """Where the demo left things."""

    workdir: Path
    report: Path
    weeks: int
    #: What the monitor recorded over the replay, read back from the store.
    summary: Summary
    #: The newest hour the lookup API serves a prediction for (None if no week was scored).
    entity_id: str | None
    seconds: float


def load_hours(path: Path | None = None) -> pd.DataFrame:
    """The hourly table with an entity id (date and hour), an event time and numeric hours."""
    source = path or Path(str(files("demo") / "data" / "bike-sharing-hourly.csv"))
    data = pd.read_csv(source)
    clock = data["hr"].str.extract(r"^(\d+)(am|pm)$")
    hour = clock[0].astype(int) % 12 + (clock[1] == "pm") * 12
    data["event_time"] = pd.to_datetime(data["dteday"], utc=True) + pd.to_timedelta(hour, unit="h")
    data["hour"] = hour.astype(float)
    data["entity_id"] = data["event_time"].dt.strftime("%Y-%m-%dT%H")
    return data.sort_values("event_time").reset_index(drop=True)


def train(hours: pd.DataFrame) -> object:
    """A one-hot ColumnTransformer and a gradient-boosted regressor predicting the hourly count."""
    columns = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
                                remainder="passthrough")
    model = make_pipeline(columns, HistGradientBoostingRegressor(max_iter=200, random_state=0))
    return model.fit(hours[CATEGORICAL + NUMERIC], hours["cnt"])


def run_demo(settings: Settings, *, say: Callable[[str], None] = print, weeks: int | None = None) -> DemoResult:
    """Run the whole loop into ``settings.home / 'demo'``; running it again reuses what is there."""
    started = time.perf_counter()
    work = settings.home / "demo"
    for sub in ("incoming", "labels"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    hours = load_hours()
    months = hours[hours["event_time"] < TRAIN_UNTIL]
    held_out = months.sample(frac=0.2, random_state=0)
    training = months.drop(held_out.index)
    columns = [*CATEGORICAL, *NUMERIC, "cnt"]
    store = predstore.Store(url=settings.database_url, home=settings.home)
    # Registered once, as from a notebook: saved with skops, the frames giving its feature types, its
    # metrics on the held-out hours and the baselines the monitor compares the weeks with.
    model = store.model(MODEL) or store.register(train(training), name=MODEL, train=training[columns], target="cnt",
                                                 validation=held_out[columns], entity_col="entity_id")
    mae = (model.training_metrics or {}).get("mae", float("nan"))
    say(f"trained on {len(training):,} hours of Jan-Feb 2011; registered {MODEL} v{model.version} "
        f"(MAE on {len(held_out)} held-out hours: {mae:.1f} rentals/hour)")
    schedule = work / "schedule.toml"
    schedule.write_text(SCHEDULE, encoding="utf-8")
    config = load_config(schedule)

    rest = hours[hours["event_time"] >= TRAIN_UNTIL]
    week_start = rest["event_time"].dt.normalize() - pd.to_timedelta(rest["event_time"].dt.day_of_week, unit="D")
    batches = list(rest.groupby(week_start))
    if batches and batches[-1][1]["event_time"].dt.normalize().nunique() < 7:
        batches.pop()  # the data ends on a Monday: a one-day "week" would only show a weekday drift
    batches = batches[:weeks]
    previous: Path | None = None
    stop = threading.Event()  # set by Ctrl-C or SIGTERM during a scheduler pass
    for number, (start, week) in enumerate(batches, 1):
        name = f"week-{start:%Y-%m-%d}"
        _write_once(work / "incoming" / f"{name}.parquet", week[["entity_id", *CATEGORICAL, *NUMERIC]])
        labels = _write_once(work / "labels" / f"{name}.parquet", week[["entity_id", "cnt", "event_time"]])
        if previous is not None:  # last week's counts arrive now
            ingest_labels(settings, previous, model_name=MODEL, entity_col="entity_id", label_col="cnt",
                          time_col="event_time")
        previous = labels
        now = (start + timedelta(days=7)).to_pydatetime().astimezone(UTC)
        try:
            run_once(settings, config, now=now, stop=stop)
        except JobsFailed as exc:
            say(f"  week {name}: {exc}")
        if stop.is_set():  # the pass finished the partition in hand and started nothing more
            say(f"  stopped after {number} weeks; `predstore demo` again goes on from there")
            raise KeyboardInterrupt
        if number % 13 == 0 or number == len(batches):
            say(f"  {now:%Y-%m-%d}: {number} weeks scored and monitored")
    if previous is not None:
        ingest_labels(settings, previous, model_name=MODEL, entity_col="entity_id", label_col="cnt",
                      time_col="event_time")
    run_monitor(settings, MODEL)
    report = write_report(settings, MODEL, work / "report.html")
    with connect(prepare(settings)) as conn:
        summary = read_summary(conn, MODEL, metric="mae")
    return DemoResult(workdir=work, report=report, weeks=len(batches), summary=summary,
                      entity_id=newest_served(store, batches[-1][1]["entity_id"]) if batches else None,
                      seconds=time.perf_counter() - started)


def newest_served(store: predstore.Store, entity_ids: pd.Series) -> str | None:
    """The newest of these hours that the store serves a prediction for (ids sort as times do)."""
    served = store.predictions(MODEL, list(entity_ids))
    return str(served["entity_id"].max()) if len(served) else None


def _write_once(path: Path, frame: pd.DataFrame) -> Path:
    """Write a partition as the scheduler expects: under a hidden name, then renamed into place."""
    if not path.exists():
        hidden = path.with_name(f".{path.name}")
        frame.to_parquet(hidden, index=False)
        shutil.move(hidden, path)
    return path

