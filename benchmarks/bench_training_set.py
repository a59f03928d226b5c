"""Benchmark of point-in-time training sets (`predstore.training_set`). A script.

    python benchmarks/bench_training_set.py [--partitions 20] [--rows 50000]

In a throwaway embedded PostgreSQL it registers a classifier, scores ``--partitions`` Parquet
partitions of ``--rows`` rows each (entities re-scored across partitions), ingests a label for every
prediction a day after it and lets the monitor match them: ``partitions x rows`` labeled
predictions (1M by default). Then, in the same run:

1. the floor: reading the same partitions' columns with pyarrow alone (``pq.read_table``);
2. `predstore.training_set`: the matches read from the store, each partition read back, its
   fingerprint checked, the kept rows joined to their labels.

It prints both times, their ratio, and the training set's rows per second (target: 1M labeled
predictions in <= 30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lookup import throwaway_store  # noqa: E402

MODEL = "churn"
TARGET_S = 30.0


def frame(rng: np.random.Generator, rows: int, *, pool: int) -> pd.DataFrame:
    data = {f"x{i}": rng.normal(0.0, 1.0, rows) for i in range(8)}
    data["plan"] = rng.choice(["basic", "plus", "pro"], rows)
    data["churned"] = np.where(data["x0"] - 0.5 * data["x1"] + rng.normal(0, 1, rows) > 0, "yes", "no")
    data["entity_id"] = [f"c{i}" for i in rng.choice(pool, rows, replace=False)]
    return pd.DataFrame(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()

    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    import predstore

    logging.disable(logging.WARNING)
    rng = np.random.default_rng(3)
    features = [*(f"x{i}" for i in range(8)), "plan"]
    with throwaway_store() as (url, scratch):
        store = predstore.Store(url=url, home=scratch / "home")
        train = frame(rng, 20_000, pool=20_000).drop(columns=["entity_id"])
        columns = ColumnTransformer([("plan", OneHotEncoder(), ["plan"])], remainder="passthrough")
        model = make_pipeline(columns, HistGradientBoostingClassifier(max_iter=30)).fit(train[features],
                                                                                        train["churned"])
        store.register(model, name=MODEL, train=train, target="churned")
        started = time.perf_counter()
        paths, labels = [], []
        for day in range(args.partitions):
            part = frame(rng, args.rows, pool=args.rows * 4)
            path = scratch / "in" / f"day-{day:03d}.parquet"
            path.parent.mkdir(exist_ok=True)
            part[["entity_id", *features]].to_parquet(path)
            paths.append(path)
            store.score(path, model=MODEL)
            labels.append(part[["entity_id", "churned"]].assign(
                event_time=datetime.now(UTC) + timedelta(days=1, seconds=day)))
        store.labels(pd.concat(labels, ignore_index=True), model=MODEL, entity_col="entity_id", label_col="churned",
                     time_col="event_time")
        store.monitor(MODEL)
        built = time.perf_counter() - started

        started = time.perf_counter()
        read = sum(pq.read_table(p, columns=["entity_id", *features]).num_rows for p in paths)
        floor = time.perf_counter() - started
        started = time.perf_counter()
        found = store.training_set(MODEL)
        took = time.perf_counter() - started
    print(f"built in {built:.0f} s: {args.partitions} partitions of {args.rows:,} rows scored, a label for each, "
          "matched by the monitor")
    print(f"pyarrow alone, reading the partitions' {len(features) + 1} columns: {read:,} rows in {floor:.2f} s")
    print(f"predstore.training_set: {len(found):,} labeled predictions in {took:.2f} s "
          f"({len(found) / took:,.0f} rows/s), {took / floor:.1f}x pyarrow's read (target: 1M in <= {TARGET_S:.0f} s: "
          f"{'yes' if took * 1_000_000 / max(len(found), 1) <= TARGET_S else 'NO'})")
    return 0 if took * 1_000_000 / max(len(found), 1) <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
