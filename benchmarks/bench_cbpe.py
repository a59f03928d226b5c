"""Benchmark of expected accuracy before labels (CBPE) on miscalibrated classifiers: estimated
against realized accuracy over 20 batches, calibrated (`models.calibration`, what the monitor
uses for a version registered with --validation-data) against the same formula on raw
probabilities (the baseline), in the same run.

    python benchmarks/bench_cbpe.py [--batches 20 --rows 2000 --repeats 5]

Data: six strongly correlated features (naive Bayes counts their evidence several times over, so
its probabilities are far too sure) and a logistic outcome; each batch moves the features' means
a little further (covariate shift, the case CBPE is for), so accuracy changes from batch to batch.
Models: GaussianNB, and a HistGradientBoostingClassifier fitted with many deep iterations on
little data (over-confident). Calibration is fitted on 5,000 held-out validation rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.naive_bayes import GaussianNB

sys.path.insert(0, str(Path(__file__).parent.parent))
from models import calibration  # noqa: E402

FEATURES = 6


def sample(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    cov = np.full((FEATURES, FEATURES), 0.8) + 0.2 * np.eye(FEATURES)
    x = rng.multivariate_normal(np.full(FEATURES, shift), cov, size=n)
    logit = 1.2 * x[:, 0] - 0.8 * x[:, 1] + 0.6 * x[:, 2] * x[:, 3] - 0.5 * shift
    return x, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


def run(name: str, model: object, *, batches: int, rows: int, repeats: int) -> None:
    errors: dict[str, list[float]] = {"calibrated": [], "raw": []}
    covered = {"calibrated": 0, "raw": 0}
    for repeat in range(repeats):
        rng = np.random.default_rng(repeat)
        x, y = sample(rng, 3000, 0.0)
        fitted = model.fit(x, y)  # type: ignore[attr-defined]
        xv, yv = sample(rng, 5000, 0.0)
        calib = calibration.fit(fitted.predict_proba(xv), yv, task="classification")
        for batch in range(batches):
            xb, yb = sample(rng, rows, 0.6 * batch / batches)
            proba = fitted.predict_proba(xb)
            realized = float((proba.argmax(axis=1) == yb).mean())
            for kind, calib_or_none in (("calibrated", calib), ("raw", None)):
                value, low, high = calibration.expected_accuracy(calib_or_none, proba)
                errors[kind].append(abs(value - realized))
                covered[kind] += low <= realized <= high
    total = batches * repeats
    mae = {k: float(np.mean(v)) for k, v in errors.items()}
    print(f"{name}: {batches} batches x {repeats} repeats of {rows} rows: mean |estimated - realized accuracy| "
          f"calibrated {mae['calibrated']:.4f} (target <= 0.02), raw {mae['raw']:.4f}; ratio raw / calibrated "
          f"{mae['raw'] / mae['calibrated']:.1f}x; band covers the realized value in "
          f"{covered['calibrated'] / total:.0%} of batches (target >= 90%; raw {covered['raw'] / total:.0%})",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    kwargs = {"batches": args.batches, "rows": args.rows, "repeats": args.repeats}
    run("GaussianNB", GaussianNB(), **kwargs)
    run("over-confident HistGradientBoosting", HistGradientBoostingClassifier(
        max_iter=300, max_depth=None, min_samples_leaf=2, learning_rate=0.3, early_stopping=False), **kwargs)


if __name__ == "__main__":
    main()
