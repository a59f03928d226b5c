"""Benchmark of the scoring job: end-to-end rate against baselines measured in the same run.

    python benchmarks/bench_score.py [--rows 1000000] [--skip-rss]

Prints, for HistGradientBoostingClassifier(max_iter=100) and LogisticRegression on 1M rows x 20
numeric features (Parquet in, published predictions out):
  - end-to-end rows/s of `score_partition` (what `predstore score` runs), index build and publish included;
  - predict-only: the model alone on an in-memory array (all cores);
  - COPY-only: binary COPY of the same ids and scores into an unindexed table;
  - naive: pandas read, predict, DataFrame.to_sql (on a slice; it is ~100x slower);
  - the write floor: COPY of the run's own columns into a fresh table plus its unique index, the
    store's share alone, which bounds what end-to-end / COPY-only can reach;
and peak RSS of `predstore score` (a fresh process) on 10M rows against 1M rows.
Ratios are what count: the machine is shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from pgpq import ArrowToPostgresBinaryEncoder
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from store import Settings
from store.db import stop_embedded
from store.migrate import prepare, sqlalchemy_url

FEATURES = [f"f{i}" for i in range(20)]
ROW_GROUP = 131_072


def make_rows(n: int, seed: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    frame.insert(0, "entity_id", [f"c{i:09d}" for i in range(start, start + n)])
    return frame


def target(frame: pd.DataFrame) -> np.ndarray:
    logit = frame[FEATURES[:5]].sum(axis=1) - frame["f5"] * frame["f6"]
    return (logit + np.random.default_rng(1).normal(size=len(frame)) > 0).astype(int).to_numpy()


def write_partition(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    """Write ``rows`` rows in chunks, so a 10M-row file never sits in memory here."""
    writer = None
    for start in range(0, rows, chunk):
        table = pa.Table.from_pandas(make_rows(min(chunk, rows - start), seed=start, start=start),
                                     preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    assert writer is not None
    writer.close()


def best(fn, repeat: int = 2) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def copy_only(url: str, ids: list[str], scores: list[float]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute('CREATE TABLE bench_copy (entity_id text COLLATE "C", prediction float8)')

        def run() -> None:
            conn.execute("TRUNCATE bench_copy")
            with conn.cursor().copy("COPY bench_copy (entity_id, prediction) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "float8"])
                for row in zip(ids, scores, strict=True):
                    copy.write_row(row)

        seconds = best(run)
        conn.execute("DROP TABLE bench_copy")
    return seconds


def write_floor(url: str, ids: list[str], scores: list[float], labels: list[str]) -> float:
    """The store's share alone: binary COPY (from Arrow, as the job does) of the columns a binary
    classifier's run writes, into a fresh table, then its unique index: no run can be faster."""
    n = len(ids)
    batch = pa.record_batch([pa.array(ids), pa.array(np.arange(1, n + 1)), pa.array(scores), pa.array(labels)],
                            names=["entity_id", "row_number", "prediction", "label"])
    with psycopg.connect(url) as conn:

        def run() -> None:
            conn.execute("DROP TABLE IF EXISTS bench_floor")
            conn.execute('CREATE TABLE bench_floor (run_id int8 DEFAULT 1, entity_id text COLLATE "C", '
                         "row_number int8, prediction float8, label text)")
            encoder = ArrowToPostgresBinaryEncoder(batch.schema)
            copy_sql = "COPY bench_floor (entity_id, row_number, prediction, label) FROM STDIN (FORMAT BINARY, FREEZE)"
            with conn.cursor().copy(copy_sql) as copy:
                copy.write(encoder.write_header())
                for part in pa.Table.from_batches([batch]).to_batches(ROW_GROUP):
                    copy.write(encoder.write_batch(part))
                copy.write(encoder.finish())
            conn.execute("CREATE UNIQUE INDEX ON bench_floor (entity_id)")
            conn.commit()

        seconds = best(run)
        conn.execute("DROP TABLE bench_floor")
        conn.commit()
    return seconds


def naive(url: str, path: Path, model: object, rows: int) -> float:
    engine = create_engine(sqlalchemy_url(url))
    data = pd.read_parquet(path).head(rows)

    def run() -> None:
        frame = pd.read_parquet(path).head(rows)
        out = pd.DataFrame({"entity_id": frame["entity_id"],
                            "prediction": model.predict_proba(frame[FEATURES])[:, 1]})  # type: ignore[attr-defined]
        out.to_sql("bench_naive", engine, if_exists="replace", index=False)

    seconds = best(run, repeat=1)
    engine.dispose()
    assert len(data) == rows
    return seconds


