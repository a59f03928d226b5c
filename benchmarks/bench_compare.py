"""Benchmark of champion against challenger: speed of `models compare` on a real store, and the
statistical claims of its verdicts by simulation, each against a baseline measured in the same run.

    python benchmarks/bench_compare.py [--entities 143000 --days 7] [--sims 1000] [--skip-store]

1. Speed. Two logistic regressions score the same entities every day for ``--days`` days (one
   paired run per day and model: entities x days paired rows), one label per entity arrives,
   and `compare_models` is timed. Baseline: the row-level query that joins each paired row to
   its entity's latest label with a correlated subquery (what the comparison used to run), on a
   30k-row store only, since it is quadratic.
2. Coverage. ``--sims`` comparisons of two equally good models (each with its own per-entity
   errors, so neither is better on average), 500 entities each scored 7 times, one label per
   entity: how often the 95% interval covers the true difference, 0. Baseline: the same interval
   over rows, each row counted as evidence.
3. Peeking. The same equal models, 2,000 entities, labels arriving in 20 ingests, the verdict
   asked after each: how often `promote --if-better` would have promoted. Baseline: the
   fixed-sample 95% interval asked the same 20 times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
from bench_score import FEATURES, make_rows, target  # noqa: E402

from batch.runner import ScoreRequest, score_partition  # noqa: E402
from models.register import register_model  # noqa: E402
from monitor.compare import (  # noqa: E402
    Verdict,
    compare_models,
    confidence_sequence,
    decide,
    entity_means,
    row_losses,
    t_interval,
)
from store import Settings  # noqa: E402
from store.db import connect, stop_embedded  # noqa: E402
from store.migrate import prepare  # noqa: E402
from store.registry import set_alias  # noqa: E402

CLASSES = ["0", "1"]

ROW_LEVEL_QUERY = """
    SELECT c.entity_id, c.prediction, h.prediction, l.label
    FROM predictions c
    JOIN predictions h ON h.run_id = %(challenger)s AND h.entity_id = c.entity_id
    LEFT JOIN LATERAL (
        SELECT label FROM labels
        WHERE model_name = %(model)s AND entity_id = c.entity_id ORDER BY event_time DESC LIMIT 1) AS l ON true
    WHERE c.run_id = %(current)s"""


# --- 1. speed ------------------------------------------------------------------------------------


def build_store(work: Path, *, entities: int, days: int) -> Settings:
    """A store with two versions, ``days`` paired runs over ``entities`` entities, one label each."""
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=work / "home")
    train = make_rows(50_000, seed=99)
    for seed, rows in ((0, 5_000), (1, 50_000)):
        model = LogisticRegression(max_iter=200).fit(train[FEATURES].iloc[:rows], target(train)[:rows])
        joblib.dump(model, work / f"m{seed}.joblib")
        register_model(settings, work / f"m{seed}.joblib", name="m")
    with connect(prepare(settings)) as conn, conn.transaction():
        set_alias(conn, "m", "challenger", 2)
    base = make_rows(entities, seed=1)
    rng = np.random.default_rng(2)
    for day in range(days):
        frame = base.copy()
        frame[FEATURES] += rng.normal(scale=0.1, size=(entities, len(FEATURES)))
        path = work / f"day{day}.parquet"
        frame.to_parquet(path, index=False)
        score_partition(settings, ScoreRequest(path=path, model_name="m", entity_col="entity_id",
                                               partition_key=f"day{day}"))
    labels = work / "labels.parquet"
    pd.DataFrame({"entity_id": base["entity_id"], "y": target(base)}).to_parquet(labels, index=False)
    from monitor.labels import ingest_labels

    ingest_labels(settings, labels, model_name="m", entity_col="entity_id", label_col="y")
    return settings


def row_level(settings: Settings) -> float:
    """Seconds the row-level comparison query takes over every paired run (capped at 10 minutes)."""
    started = time.perf_counter()
    with connect(prepare(settings), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '600s'")
        pairs = conn.execute("""SELECT c.run_id, h.run_id FROM runs h
                                JOIN runs c ON c.run_id = (h.details->'paired_runs'->>'current')::bigint
                                WHERE h.role = 'challenger'""").fetchall()
        try:
            for current, challenger in pairs:
                conn.execute(ROW_LEVEL_QUERY, {"model": "m", "current": current, "challenger": challenger}).fetchall()
        except psycopg.errors.QueryCanceled:
            return float("inf")
    return time.perf_counter() - started


def speed(work: Path, *, entities: int, days: int, baseline: bool) -> None:
    started = time.perf_counter()
    settings = build_store(work / f"store-{entities}", entities=entities, days=days)
    built = time.perf_counter() - started
    timings = []
    for _ in range(2):
        t = time.perf_counter()
        comparison = compare_models(settings, "m")
        timings.append(time.perf_counter() - t)
    ours = min(timings)
    line = (f"speed: {comparison.rows:,} paired rows ({entities:,} entities x {days} days, store built in "
            f"{built:.0f}s): compare_models {ours:.2f}s ({comparison.verdict}, {comparison.evidence()})")
    if baseline:
        old = row_level(settings)
        line += f"; row-level query with a per-row label subquery {old:.2f}s; ratio {old / ours:.1f}x"
    print(line, flush=True)
    stop_embedded(settings.pgdata)


# --- 2 and 3. statistics ---------------------------------------------------------------------------


def equal_models(rng: np.random.Generator, entities: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-level log losses of two equally good models on ``entities`` x ``repeats`` rows, and
    each row's entity. Each model has its own persistent error per entity (the part of its fit
    that entity's outcome depends on); the daily features move a little."""
    x = rng.normal(size=entities)
    y = rng.random(entities) < 1 / (1 + np.exp(-1.5 * x))
    errors = rng.normal(scale=0.7, size=(2, entities))
    entity = np.repeat(np.arange(entities), repeats)
    daily = x[entity] + rng.normal(scale=0.1, size=len(entity))
    actual = np.where(y[entity], "1", "0").tolist()
    losses = []
    for error in errors:
        p = 1 / (1 + np.exp(-(1.5 * daily + error[entity])))
        losses.append(row_losses("classification", p.tolist(), [None] * len(p), actual, [None] * len(p), CLASSES))
    return losses[1] - losses[0], entity


