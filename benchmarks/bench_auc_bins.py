"""Benchmark of ROC AUC from binned scores (the realized-performance tallies): not a test, a script.

    python benchmarks/bench_auc_bins.py [--simulations 200] [--rows 20000]

Realized performance adds labels up in tallies (`monitor.tallies`), so ROC AUC is read from
per-class histograms of the scores (`BINS` equal-width bins; ties within a bin count half), not
from the scores themselves. This measures, by simulation, how far the binned figure falls from
the exact one (scikit-learn's ``roc_auc_score`` on the same rows) at several bin counts, on scores
of three shapes: well spread (beta), piled up near 0 (a rare event: equal-width bins hold most
rows in the first few), and concentrated in a narrow band (a poorly separating model). It prints,
per bin count, the largest and the 99th-percentile absolute error over the simulations, and what
a tally costs: its size in bytes per class and the time to tally the rows, as ratios to the 200
bins predstore uses.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from monitor.tallies import _auc

SHAPES = ("spread", "low", "narrow")
BIN_COUNTS = (50, 200, 1000, 5000)


def scores(shape: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of the positive class, for one simulated window."""
    y = rng.random(n) < 0.3
    if shape == "spread":
        p = np.where(y, rng.beta(4, 2, n), rng.beta(2, 4, n))
    elif shape == "low":
        p = np.where(y, rng.beta(0.8, 40, n), rng.beta(0.5, 40, n))
    else:
        p = np.clip(np.where(y, rng.normal(0.52, 0.02, n), rng.normal(0.50, 0.02, n)), 0, 1)
    return y, p


def binned(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    positive = np.bincount(index[y], minlength=bins).astype(np.float64)
    negative = np.bincount(index[~y], minlength=bins).astype(np.float64)
    return _auc(positive, negative)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    errors = {(shape, bins): [] for shape in SHAPES for bins in BIN_COUNTS}
    seconds = dict.fromkeys(BIN_COUNTS, 0.0)
    for _ in range(args.simulations):
        for shape in SHAPES:
            y, p = scores(shape, args.rows, rng)
            exact = roc_auc_score(y, p)
            for bins in BIN_COUNTS:
                started = time.perf_counter()
                value = binned(y, p, bins)
                seconds[bins] += time.perf_counter() - started
                errors[(shape, bins)].append(abs(value - exact))
    print(f"{args.simulations} simulated windows of {args.rows:,} rows per shape; error = |binned - exact| ROC AUC")
    print(f"{'bins':>6} {'shape':>10} {'max error':>10} {'p99 error':>10} {'tally bytes':>12} {'size/200':>9} "
          f"{'time/200':>9}")
    for bins in BIN_COUNTS:
        for shape in SHAPES:
            found = np.asarray(errors[(shape, bins)])
            print(f"{bins:>6} {shape:>10} {found.max():>10.5f} {np.quantile(found, 0.99):>10.5f} "
                  f"{2 * bins * 8:>12,} {bins / 200:>9.2f} {seconds[bins] / seconds[200]:>9.2f}")


if __name__ == "__main__":
    main()