def rss_of_cli(home: Path, url: str, path: Path, model: str) -> int:
    env = {**os.environ, "PREDSTORE_HOME": str(home), "PREDSTORE_DATABASE_URL": url}
    out = subprocess.run([sys.executable, "-m", "store", "score", str(path), "--model", model, "--json", "--force"],
                         env=env, capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=None, help="rows for the naive path (default: all)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 10M-row memory run")
    args = parser.parse_args()
    args.naive_rows = args.naive_rows or args.rows

    work = Path(tempfile.mkdtemp(prefix="predstore-bench-"))
    settings = Settings(home=work / "home", database_url=os.environ.get("PREDSTORE_DATABASE_URL") or None)
    url = prepare(settings)
    path = work / "partition.parquet"
    write_partition(path, args.rows)
    train = make_rows(200_000, seed=99)
    models = {
        "hgb": HistGradientBoostingClassifier(max_iter=100, random_state=0),
        "lr": LogisticRegression(max_iter=200),
    }
    table = pd.read_parquet(path)
    x = table[FEATURES].to_numpy()
    ids = table["entity_id"].tolist()
    del table
    print(f"rows={args.rows:,} features={len(FEATURES)} cores={os.cpu_count()}")
    results = {}
    for name, model in models.items():
        model.fit(train[FEATURES], target(train))
        artifact = work / f"{name}.joblib"
        joblib.dump(model, artifact)
        register_model(settings, artifact, name=name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fitted with column names, asked on a bare array
            predict_s = best(lambda m=model: m.predict_proba(x))
            scores = model.predict_proba(x)[:, 1].tolist()
        copy_s = copy_only(url, ids, scores)
        labels = [str(c) for c in model.classes_[(np.asarray(scores) > 0.5).astype(int)]]
        floor_s = write_floor(url, ids, scores, labels)
        request = ScoreRequest(path=path, model_name=name, force=True)
        score_partition(settings, request)  # warm the page cache and the model load
        e2e_s = best(lambda r=request: score_partition(settings, r))
        naive_s = naive(url, path, model, args.naive_rows)
        n = args.rows
        rates = {"e2e": n / e2e_s, "predict_only": n / predict_s, "copy_only": n / copy_s,
                 "naive": args.naive_rows / naive_s, "write_floor": n / floor_s}
        results[name] = rates
        print(f"\n[{name}] rows/s: end-to-end {rates['e2e']:,.0f} | predict-only {rates['predict_only']:,.0f} | "
              f"COPY-only {rates['copy_only']:,.0f} | naive {rates['naive']:,.0f}")
        print(f"[{name}] end-to-end / predict-only = {rates['e2e'] / rates['predict_only']:.2f}")
        print(f"[{name}] end-to-end / COPY-only    = {rates['e2e'] / rates['copy_only']:.2f} "
              f"(the ceiling: COPY of the run's 4 columns + unique index alone = "
              f"{rates['write_floor'] / rates['copy_only']:.2f})")
        print(f"[{name}] end-to-end / naive        = {rates['e2e'] / rates['naive']:.0f}x "
              f"(the ceiling: predict-only / naive = {rates['predict_only'] / rates['naive']:.0f}x)")

    print("\ntargets: hgb e2e/predict >= 0.6, lr e2e/COPY >= 0.4, both >= 50x naive")
    print(f"  hgb e2e/predict-only {results['hgb']['e2e'] / results['hgb']['predict_only']:.2f}  "
          f"lr e2e/COPY-only {results['lr']['e2e'] / results['lr']['copy_only']:.2f}  "
          f"naive x{results['hgb']['e2e'] / results['hgb']['naive']:.0f} / "
          f"x{results['lr']['e2e'] / results['lr']['naive']:.0f}")

    if not args.skip_rss:
        big = work / "partition-10x.parquet"
        write_partition(big, args.rows * 10)
        small_rss = rss_of_cli(settings.home, url, path, "lr")
        big_rss = rss_of_cli(settings.home, url, big, "lr")
        print(f"\npeak RSS of `predstore score`: {args.rows:,} rows {small_rss / 2**20:,.0f} MiB, "
              f"{args.rows * 10:,} rows {big_rss / 2**20:,.0f} MiB, ratio {big_rss / small_rss:.2f} (target <= 1.5)")

    if not settings.database_url:
        stop_embedded(settings.pgdata)


if __name__ == "__main__":
    main()