def coverage(sims: int, *, entities: int = 500, repeats: int = 7, confidence: float = 0.95) -> None:
    rng = np.random.default_rng(7)
    by_entity = by_row = anytime = 0
    for _ in range(sims):
        diff, entity = equal_models(rng, entities, repeats)
        per_entity = entity_means(entity, diff)
        fixed, seq, rows = (t_interval(per_entity, confidence), confidence_sequence(per_entity, confidence),
                            t_interval(diff, confidence))
        assert fixed is not None and seq is not None and rows is not None
        by_entity += fixed.low <= 0 <= fixed.high
        anytime += seq.low <= 0 <= seq.high
        by_row += rows.low <= 0 <= rows.high
    se = np.sqrt(0.95 * 0.05 / sims)
    print(f"coverage of the 95% interval, equal models, {entities} entities x {repeats} runs, {sims} simulations: "
          f"entity-level {by_entity / sims:.1%} (target 95% +/- 2%; simulation s.e. {se:.1%}), "
          f"anytime {anytime / sims:.1%}; baseline row-level {by_row / sims:.1%}; "
          f"miss rate row-level / entity-level {(1 - by_row / sims) / max(1 - by_entity / sims, 1e-9):.1f}x",
          flush=True)


def peeking(sims: int, *, entities: int = 2000, repeats: int = 7, looks: int = 20, min_labels: int = 100,
            confidence: float = 0.95) -> None:
    rng = np.random.default_rng(11)
    anytime = naive = 0
    for _ in range(sims):
        diff, entity = equal_models(rng, entities, repeats)
        per_entity = entity_means(entity, diff)[rng.permutation(entities)]  # labels arrive in random order
        promoted = {"anytime": False, "naive": False}
        for look in range(1, looks + 1):
            seen = per_entity[: entities * look // looks]
            for name, interval in (("anytime", confidence_sequence(seen, confidence)),
                                   ("naive", t_interval(seen, confidence))):
                verdict = decide(interval, labeled=len(seen), min_labels=min_labels)
                promoted[name] |= verdict is Verdict.BETTER
        anytime += promoted["anytime"]
        naive += promoted["naive"]
    print(f"false promotion, equal models, --if-better asked after each of {looks} ingests, {sims} simulations: "
          f"anytime {anytime / sims:.2%} (target <= 2.5%); baseline fixed 95% interval {naive / sims:.2%}; "
          f"ratio {naive / max(anytime, 1):.1f}x (anytime counted as at least 1)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=143_000, help="entities in the large store")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--skip-store", action="store_true", help="only the simulations")
    args = parser.parse_args()
    coverage(args.sims)
    peeking(args.sims)
    if args.skip_store:
        return
    work = Path(tempfile.mkdtemp(prefix="predstore-compare-"))
    speed(work, entities=30_000 // args.days, days=args.days, baseline=True)
    speed(work, entities=args.entities, days=args.days, baseline=False)


if __name__ == "__main__":
    main()
