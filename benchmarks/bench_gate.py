"""Simulation of the publish gate (batch/gate.py): how often it holds a quiet batch, and how often
it catches breakage. A script, not a test.

    python benchmarks/bench_gate.py [--simulations 2000] [--rows 1000] [--features 10]

Each simulation draws an accepted batch and a new batch of ``--rows`` rows from the same
distribution (numeric features, some skewed, one categorical, a few nulls), profiles both in the
bins of a training baseline as the scoring job does (`models.profile`), and asks the gate. Then it
breaks the new batch three ways and asks again: one feature in seconds instead of minutes (x60),
one feature's values all null, half the rows lost (the row count against the partition's previous
run). In the same run, the rules users would otherwise write are judged on the same batches: a
PSI above 0.2 on any feature against the accepted batch (the usual rule of thumb), and a mean
outside three standard errors (a Great Expectations-style expectation on each column's mean).

Targets: quiet batches held at most at the gate's alpha (0.01); a unit change of one feature in a
1,000-row batch held (power >= 0.99).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from batch import gate  # noqa: E402
from models import profile
from models.predict import Scores  # noqa: E402
from store.features import FeatureSchema


def draw(rng: np.random.Generator, rows: int, features: int) -> pd.DataFrame:
    """A batch: numeric features (normal and log-normal, 1% nulls) and a category."""
    data = {}
    for j in range(features):
        values = rng.normal(10 + j, 2 + j % 3, rows) if j % 2 == 0 else rng.lognormal(1.0, 0.5, rows) * 30
        values[rng.random(rows) < 0.01] = np.nan
        data[f"f{j}"] = values
    data["plan"] = rng.choice(["basic", "plus", "pro"], rows, p=[0.6, 0.3, 0.1])
    return pd.DataFrame(data)


def profiled(frame: pd.DataFrame, base: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return profile.profile_features(frame, base, {"plan": ["basic", "plus", "pro"]})


def psi_rule(previous: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> bool:
    """PSI > 0.2 on any column, empty bins floored at 1e-4."""
    for name, column in new.items():
        p = np.asarray(previous[name]["counts"], dtype=float)
        q = np.asarray(column["counts"], dtype=float)
        p, q = p / max(p.sum(), 1), q / max(q.sum(), 1)
        p, q = np.where(p == 0, 1e-4, p), np.where(q == 0, 1e-4, q)
        if float(np.sum((q - p) * np.log(q / p))) > 0.2:
            return True
    return False


def mean_rule(previous: pd.DataFrame, new: pd.DataFrame) -> bool:
    """A numeric column's mean outside three standard errors of the accepted batch's."""
    for name in previous.columns:
        if previous[name].dtype.kind != "f":
            continue
        a, b = previous[name].dropna(), new[name].dropna()
        if len(b) == 0:
            return True
        if abs(b.mean() - a.mean()) > 3 * a.std() / math.sqrt(len(b)):
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--features", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    training = draw(rng, 20_000, args.features)
    schema = FeatureSchema.from_json(
        {"columns": [{"name": c, "kind": "categorical" if c == "plan" else "numeric"} for c in training.columns]})
    base = [c for c in profile.baseline(training, schema, Scores(prediction=np.zeros(len(training))))
            if c["role"] == "feature"]
    policy = gate.GatePolicy()
    names = ("quiet", "unit x60", "all null", "half the rows")
    held = {name: {"gate": 0, "psi > 0.2": 0, "mean 3 se": 0} for name in names}
    started = time.perf_counter()
    for _ in range(args.simulations):
        accepted, new = draw(rng, args.rows, args.features), draw(rng, args.rows, args.features)
        unit, nulls = new.copy(), new.copy()
        unit["f1"] = unit["f1"] * 60
        nulls["f2"] = np.nan
        half = new.iloc[: args.rows // 2]
        before = profiled(accepted, base)
        for name, batch in zip(names, (new, unit, nulls, half), strict=True):
            found = gate.judge(before, profiled(batch, base), rows=len(batch), previous_rows=len(accepted),
                               policy=policy)
            held[name]["gate"] += bool(found)
            held[name]["psi > 0.2"] += psi_rule(before, profiled(batch, base))
            held[name]["mean 3 se"] += mean_rule(accepted, batch)
    elapsed = time.perf_counter() - started
    n = args.simulations
    print(f"{n} simulations of {args.rows:,}-row batches, {args.features} numeric features and a category; "
          f"alpha {policy.alpha}, min effect w {policy.min_effect}; {elapsed:.1f} s")
    print(f"{'batch':<16}{'gate':>10}{'psi > 0.2':>12}{'mean 3 se':>12}   (share held)")
    for name in names:
        row = held[name]
        print(f"{name:<16}{row['gate'] / n:>10.4f}{row['psi > 0.2'] / n:>12.4f}{row['mean 3 se'] / n:>12.4f}")
    quiet, power = held["quiet"]["gate"] / n, held["unit x60"]["gate"] / n
    # A binomial upper bound: the false holds may exceed alpha by sampling noise alone.
    bound = policy.alpha + 3 * math.sqrt(policy.alpha * (1 - policy.alpha) / n)
    print(f"targets: quiet held {quiet:.4f} <= alpha {policy.alpha} (+3 se: {bound:.4f}) "
          f"{'ok' if quiet <= bound else 'MISSED'}; unit change held {power:.4f} >= 0.99 "
          f"{'ok' if power >= 0.99 else 'MISSED'}")


if __name__ == "__main__":
    main()
