"""Benchmark of the console (`predstore ui`): each page's time on a year of daily partitions, against the
same page a week in, and after 10M more labels. A script.

    python benchmarks/bench_ui.py [--days 365] [--rows 2000] [--labels 10000000] [--requests 15] [--keep DIR]

In a throwaway embedded PostgreSQL it builds, through the product's own paths (register, score,
ingest labels, monitor), a classifier scored every day with a challenger beside it: each day a
partition of ``--rows`` rows (entities drawn from a pool, so they are re-scored), whose features drift
slowly, the previous day's labels ingested, the monitor run. A real `predstore ui` process serves it;
each page is fetched ``--requests`` times over HTTP (median and p95):

1. a week in (the baseline, a store of its own);
2. after ``--days`` days (``--keep DIR`` keeps that store, and measures it again next time
   without building it);
3. after ``--labels`` more labels and their matches are written straight into ``labels`` and
   ``label_matches`` (SQL; ingesting them through the product takes minutes, see bench_performance.py):
   no page reads either table, so no page should notice.

It prints, per page, the milliseconds of each stage and the ratio of the year to the week (target:
every page <= 300 ms at a year).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lookup import free_port, throwaway_store  # noqa: E402

MODEL = "churn"
TARGET_MS = 300.0
START = datetime(2025, 1, 1, tzinfo=UTC)
NUMERIC = [f"x{i}" for i in range(8)]


def frame(rng: np.random.Generator, rows: int, day: int, *, pool: int = 20_000) -> pd.DataFrame:
    """A day's partition: entities from a pool, eight numbers (the first drifting over the year), two
    categories, and the outcome."""
    shift = day / 365
    data = {f"x{i}": rng.normal(shift if i == 0 else 0.0, 1.0, rows) for i in range(8)}
    data["plan"] = rng.choice(["basic", "plus", "pro"], rows, p=[0.5 - shift / 4, 0.3, 0.2 + shift / 4])
    data["region"] = rng.choice(["north", "south", "east", "west"], rows)
    logit = data["x0"] - 0.5 * data["x1"] + 0.8 * (data["plan"] == "pro") - 0.3
    data["churned"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    data["entity_id"] = [f"c{i}" for i in rng.choice(pool, rows, replace=False)]
    return pd.DataFrame(data)


def fit(train: pd.DataFrame, kind: str) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer([("num", StandardScaler(), NUMERIC),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"])])
    estimator = HistGradientBoostingClassifier(max_iter=50) if kind == "hgb" else LogisticRegression(max_iter=500)
    return make_pipeline(columns, estimator).fit(train[[*NUMERIC, "plan", "region"]], train["churned"])


def build(store: Any, rng: np.random.Generator, *, first: int, last: int, rows: int) -> None:
    """Days ``first`` to ``last - 1``: score, ingest yesterday's labels, monitor."""
    features = [*NUMERIC, "plan", "region"]
    previous = None
    for day in range(first, last):
        today = frame(rng, rows, day)
        store.score(today[["entity_id", *features]], model=MODEL, partition=f"day-{day:03d}")
        if previous is not None:
            store.labels(previous[["entity_id", "churned"]], model=MODEL, entity_col="entity_id",
                         label_col="churned", event_time=START + timedelta(days=day - 1, hours=12))
        store.monitor(MODEL)
        previous = today


def add_labels(url: str, count: int) -> None:
    """``count`` labels, and their matches to the newest run, written straight into the tables."""
    import psycopg

    with psycopg.connect(url) as conn:
        run = conn.execute("SELECT max(run_id), max(model_version) FROM runs WHERE role = 'current' "
                           "AND status = 'published'").fetchone()
        assert run is not None
        conn.execute("""INSERT INTO labels (model_name, entity_id, event_time, label, matched_at)
                        SELECT %s, 'bulk' || g, %s::timestamptz - make_interval(secs => g %% 86400), 'yes', now()
                        FROM generate_series(1, %s) g""", [MODEL, START, count])
        conn.execute("""INSERT INTO label_matches (model_name, entity_id, event_time, run_role, run_id, model_version,
                                                   matched_as, label, prediction, predicted, scores)
                        SELECT %s, 'bulk' || g, %s::timestamptz - make_interval(secs => g %% 86400), 'current', %s, %s,
                               'in_force', 'yes', 0.5, 'yes', ARRAY[0.5, 0.5]
                        FROM generate_series(1, %s) g""", [MODEL, START, run[0], run[1], count])
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE labels, label_matches")


