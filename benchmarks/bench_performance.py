"""Benchmark of realized performance as labels accumulate: a monitor run after a batch of new
labels (matched and tallied incrementally) against a full recompute from every label, measured in
the same run on the same store.

    python benchmarks/bench_performance.py [--labels 1000000 --runs 20 --new 10000] [--rescored] [--work DIR]

The full shape is 10M labels over 100 runs with 100k new ones (``--labels 10000000 --runs 100
--new 100000``); the default is a tenth of it, which builds in a few minutes on two cores. A
logistic regression scores ``--runs`` partitions of distinct entities; every entity gets one label
an hour after its run was published. Baseline: realized performance without tallies: the
point-in-time join of every label with every retained prediction (one query), then every run's
and window's metrics from the matched rows (`models.performance`). The first monitor run matches
every label at once, and the next one (after as many labels more as ``--new``) pays for the row
versions that bulk match left behind; both are printed. The label tables are then VACUUM
ANALYZEd, as autovacuum would before the next day's labels, and the new labels measured.

``--rescored``: the same ``labels / runs`` entities are scored by every run (a customer base scored
every day), each gets a label for each run's period, arriving three runs late, and the new labels
are the latest ones, so newer runs than the label's time hold every entity. There the full join is
quadratic, and the baseline is the same point-in-time join for the new labels alone (every new
label probing every run's table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import joblib
import pandas as pd
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
from bench_score import FEATURES, make_rows, target  # noqa: E402

from batch.runner import ScoreRequest, score_partition  # noqa: E402
from models import performance  # noqa: E402
from models.register import register_model  # noqa: E402
from monitor.config import MonitorConfig  # noqa: E402
from monitor.labels import ingest_labels  # noqa: E402
from monitor.runner import run_monitor  # noqa: E402
from store import Settings  # noqa: E402
from store.db import connect, stop_embedded  # noqa: E402
from store.migrate import prepare  # noqa: E402

CONFIG = MonitorConfig(min_labels=30)
#: With --rescored, how many runs late the labels arrive (the newest are for LAG runs ago).
LAG = 3

#: Every label with the prediction in force at its event time, in one query.
FULL_MATCH = """
    SELECT DISTINCT ON (l.entity_id, l.event_time, r.role)
           l.entity_id, l.event_time, l.label AS actual, r.role AS run_role, r.run_id, r.model_version,
           date_trunc('week', l.event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS window_start,
           p.prediction, p.label AS predicted, p.scores
    FROM labels l
    JOIN predictions p ON p.entity_id = l.entity_id COLLATE "C"
    JOIN runs r ON r.run_id = p.run_id
    WHERE l.model_name = 'm' AND r.model_name = 'm' AND r.status IN ('published', 'superseded')
    ORDER BY l.entity_id, l.event_time, r.role, r.published_at <= l.event_time DESC,
             CASE WHEN r.published_at <= l.event_time THEN r.published_at END DESC, r.published_at, r.run_id"""


def build(work: Path, *, labels: int, runs: int, new: int, rescored: bool = False) -> tuple[Settings, Path]:
    """Score ``runs`` partitions, ingest all labels but ``new``; returns the settings and the file
    of the new labels."""
    settings = Settings(home=work / "home")
    train = make_rows(20_000, seed=99)
    joblib.dump(LogisticRegression(max_iter=200).fit(train[FEATURES], target(train)), work / "m.joblib")
    register_model(settings, work / "m.joblib", name="m")
    per_run = labels // runs
    frames, published = [], []
    for i in range(runs):
        rows = make_rows(per_run, seed=i, start=0 if rescored else i * per_run)
        path = work / f"p{i}.parquet"
        rows.to_parquet(path, index=False)
        run = score_partition(settings, ScoreRequest(path=path, model_name="m", entity_col="entity_id",
                                                     partition_key=f"p{i}"))
        with connect(prepare(settings), autocommit=True) as conn:
            row = conn.execute("SELECT published_at FROM runs WHERE run_id = %s", [run.run_id]).fetchone()
        assert row is not None
        published.append(row[0])
        frames.append(pd.DataFrame({"entity_id": rows["entity_id"], "y": target(rows),
                                    "at": row[0] + timedelta(hours=1)}))
        print(f"  scored run {i + 1}/{runs}", end="\r", file=sys.stderr, flush=True)
    if rescored:  # each label in the middle of its run's period; the newest labels come last
        for frame, start, end in zip(frames, published, [*published[1:], published[-1] + timedelta(hours=2)],
                                     strict=True):
            frame["at"] = start + (end - start) / 2
        every = pd.concat(frames[:-LAG][::-1], ignore_index=True)  # labels come LAG runs late
    else:
        every = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=0)
    every.iloc[new:].to_parquet(work / "old.parquet", index=False)
    every.iloc[:new].to_parquet(work / "new.parquet", index=False)
    ingest_labels(settings, work / "old.parquet", model_name="m", entity_col="entity_id", label_col="y",
                  time_col="at")
    return settings, work / "new.parquet"


def probe_new(settings: Settings) -> float:
    """Seconds to match the waiting labels alone by probing every retained run (nothing written)."""
    waiting = FULL_MATCH.replace("WHERE l.model_name = 'm'", "WHERE l.model_name = 'm' AND l.matched_at IS NULL")
    assert waiting != FULL_MATCH
    started = time.perf_counter()
    with connect(prepare(settings), autocommit=True) as conn:
        conn.execute(waiting)
    return time.perf_counter() - started


def full_recompute(settings: Settings) -> float:
    """Seconds to match every label and compute every run's and window's metrics from scratch."""
    started = time.perf_counter()
    with connect(prepare(settings), autocommit=True) as conn:
        matched = pd.DataFrame(conn.cursor().execute(FULL_MATCH).fetchall(),
                               columns=["entity_id", "event_time", "actual", "run_role", "run_id", "model_version",
                                        "window_start", "prediction", "predicted", "scores"])
    classes = ["0", "1"]
    for key in ("run_id", "window_start"):
        for _, group in matched.groupby(key):
            proba = performance.probabilities(group["prediction"].tolist(), group["scores"].tolist(), classes)
            performance.classification(group["actual"].tolist(), group["predicted"].tolist(), proba, classes)
    return time.perf_counter() - started


def settle(settings: Settings) -> float:
    """VACUUM ANALYZE the label tables after the first, bulk match (what autovacuum does between
    daily batches); returns the seconds it took."""
    started = time.perf_counter()
    with connect(prepare(settings), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) labels, label_matches, performance_tallies")
    return time.perf_counter() - started


def next_labels(work: Path) -> Path:
    """For a store built before (``--work``): the new labels again, an hour later per reuse."""
    k = len(list(work.glob("new-*.parquet"))) + 1
    frame = pd.read_parquet(work / "new.parquet")
    frame["at"] = frame["at"] + timedelta(hours=k)
    frame.to_parquet(work / f"new-{k}.parquet", index=False)
    return work / f"new-{k}.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--rescored", action="store_true", help="the same entities in every run")
    parser.add_argument("--work", type=Path, help="keep the store in this folder; if it holds one already, "
                                                  "measure again on it (new labels an hour later) without building")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="predstore-performance-"))
    started = time.perf_counter()
    if (work / "home").exists():
        settings, new, built, first, unsettled = Settings(home=work / "home"), next_labels(work), 0.0, 0.0, 0.0
    else:
        work.mkdir(parents=True, exist_ok=True)
        settings, new = build(work, labels=args.labels, runs=args.runs, new=args.new, rescored=args.rescored)
        built = time.perf_counter() - started
        t = time.perf_counter()
        run_monitor(settings, "m", config=CONFIG)  # drift checks, estimates, and the first match of every label
        first = time.perf_counter() - t
        # new labels right after the bulk match, before any vacuum (a copy of the new ones, an hour later)
        ingest_labels(settings, next_labels(work), model_name="m", entity_col="entity_id", label_col="y",
                      time_col="at")
        t = time.perf_counter()
        run_monitor(settings, "m", config=CONFIG)
        unsettled = time.perf_counter() - t
    settled = settle(settings)
    t = time.perf_counter()
    ingest_labels(settings, new, model_name="m", entity_col="entity_id", label_col="y", time_col="at")
    ingested = time.perf_counter() - t
    probed = probe_new(settings)
    t = time.perf_counter()
    result = run_monitor(settings, "m", config=CONFIG)
    incremental = time.perf_counter() - t
    store = (f"store built in {built:.0f}s; first monitor run, matching every label, {first:.1f}s; the next one, "
             f"after {args.new:,} labels more, {unsettled:.1f}s; VACUUM ANALYZE then {settled:.1f}s" if built
             else f"store in {work} reused")
    if args.rescored:
        print(f"{args.labels:,} labels over {args.runs} runs of the same {args.labels // args.runs:,} entities "
              f"({store}); {args.new:,} new labels ingested in {ingested:.2f}s")
        print(f"predstore monitor after them: {incremental:.2f}s; matching them by probing every run "
              f"{probed:.2f}s; probing / monitor = {probed / incremental:.1f}x")
        stop_embedded(settings.pgdata)
        return
    baseline = full_recompute(settings)
    accuracy = next(r.value for r in result.performance if r.scope == "run" and r.metric == "accuracy")
    print(f"{args.labels:,} labels over {args.runs} runs ({store}); {args.new:,} new labels ingested in "
          f"{ingested:.2f}s")
    print(f"predstore monitor after them: {incremental:.2f}s (target <= 10 s; {result.labels.get('matched', 0):,} "
          f"labels matched, accuracy of run 1 {accuracy:.3f}); full recompute from every label {baseline:.2f}s; "
          f"full / incremental = {baseline / incremental:.1f}x (target >= 20x); matching the new labels by "
          f"probing every run {probed:.2f}s")
    stop_embedded(settings.pgdata)


if __name__ == "__main__":
    main()
