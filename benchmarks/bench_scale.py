"""Benchmark of scale-out scoring: 1 worker, 2 local worker processes, a 2-worker Dask
LocalCluster, on the 1M-row partition of bench_score.py, with HistGradientBoostingClassifier.

    python benchmarks/bench_scale.py [--rows 1000000] [--model hgb|lr]

Prints each executor's end-to-end rows/s (median of 2) and its ratio to 1 worker. On 2 cores
expect well under 2x: PostgreSQL, the reader and the model share them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import joblib
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
from bench_score import FEATURES, make_rows, target, write_partition  # noqa: E402

from batch.executors import ExecutorSpec  # noqa: E402
from batch.runner import ScoreRequest, score_partition  # noqa: E402
from models.register import register_model  # noqa: E402
from store import Settings  # noqa: E402
from store.db import stop_embedded  # noqa: E402
from store.migrate import prepare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--model", choices=("hgb", "lr"), default="hgb")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predstore-scale-"))
    settings = Settings(home=work / "home")
    prepare(settings)
    path = work / "partition.parquet"
    write_partition(path, args.rows)
    train = make_rows(200_000, seed=99)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0) if args.model == "hgb" \
        else LogisticRegression(max_iter=200)
    model.fit(train[FEATURES], target(train))
    joblib.dump(model, work / "model.joblib")
    register_model(settings, work / "model.joblib", name="m")
    executors = {
        "local, 1 worker": ExecutorSpec(),
        "local, 2 workers": ExecutorSpec(kind="local", workers=2),
        "dask LocalCluster, 2 workers": ExecutorSpec(kind="dask", workers=2, dask_address="local"),
    }
    score_partition(settings, ScoreRequest(path=path, model_name="m"))  # warm the page cache
    rates = {}
    for name, spec in executors.items():
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            score_partition(settings, ScoreRequest(path=path, model_name="m", force=True, executor=spec))
            times.append(time.perf_counter() - t)
        rates[name] = args.rows / statistics.median(times)
    base = rates["local, 1 worker"]
    print(f"rows={args.rows:,} model={args.model}")
    for name, rate in rates.items():
        print(f"  {name:<30} {rate:>10,.0f} rows/s   x{rate / base:.2f} of 1 worker")
    stop_embedded(settings.pgdata)


if __name__ == "__main__":
    main()
