"""Start-up of the `predstore` command: how long a user waits before anything happens.

    python benchmarks/bench_cli.py [--repeat 9] [--rows 2000000] [--score-repeat 3]

Every figure is the median wall time of fresh processes, printed beside `python -c pass` (the
interpreter's own start-up, measured in the same run, interleaved with the others, so a busy
machine slows both):
  - `predstore --help` and `predstore score --help` (target: 0.3 s);
  - `predstore runs list`, the embedded server already running, 5 runs in the ledger (target: 0.6 s);
  - `predstore score` start-up: from exec to its first batch written, seen as the first progress
    line it logs when stderr is not a terminal, on rows x 20 features in Parquet (target: 1 s);
and, as the floor under the last one, a process that only imports what scoring a .skops model needs.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

FEATURES = [f"f{i}" for i in range(20)]
#: What scoring a .skops model cannot do without: skops.io imports every scikit-learn estimator (to
#: list the types it trusts), the model's input is a DataFrame, the partition is read with pyarrow.
FLOOR = "import skops.io, pandas, pyarrow"
FIRST_BATCH = re.compile(r"predstore\.score: .*: [\d,]+ of ")


def predstore() -> list[str]:
    """The console script beside this interpreter (what a user runs), else `python -m predstore`."""
    script = Path(sys.executable).with_name("predstore")
    return [str(script)] if script.exists() else [sys.executable, "-m", "store"]


def wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def to_first_batch(command: list[str], env: dict[str, str]) -> float:
    """Seconds from exec to the first progress line of `predstore score`; the run is left to finish."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = None
    for line in proc.stderr:
        if seen is None and FIRST_BATCH.search(line):
            seen = time.perf_counter() - started
    if proc.wait() != 0 or seen is None:
        raise SystemExit(f"predstore score failed or logged no batch (exit {proc.returncode})")
    return seen


def make_store(home: Path, env: dict[str, str], rows: int) -> Path:
    """A model registered in a fresh embedded store, 5 small runs in its ledger, and a partition."""
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(20_000, len(FEATURES))), columns=FEATURES)
    train["y"] = (train[FEATURES[:5]].sum(axis=1) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(train[FEATURES], train["y"])
    skops.io.dump(model, home / "model.skops")
    train.to_parquet(home / "train.parquet")
    cli = predstore()
    subprocess.run([*cli, "models", "register", str(home / "model.skops"), "--name", "churn", "--entity-col",
                    "entity_id", "--train-data", str(home / "train.parquet"), "--target", "y"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    small = pd.DataFrame(rng.normal(size=(1_000, len(FEATURES))), columns=FEATURES)
    small.insert(0, "entity_id", [f"c{i}" for i in range(len(small))])
    for day in range(5):
        path = home / f"dt=2026-10-{day + 1:02d}.parquet"
        small.to_parquet(path)
        subprocess.run([*cli, "score", str(path), "--model", "churn"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    frame.insert(0, "entity_id", [f"c{i:09d}" for i in range(rows)])
    partition = home / "dt=2026-11-26.parquet"
    frame.to_parquet(partition, row_group_size=131_072)
    return partition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9, help="Processes per quick command.")
    parser.add_argument("--rows", type=int, default=2_000_000, help="Rows of the partition `score` starts on.")
    parser.add_argument("--score-repeat", type=int, default=3, help="Runs of `predstore score`.")
    args = parser.parse_args()

    cli = predstore()
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
        env["PREDSTORE_HOME"] = str(home / "store")
        try:
            partition = make_store(home, env, args.rows)
            commands: dict[str, Callable[[], float]] = {
                "python -c pass": lambda: wall([sys.executable, "-c", "pass"], env),
                "predstore --help": lambda: wall([*cli, "--help"], env),
                "predstore score --help": lambda: wall([*cli, "score", "--help"], env),
                "predstore runs list": lambda: wall([*cli, "runs", "list"], env),
                FLOOR: lambda: wall([sys.executable, "-c", "import skops.io, pandas, pyarrow.parquet"], env),
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.repeat):
                for name, measure in commands.items():
                    times[name].append(measure())
            score = [*cli, "score", str(partition), "--model", "churn", "--force"]
            times["predstore score: first batch"] = []
            for _ in range(args.score_repeat):
                times["predstore score: first batch"].append(to_first_batch(score, env))
                times["python -c pass"].append(wall([sys.executable, "-c", "pass"], env))
        finally:
            subprocess.run([*cli, "db", "stop"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    targets = {"predstore --help": 0.3, "predstore score --help": 0.3, "predstore runs list": 0.6,
               "predstore score: first batch": 1.0}
    baseline = statistics.median(times["python -c pass"])
    print(f"{args.repeat} runs of each quick command, {args.score_repeat} of score on {args.rows:,} rows x "
          f"{len(FEATURES)} features; medians, cores: {os.cpu_count()}")
    print(f"{'command':<30} {'median s':>9} {'min s':>7} {'x python -c pass':>17} {'target s':>9}")
    for name, values in times.items():
        target = targets.get(name)
        print(f"{name:<30} {statistics.median(values):>9.3f} {min(values):>7.3f} "
              f"{statistics.median(values) / baseline:>17.1f} {target if target else '':>9}")
    print(f"beyond the interpreter's own start-up (median minus python -c pass's {baseline:.3f} s):")
    for name in targets:
        print(f"  {name:<28} {statistics.median(times[name]) - baseline:.3f} s")


if __name__ == "__main__":
    main()
