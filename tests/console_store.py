"""A store with a year's story in small, for the console's tests: the demo's first weeks, a
challenger scored beside the current version and compared, and a run the publish gate held."""

from __future__ import annotations

import pandas as pd
import pytest

import predstore
from demo.run import CATEGORICAL, MODEL, NUMERIC, TRAIN_UNTIL, load_hours, run_demo, train
from models.promotion import promote_model
from monitor.compare import compare_models
from store import Settings
from store.errors import RunHeld

COLUMNS = [*CATEGORICAL, *NUMERIC, "cnt"]


def build_store(settings: Settings, *, weeks: int | None = 8) -> dict[str, int]:
    """The demo's first six weeks, then a challenger scored beside the current version up to week
    ``weeks`` (None: the demo's two years) and compared, then a partition whose temperatures came in
    another unit, held by the publish gate."""
    run_demo(settings, say=lambda line: None, weeks=6)
    hours = load_hours()
    recent = hours[(hours["event_time"] >= TRAIN_UNTIL) & (hours["event_time"] < TRAIN_UNTIL + pd.Timedelta(days=35))]
    store = predstore.Store(url=settings.database_url, home=settings.home)
    challenger = store.register(train(recent), name=MODEL, train=recent[COLUMNS], target="cnt",
                                validation=recent.sample(frac=0.3, random_state=1)[COLUMNS], entity_col="entity_id")
    promote_model(settings, MODEL, challenger.version, alias="challenger")
    run_demo(settings, say=lambda line: None, weeks=weeks)
    compare_models(settings, MODEL, min_labels=10)
    week = pd.read_parquet(sorted((settings.home / "demo" / "incoming").glob("*.parquet"))[-1])
    broken = settings.home / "broken" / "week-broken.parquet"
    broken.parent.mkdir(parents=True)
    week.assign(temp=week["temp"] * 100).to_parquet(broken)
    with pytest.raises(RunHeld) as held:
        store.score(broken, model=MODEL, gate=True)
    return {"challenger": challenger.version, "held": held.value.run_id}