@contextmanager
def console(url: str, home: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PREDSTORE_DATABASE_URL": url, "PREDSTORE_HOME": str(home), "PREDSTORE_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "predstore", "ui", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def pages(base: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{base}/runs?model={MODEL}&status=published") as response:
        body = response.read().decode()
    run = body.split('<a href="/runs/', 1)[1].split('"', 1)[0]
    return {"models": "/", "model": f"/models/{MODEL}", "runs": f"/runs?model={MODEL}", "run": f"/runs/{run}",
            "drift": f"/models/{MODEL}/drift", "performance": f"/models/{MODEL}/performance"}


def timed(base: str, paths: dict[str, str], requests: int) -> dict[str, tuple[float, float]]:
    """Per page: (median, p95) milliseconds of ``requests`` fetches, after one to warm up."""
    out = {}
    for name, path in paths.items():
        seconds = []
        for attempt in range(requests + 1):
            started = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=60) as response:
                assert response.status == 200, (path, response.status)
                response.read()
            if attempt:
                seconds.append(time.perf_counter() - started)
        seconds.sort()
        out[name] = (statistics.median(seconds) * 1000, seconds[int(0.95 * (len(seconds) - 1))] * 1000)
    return out


def registered(url: str, home: Path, rng: np.random.Generator) -> Any:
    """A store at ``url`` with the classifier registered and a challenger beside it."""
    import predstore
    from models.promotion import promote_model

    store = predstore.Store(url=url, home=home)
    train, validation = frame(rng, 20_000, -30).drop(columns=["entity_id"]), frame(rng, 5_000, -30)
    for kind in ("hgb", "logistic"):
        version = store.register(fit(train, kind), name=MODEL, train=train, target="churned",
                                 validation=validation.drop(columns=["entity_id"]))
    promote_model(store.settings, MODEL, version.version, alias="challenger")
    return store


@contextmanager
def year_store(keep: Path | None) -> Iterator[tuple[str, Path, bool]]:
    """The year's store: a throwaway one, or one kept in ``keep``. Yields its URL, its home folder
    and whether it was built before (a kept store is built once)."""
    from store.db import start_embedded, stop_embedded
    from store.migrate import upgrade

    if keep is None:
        with throwaway_store() as (url, scratch):
            yield url, scratch / "home", False
        return
    keep.mkdir(parents=True, exist_ok=True)
    url = start_embedded(keep / "pgdata")
    try:
        upgrade(url)
        yield url, keep / "home", (keep / "built").exists()
    finally:
        stop_embedded(keep / "pgdata")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="Build the year's store in this folder and keep it; run again "
                        "with the same folder to measure it without building it again (about 25 minutes).")
    args = parser.parse_args()

    import logging

    import psycopg

    from monitor.compare import compare_models

    logging.disable(logging.WARNING)
    rng = np.random.default_rng(7)
    with throwaway_store() as (url, scratch):  # the baseline: a week in
        build(registered(url, scratch / "home", rng), rng, first=0, last=7, rows=args.rows)
        with console(url, scratch / "home") as base:
            week = timed(base, pages(base), args.requests)
    with year_store(args.keep) as (url, home, found):
        started = time.perf_counter()
        if found:
            print(f"measuring the store kept in {args.keep}: {(args.keep / 'built').read_text().strip()}")
        else:
            store = registered(url, home, rng)
            build(store, rng, first=0, last=args.days, rows=args.rows)
            compare_models(store.settings, MODEL)
            print(f"built {args.days} daily partitions of {args.rows:,} rows, with a challenger, in "
                  f"{time.perf_counter() - started:.0f} s")
            if args.keep:
                (args.keep / "built").write_text(f"{args.days} days of {args.rows} rows\n")
        with psycopg.connect(url) as conn:
            counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                      for table in ("runs", "drift_results", "performance_results", "performance_tallies",
                                    "alerts", "labels", "label_matches")}
        with console(url, home) as base:
            paths = pages(base)
            year = timed(base, paths, args.requests)
            labeled = args.keep is not None and (args.keep / "labels").exists()
            if not labeled:
                add_labels(url, args.labels)
                if args.keep:
                    (args.keep / "labels").write_text(f"{args.labels} labels added\n")
            loaded = timed(base, paths, args.requests)
    print(", ".join(f"{table} {n:,}" for table, n in counts.items()))
    print(f"{'page':<12} {'week ms':>9} {'year ms':>9} {'year/week':>10} {'+labels ms':>11} {'p95':>7} "
          f"{'/week':>7}  target")
    worst = 0.0
    for name in week:
        w, (y, _), (lab, lab95) = week[name][0], year[name], loaded[name]
        worst = max(worst, lab, y)
        print(f"{name:<12} {w:>9.1f} {y:>9.1f} {y / w:>10.2f} {lab:>11.1f} {lab95:>7.1f} {lab / w:>7.2f}  "
              f"<= {TARGET_MS:.0f} ms: {'yes' if max(lab, y) <= TARGET_MS else 'NO'}")
    print(f"slowest page at a year: {worst:.1f} ms (target {TARGET_MS:.0f} ms); +labels: after {args.labels:,} "
          "more labels and their matches" + (" (added by an earlier run)" if labeled else ""))
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
