"""Benchmark of champion and challenger: one pass that scores a partition with both
against two separate runs of the same partition, measured in the same run.

    python benchmarks/bench_challenger.py [--rows 1000000]

Both models are HistGradientBoostingClassifier(max_iter=100) (the challenger with another seed and
more trees' depth); the one-pass run reads and validates the partition once for both.
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_score import FEATURES, make_rows, target, write_partition  # noqa: E402

from batch.runner import ScoreRequest, score_partition  # noqa: E402
from models.register import register_model  # noqa: E402
from store import Settings  # noqa: E402
from store.db import connect, stop_embedded  # noqa: E402
from store.migrate import prepare  # noqa: E402
from store.registry import set_alias  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predstore-challenger-"))
    settings = Settings(home=work / "home")
    url = prepare(settings)
    path = work / "partition.parquet"
    write_partition(path, args.rows)
    train = make_rows(200_000, seed=99)
    for seed, depth in ((0, None), (1, 8)):
        model = HistGradientBoostingClassifier(max_iter=100, random_state=seed, max_depth=depth)
        model.fit(train[FEATURES], target(train))
        joblib.dump(model, work / f"m{seed}.joblib")
        register_model(settings, work / f"m{seed}.joblib", name="m")
    with connect(url) as conn, conn.transaction():
        set_alias(conn, "m", "challenger", 2)
    score_partition(settings, ScoreRequest(path=path, model_name="m"))  # warm the page cache and models
    together, apart = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        score_partition(settings, ScoreRequest(path=path, model_name="m", force=True))
        together.append(time.perf_counter() - t)
        t = time.perf_counter()
        score_partition(settings, ScoreRequest(path=path, model_name="m", version=1, force=True))
        score_partition(settings, ScoreRequest(path=path, model_name="m", version=2, force=True))
        apart.append(time.perf_counter() - t)
    one, two = statistics.median(together), statistics.median(apart)
    print(f"rows={args.rows:,}: champion+challenger in one pass {one:.2f}s, two separate runs {two:.2f}s "
          f"(median of {args.repeat}); one pass / two runs = {one / two:.2f}")
    stop_embedded(settings.pgdata)


if __name__ == "__main__":
    main()
